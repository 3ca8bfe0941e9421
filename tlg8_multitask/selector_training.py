"""Training the pair selector (tlg8.selector.PairSelector) from images.

Labels come from the exact cost model: for sampled full blocks, the bits of every option
of the K candidate pairs (`image_examples`). The pair ranker learns a listwise softmax
against each pair's best bits, the scan model a softmax over the 16 options of the
ranker's first pairs (`train`). CLI: train_multitask.py --selector IMAGES.
"""
import hashlib
import os
import time

import numpy as np

from tlg8 import Tlg8Error, cost
from tlg8 import features as feat
from tlg8.fileio import write_file
from tlg8.image import block_grid, block_workspaces, read_image
from tlg8.mlp import forward
from tlg8.selector import DEFAULTS, PairSelector
from tlg8.trials import N_OPTIONS, config_of

from .nn import bits_targets, fit_mlp



class SelectorTrainingError(Tlg8Error):
    """An image cannot be trained on (no full block)."""


SCAN_TRAIN_PAIRS = 4      # scan-model rows per block: the ranker's first pairs
RANKER_TEMPERATURE = 3.0  # bits; soft targets of the pair ranker
SCAN_TEMPERATURE = 2.0    # bits; soft targets of the scan model
LABEL_CHUNK = 256         # blocks per labelling pass (x 512 trials each)
# The one set of training defaults (the CLI's too).
TRAIN_DEFAULTS = {"blocks_per_image": 8000, "ranker_hidden": 32, "scan_hidden": 64,
                  "ranker_epochs": 10, "scan_epochs": 15, "lr": 2e-3, "weight_decay": 1e-4}


def image_examples(path, blocks, candidates, seed, cache=None, log=None):
    """Training blocks of one image: (ws int32 (B, C, 9, 10), candidate pairs (B, K),
    bits uint16 (B, K, 16) of every candidate x option, better entropy).

    Up to `blocks` full 8x8 blocks drawn with `seed` (all of them when there are fewer).
    Labels cost ~5 us per configuration (512 per block); with `cache` (a directory) they
    are kept in an NPZ keyed by the image's path, size and mtime and the options.
    """
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{blocks}|"
                       f"{candidates}|{seed}|{feat.PAIR_FEATURE_LAYOUT}".encode()).hexdigest()
    cached = os.path.join(cache, f"selector-{key[:16]}.npz") if cache else None
    if cached and os.path.exists(cached):
        try:
            with np.load(cached) as z:
                return z["ws"].astype(np.int32), z["cand"], z["bits"]
        except (OSError, ValueError, KeyError, EOFError) as e:
            # A corrupt entry (an interrupted run, a full disk): said once, then rebuilt.
            if log:
                log(f"warning: {cached}: unreadable cache entry ({e}); rebuilding it")
    samples, _ = read_image(path)
    grid = block_grid(samples.shape[1], samples.shape[0])
    full = np.flatnonzero((grid[:, 4] == 8) & (grid[:, 5] == 8))
    if not len(full):
        raise SelectorTrainingError(f"{path}: no full 8x8 block to train on")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(full)[:blocks])
    ws = block_workspaces(samples, grid[pick])
    planes, sad, _ = feat.block_stats(ws)
    cand = feat.top_pairs(feat.pair_proxy(sad, ws.shape[1]), candidates)
    residuals = feat.block_major(planes)
    bits = np.empty(cand.shape + (N_OPTIONS,), np.uint16)
    start = time.perf_counter()
    for lo in range(0, len(ws), LABEL_CHUNK):
        part = cand[lo:lo + LABEL_CHUNK]
        configs = config_of(np.repeat(part, N_OPTIONS, axis=1),
                            np.tile(np.arange(N_OPTIONS), part.shape[1]))
        b, _ = cost.block_configs_bits(residuals[lo:lo + len(part)], configs, 8, 8)
        bits[lo:lo + len(part)] = b.reshape(part.shape + (N_OPTIONS,))
    if log:
        log(f"{path}: {len(ws)} blocks x {candidates} pairs x 16 options labelled in "
            f"{time.perf_counter() - start:.0f} s")
    if cached:
        os.makedirs(cache, exist_ok=True)
        write_file(cached, "wb", lambda f: np.savez(f, ws=ws.astype(np.uint8), cand=cand,
                                                    bits=bits))
    return ws, cand, bits


