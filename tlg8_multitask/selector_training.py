"""Training the pair selector (tlg8.selector.PairSelector) from images.

Labels come from the exact cost model: for sampled full blocks, the bits of every option
of the K candidate pairs (`image_examples`). The pair ranker learns a listwise softmax
against each pair's best bits, the scan model a softmax over the 16 options of the
ranker's first pairs (`train`). CLI: train_multitask.py --selector IMAGES.

From dumps (train_multitask.py DATA --image-dir DIR): the records' images are found and
checked (`match_records`), their blocks labelled the same way with the dump's best pair
among the candidates (`dump_examples`), and both MLPs trained epoch by epoch
(`fit_epochs`) so that the trainer validates (`head_counts`) and exports the best epoch.
"""
import hashlib
import os
import time

import numpy as np

from tlg8 import Tlg8Error, cost, heads
from tlg8 import features as feat
from tlg8.fileio import write_file
from tlg8.image import BLOCK, TILE_H, TILE_W, block_grid, block_workspaces, read_image
from tlg8.mlp import forward
from tlg8.selector import DEFAULTS, PairSelector, head_log_proba
from tlg8.stages import MAX_COMPONENTS, N_FILTERS
from tlg8.trials import N_OPTIONS, config_of

from .nn import bits_targets, cross_entropy, finished, fit_mlp, mlp_epochs


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
    key = (f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{blocks}|{candidates}|"
           f"{seed}|{feat.PAIR_FEATURE_LAYOUT}")

    def compute():
        samples, _ = read_image(path)
        grid = block_grid(samples.shape[1], samples.shape[0])
        full = np.flatnonzero((grid[:, 4] == 8) & (grid[:, 5] == 8))
        if not len(full):
            raise SelectorTrainingError(f"{path}: no full 8x8 block to train on")
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.permutation(full)[:blocks])
        ws = block_workspaces(samples, grid[pick])
        return (ws,) + label_workspaces(ws, candidates, log=log, what=path)
    return cached_examples(cache, key, compute, log)


def cached_examples(cache, key, compute, log=None):
    """compute() -> (ws, cand, bits), kept in cache/selector-HASH.npz (cache: a directory
    or None) under the text `key`, which names everything the labels depend on."""
    digest = hashlib.sha1(key.encode()).hexdigest()
    cached = os.path.join(cache, f"selector-{digest[:16]}.npz") if cache else None
    if cached and os.path.exists(cached):
        try:
            with np.load(cached) as z:
                return z["ws"].astype(np.int32), z["cand"], z["bits"]
        except (OSError, ValueError, KeyError, EOFError) as e:
            # A corrupt entry (an interrupted run, a full disk): said once, then rebuilt.
            if log:
                log(f"warning: {cached}: unreadable cache entry ({e}); rebuilding it")
    ws, cand, bits = compute()
    if cached:
        os.makedirs(cache, exist_ok=True)
        write_file(cached, "wb", lambda f: np.savez(f, ws=ws.astype(np.uint8), cand=cand,
                                                    bits=bits))
    return ws, cand, bits


def label_workspaces(ws, candidates, force=None, log=None, what="blocks"):
    """The labels of full-block workspaces: (candidate pairs int64 (B, K), bits uint16
    (B, K, 16) of every candidate x option from the exact cost model).

    Candidates are the K pairs with the least sum of absolute coded values (what the
    selector ranks at inference). force: pair ids (B,) put in place of the last candidate
    where they are not among them (the dump's best pair: the ranker then learns what the
    reference chose, also where the SAD order misses it)."""
    planes, sad, _ = feat.block_stats(ws)
    cand = feat.top_pairs(feat.pair_proxy(sad, ws.shape[1]), candidates)
    if force is not None:
        absent = ~(cand == np.asarray(force)[:, None]).any(axis=1)
        cand[absent, -1] = np.asarray(force)[absent]
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
        log(f"{what}: {len(ws)} blocks x {cand.shape[1]} pairs x 16 options labelled in "
            f"{time.perf_counter() - start:.0f} s")
    return cand, bits


def ranker_examples(ws, cand, bits):
    """(pair features (B, K, 35), soft targets (B, K), block-major residuals) of labelled
    blocks: the ranker learns each pair's least bits over its options."""
    planes, sad, nonzero = feat.block_stats(ws)
    return (feat.pair_features(sad, nonzero, cand, 64),
            bits_targets(bits.min(-1), RANKER_TEMPERATURE), feat.block_major(planes))


def scan_examples(residuals, cand, bits, order):
    """(scan features (B * P, 47), soft targets (B * P, 16)) of the candidates at positions
    `order` (B, P) of each block: the scan model learns each pair's options."""
    top = np.take_along_axis(cand, order, 1)
    x = feat.scan_features(feat.coded_pairs(residuals, top), 8, 8).reshape(-1,
                                                                           feat.N_SCAN_FEATURES)
    rows = np.arange(len(cand))[:, None]
    return x, bits_targets(bits[rows, order].reshape(-1, N_OPTIONS), SCAN_TEMPERATURE)


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
    pair_x, pair_t, residuals_all = zip(*(ranker_examples(*part) for part in parts))
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
        sx, st = scan_examples(residuals, cand, bits, order)
        scan_x.append(sx)
        scan_t.append(st)
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


# ---------------------------------------------------------------------------------------
# Training from dumps (train_multitask.py DATA --image-dir DIR): the records name their
# image and block, so with the image at hand the block's neighbourhood (the workspace the
# selector's features need, which a dump does not store) is rebuilt; the dump's best pair
# joins the candidates and the labels are the cost model's exact bits.

IMAGE_NOT_FOUND = "image not found"
IMAGE_UNREADABLE = "unreadable image"
PIXELS_DIFFER = "pixels differ from the image"


def find_image(tag, image_dirs):
    """The file of a record's `image` tag: DIR/tag or DIR/basename(tag) for each of
    image_dirs in turn, else the tag itself as a path; None when none exists."""
    for directory in image_dirs:
        for name in (tag, os.path.basename(tag)):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    return tag if os.path.isfile(tag) else None


def matching_blocks(samples, data, index):
    """bool (len(index),): the records `index` of a dataset (tlg8.records) are blocks of
    this image: block-grid origin and size, component count and every pixel equal."""
    height, width, ncomp = samples.shape
    bx, by = (data["origin"][index].astype(np.int64).T)
    w, h, c = (data["size"][index].astype(np.int64).T)
    ok = ((c == ncomp) & (bx % BLOCK == 0) & (by % BLOCK == 0) & (bx < width) & (by < height)
          & (w == np.minimum(BLOCK, width - bx)) & (h == np.minimum(BLOCK, height - by)))
    padded = np.zeros((height + BLOCK, width + BLOCK, MAX_COMPONENTS), np.uint8)
    padded[:height, :width, :ncomp] = samples
    steps = np.arange(BLOCK)
    for lo in range(0, len(index), 8192):
        part = np.flatnonzero(ok[lo:lo + 8192]) + lo
        blocks = padded[(by[part, None] + steps)[:, :, None], (bx[part, None] + steps)[:, None]]
        inside = (steps[None, :, None] < h[part, None, None]) & \
                 (steps[None, None, :] < w[part, None, None])
        blocks *= inside[..., None]
        ok[part] = (blocks == data["pixels"][index[part]]).all(axis=(1, 2, 3))
    return ok


def match_records(data, image_dirs, strict=False, read=read_image):
    """Find and check the image of every record of a dataset.

    Returns (usable bool (N,), images {image index: (path, samples)}, problems [(kind,
    image name, records, detail)]): usable records lie in their found image with the
    same pixels. strict: the first problem raises SelectorTrainingError instead."""
    usable = np.zeros(len(data["image"]), bool)
    images, problems = {}, []
    for i, name in enumerate(data["names"].tolist()):
        index = np.flatnonzero(data["image"] == i)
        if not len(index):
            continue
        path = find_image(name, image_dirs)
        problem = None
        if path is None:
            problem = (IMAGE_NOT_FOUND, name, len(index),
                       "looked in " + ", ".join(image_dirs) if image_dirs else "as a path")
        else:
            try:
                samples, _ = read(path)
            except Tlg8Error as e:
                problem = (IMAGE_UNREADABLE, name, len(index), str(e))
            else:
                ok = matching_blocks(samples, data, index)
                usable[index] = ok
                images[i] = (path, samples)
                if not ok.all():
                    first = index[np.argmin(ok)]
                    problem = (PIXELS_DIFFER, name, int((~ok).sum()),
                               f"{path}; first block at {data['origin'][first].tolist()}")
        if problem:
            if strict:
                raise SelectorTrainingError(format_match_problem(problem))
            problems.append(problem)
    return usable, images, problems