def train(images, blocks_per_image=TRAIN_DEFAULTS["blocks_per_image"],
          candidates=DEFAULTS["candidates"], probe_pairs=DEFAULTS["probe_pairs"],
          probe_options=DEFAULTS["probe_options"], ranker_hidden=TRAIN_DEFAULTS["ranker_hidden"],
          scan_hidden=TRAIN_DEFAULTS["scan_hidden"], ranker_epochs=TRAIN_DEFAULTS["ranker_epochs"],
          scan_epochs=TRAIN_DEFAULTS["scan_epochs"], lr=TRAIN_DEFAULTS["lr"],
          weight_decay=TRAIN_DEFAULTS["weight_decay"], seed=0, cache=None, log=None, init=None,
          epoch_log=None):
    """A trained PairSelector from image paths (labels: image_examples).

    init: a PairSelector to fine-tune (its two MLPs and scalers are the starting point;
    its hidden sizes win over ranker_hidden / scan_hidden). epoch_log(name, epoch, loss)
    is called after each epoch of the "ranker" and the "scan" model."""
    parts = [image_examples(p, blocks_per_image, candidates, seed + i, cache, log)
             for i, p in enumerate(images)]
    pair_x, pair_t, residuals_all = [], [], []
    for ws, cand, bits in parts:
        planes, sad, nonzero = feat.block_stats(ws)
        pair_x.append(feat.pair_features(sad, nonzero, cand, 64))
        pair_t.append(bits_targets(bits.min(-1), RANKER_TEMPERATURE))
        residuals_all.append(feat.block_major(planes))
    if log:
        log(f"pair ranker: {sum(len(x) for x in pair_x)} blocks x {candidates} candidates")
    ranker, ranker_scaler = fit_mlp(
        np.concatenate(pair_x), np.concatenate(pair_t), ranker_hidden, ranker_epochs, lr,
        weight_decay, seed=seed, listwise=True,
        init=init and (init.ranker, init.ranker_scaler),
        progress=epoch_log and (lambda e, loss: epoch_log("ranker", e, loss)))
    scan_x, scan_t = [], []
    mean, std = ranker_scaler
    for (ws, cand, bits), x, residuals in zip(parts, pair_x, residuals_all):
        score = forward(ranker, (x - mean) / std)[0][..., 0]
        order = np.argsort(-score, axis=1, kind="stable")[:, :SCAN_TRAIN_PAIRS]
        top = np.take_along_axis(cand, order, 1)
        scan_x.append(feat.scan_features(feat.coded_pairs(residuals, top), 8, 8)
                      .reshape(-1, feat.N_SCAN_FEATURES))
        rows = np.arange(len(cand))[:, None]
        scan_t.append(bits_targets(bits[rows, order].reshape(-1, N_OPTIONS),
                                   SCAN_TEMPERATURE))
    if log:
        log(f"scan model: {sum(len(x) for x in scan_x)} pairs")
    scan, scan_scaler = fit_mlp(
        np.concatenate(scan_x), np.concatenate(scan_t), scan_hidden, scan_epochs, lr,
        weight_decay, batch=512, seed=seed, init=init and (init.scan, init.scan_scaler),
        progress=epoch_log and (lambda e, loss: epoch_log("scan", e, loss)))
    meta = {"images": [os.path.basename(p) for p in images],
            "blocks_per_image": blocks_per_image, "seed": seed, "lr": lr,
            "weight_decay": weight_decay, "ranker_hidden": ranker_hidden,
            "scan_hidden": scan_hidden, "ranker_epochs": ranker_epochs,
            "scan_epochs": scan_epochs}
    return PairSelector(ranker, ranker_scaler, scan, scan_scaler, candidates, probe_pairs,
                        probe_options, meta)