def format_match_problem(problem):
    kind, name, n, detail = problem
    return f"{name}: {kind} ({n} records; {detail})"


def dump_examples(path, samples, data, index, candidates, cache=None, log=None):
    """(ws, cand, bits) of full-block records `index` of one image (see match_records),
    the dump's best pair forced into the candidates (label_workspaces)."""
    st = os.stat(path)
    origin = np.ascontiguousarray(data["origin"][index].astype(np.int64))
    force = data["best"][index, 0].astype(np.int64) * N_FILTERS + data["best"][index, 1]
    key = (f"dump|{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{candidates}|"
           f"{hashlib.sha1(origin.tobytes() + force.tobytes()).hexdigest()}|"
           f"{feat.PAIR_FEATURE_LAYOUT}")

    def compute():
        bx, by = origin.T
        grid = np.stack([bx - bx % TILE_W, by - by % TILE_H, bx, by,
                         np.full_like(bx, BLOCK), np.full_like(bx, BLOCK)], axis=1)
        ws = block_workspaces(samples, grid)
        return (ws,) + label_workspaces(ws, candidates, force, log, path)
    return cached_examples(cache, key, compute, log)


def fit_epochs(train_parts, val_parts, candidates=DEFAULTS["candidates"],
               probe_pairs=DEFAULTS["probe_pairs"], probe_options=DEFAULTS["probe_options"],
               ranker_hidden=TRAIN_DEFAULTS["ranker_hidden"],
               scan_hidden=TRAIN_DEFAULTS["scan_hidden"], epochs=15, lr=TRAIN_DEFAULTS["lr"],
               weight_decay=TRAIN_DEFAULTS["weight_decay"], seed=0, init=None):
    """Train both MLPs of a pair selector together, one epoch of each per step, so that
    every epoch gives a whole model to validate. Parts: [(ws, cand, bits)].

    Yields (epoch from 1, train loss, val loss, PairSelector); losses are the ranker's
    plus the scan model's cross-entropy. The scan model learns the options of each block's
    SCAN_TRAIN_PAIRS pairs of fewest exact bits (a fixed set, so both MLPs can advance
    together; with --selector it uses the trained ranker's first pairs instead).
    init: a PairSelector to fine-tune (its hidden sizes win)."""
    sets = []
    for parts in (train_parts, val_parts):
        pair_x, pair_t, scan_x, scan_t = [], [], [], []
        for ws, cand, bits in parts:
            x, t, residuals = ranker_examples(ws, cand, bits)
            order = np.argsort(bits.min(-1), axis=1, kind="stable")[:, :SCAN_TRAIN_PAIRS]
            sx, st = scan_examples(residuals, cand, bits, order)
            pair_x.append(x)
            pair_t.append(t)
            scan_x.append(sx)
            scan_t.append(st)
        sets.append([np.concatenate(a) for a in (pair_x, pair_t, scan_x, scan_t)])
    (px, pt, sx, st), (vpx, vpt, vsx, vst) = sets
    ranker = mlp_epochs(px, pt, ranker_hidden, epochs, lr, weight_decay, seed=seed,
                        listwise=True, init=init and (init.ranker, init.ranker_scaler))
    scan = mlp_epochs(sx, st, scan_hidden, epochs, lr, weight_decay, batch=512, seed=seed,
                      init=init and (init.scan, init.scan_scaler))
    for (e, ranker_loss, rp, rs), (_, scan_loss, sp, ss) in zip(ranker, scan):
        rp, sp = finished(rp, px), finished(sp, sx)
        val_loss = cross_entropy(rp, rs, vpx, vpt, listwise=True) + cross_entropy(sp, ss, vsx, vst)
        yield e + 1, ranker_loss + scan_loss, val_loss, PairSelector(
            rp, rs, sp, ss, candidates, probe_pairs, probe_options)


def head_counts(model, parts_ws, best, second, tie, chunk=2048):
    """Per-head hit counts (tlg8.heads.hit_counts with ties) of a selector on workspaces
    (a list of arrays, blocks of one size each) against records' best, second (N, 6 head
    labels, in the order of the concatenated workspaces) and tie (N,)."""
    top2 = []
    for ws in parts_ws:
        for lo in range(0, len(ws), chunk):
            _, pairs, scores, _, logp = model.rank(ws[lo:lo + chunk])
            top2.append(heads.top2_of_scores(head_log_proba(pairs, scores, logp)))
    return heads.hit_counts(np.concatenate(top2), best, second, tie)
