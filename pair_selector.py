"""Learned selection of a block's configuration by ranking (predictor, filter) pairs.

Why: the reference picks among 768 (predictor, filter) pairs x 8 reorders x 2 interleaves.
The pairs differ mostly in how large their coded values are, which tlg8.features measures
cheaply for all 768 (sums of absolute values and non-zero counts of the deduplicated filter
outputs); pixel-input models have to learn the predictors and filters from scratch and lose
to that free measurement. So the selector is two small MLPs on cost-model statistics:

1. the *pair ranker* scores the K pairs with the least sum of absolute coded values
   (tlg8.features.top_pairs) from their per-pair features (layout pairs-v1), one shared MLP
   for all pairs, trained with a listwise softmax against each pair's exact best bits;
2. the *scan model* gives 16 logits, one per (reorder, interleave), for each of the top
   pairs from statistics of the pair's coded values along each scan (layout scan-v1).

Trials are then spent in two rounds (`round_one`, `round_two`; `select_blocks` batched,
`select_one` / `select_with_callback` through an encoder callback): round 1 probes the
`probe_pairs` best-ranked pairs with their `probe_options` likeliest options; round 2 spends
what is left of the budget on the untried options of the pair that measured best (then on
further pairs, which matters for edge blocks whose reorders all coincide). At most
max_trials per block, enforced. Measured (docs/selector_notes.md): with both models the
rounds beat trying the 16 most probable (pair, option) at once only slightly; the two
models are what matter.

The model file is an NPZ with `format` = SELECTOR_FORMAT, `feature_layout` =
SELECTOR_LAYOUT (the per-block vectors of the guide's API), the internal layouts, the two
MLPs' arrays and their `*_scaler` (mean, std), and the strategy's parameters;
`load_selector` (and multitask_model.MultiTaskModel.load) reads it. `train` makes one from
images, with labels from the exact cost model (CLI: train_multitask.py --selector).
"""
import hashlib
import json
import os
import time

import numpy as np

from multitask_model import AdamW
from tlg8 import cost, stages
from tlg8 import features as feat
from tlg8.fileio import write_file
from tlg8.image import block_batches, block_grid, block_workspaces, read_image

SELECTOR_FORMAT = "tlg8-pair-selector/1"
SELECTOR_LAYOUT = feat.WORKSPACE_LAYOUT  # what the per-block API takes (features.py)
N_OPTIONS = stages.N_REORDERS * stages.N_INTERLEAVES       # option id = reorder * 2 + interleave
DEFAULTS = {"candidates": 32, "probe_pairs": 6, "probe_options": 2}


# ---------------------------------------------------------------------------------------
# A small MLP (one ReLU layer), float32

def mlp_init(n_in, n_hidden, n_out, seed):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n_in, n_hidden)) * np.sqrt(2 / n_in)).astype(np.float32),
            np.zeros(n_hidden, np.float32),
            (rng.standard_normal((n_hidden, n_out)) * np.sqrt(1 / n_hidden)).astype(np.float32),
            np.zeros(n_out, np.float32)]


def mlp_forward(params, x):
    """x (..., n_in) standardised -> (output (..., n_out), hidden (..., n_hidden))."""
    w1, b1, w2, b2 = params
    h = x @ w1
    h += b1
    np.maximum(h, 0, out=h)
    out = h @ w2
    out += b2
    return out, h


def _backward(params, x, h, grad_out):
    """Gradients of the parameters for d(loss)/d(output) = grad_out (rows flattened)."""
    w1, _, w2, _ = params
    x2 = x.reshape(-1, x.shape[-1])
    h2 = h.reshape(-1, h.shape[-1])
    g2 = grad_out.reshape(-1, grad_out.shape[-1])
    gh = g2 @ w2.T
    gh *= h2 > 0
    return [x2.T @ gh, gh.sum(0), h2.T @ g2, g2.sum(0)]


def _softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def soft_targets(bits, temperature):
    """Training targets: softmax of -(bits - least bits) / temperature along the last axis,
    so near-ties share the probability and a pair 10 bits worse gets almost none."""
    bits = np.asarray(bits, np.float32)
    return _softmax(-(bits - bits.min(-1, keepdims=True)) / np.float32(temperature))


def fit_mlp(x, targets, n_hidden, epochs, lr=2e-3, weight_decay=1e-4, batch=64, seed=0,
            listwise=False, progress=None):
    """Train an MLP with softmax cross-entropy against soft targets.

    listwise=False: x (R, F), targets (R, n_out), one softmax per row.
    listwise=True: x (B, K, F), targets (B, K), one scalar score per row and one softmax
    over the K rows of each group (the pair ranker).
    Returns (params, (mean, std)) with the standardisation of x.
    """
    n_in = x.shape[-1]
    flat = x.reshape(-1, n_in)
    mean = flat.mean(0).astype(np.float32)
    std = flat.std(0).astype(np.float32)
    std = np.where(std > 1e-6, std, np.float32(1))
    xs = ((x - mean) / std).astype(np.float32)
    params = mlp_init(n_in, n_hidden, 1 if listwise else targets.shape[-1], seed)
    opt = AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(xs))
        total = 0.0
        for lo in range(0, len(order), batch):
            idx = order[lo:lo + batch]
            xb, tb = xs[idx], targets[idx]
            out, h = mlp_forward(params, xb)
            if listwise:
                out = out[..., 0]
            p = _softmax(out)
            total += float(-(tb * np.log(p + 1e-12)).sum())
            grad = (p - tb) / np.float32(len(idx))
            if listwise:
                grad = grad[..., None]
            opt.update(params, _backward(params, xb, h, grad))
        if progress:
            progress(epoch, total / len(xs))
    # Inputs constant in training (e.g. the component-3 columns when every training image
    # has C = 3) taught the model nothing: their first-layer weights are only the random
    # initialisation. Zero them so that such inputs cannot add noise at inference (ARGB).
    params[0][flat.std(0) <= 1e-6] = 0
    return params, (mean, std)


# ---------------------------------------------------------------------------------------
# The selector model

class PairSelector:
    """Pair ranker + scan model + the adaptive strategy's parameters (see module doc)."""

    def __init__(self, ranker, ranker_scaler, scan, scan_scaler, candidates=32,
                 probe_pairs=6, probe_options=2, metadata=None):
        self.ranker = [np.asarray(p, np.float32) for p in ranker]
        self.ranker_scaler = tuple(np.asarray(s, np.float32) for s in ranker_scaler)
        self.scan = [np.asarray(p, np.float32) for p in scan]
        self.scan_scaler = tuple(np.asarray(s, np.float32) for s in scan_scaler)
        self.candidates = int(candidates)
        self.probe_pairs = int(probe_pairs)
        self.probe_options = int(probe_options)
        self.metadata = dict(metadata or {})
        self.feature_layout = SELECTOR_LAYOUT
        if self.ranker[0].shape[0] != feat.N_PAIR_FEATURES or \
                self.scan[0].shape[0] != feat.N_SCAN_FEATURES or \
                self.scan[2].shape[1] != N_OPTIONS or self.ranker[2].shape[1] != 1:
            raise ValueError("selector arrays do not match the pairs-v1 / scan-v1 layouts")

    # -- inference -------------------------------------------------------------------

    def pair_scores(self, pair_feats, pairs=None):
        """(N, K, 35) raw pair features -> (N, K) scores, higher = better.

        With `pairs` (N, K), pair_feats may be the 13 measures only (features.pair_features
        identity=False): the one-hot columns' share of the first layer is then read from a
        per-pair table (the same sum, without forming 22 columns per pair).
        """
        mean, std = self.ranker_scaler
        if pair_feats.shape[-1] == feat.N_PAIR_FEATURES:
            return mlp_forward(self.ranker, (pair_feats - mean) / std)[0][..., 0]
        m = feat.N_PAIR_MEASURES
        w1, b1, w2, b2 = self.ranker
        h = ((pair_feats - mean[:m]) / std[:m]) @ w1[:m]
        h += self._identity_table()[pairs]
        np.maximum(h, 0, out=h)
        return (h @ w2 + b2)[..., 0]

    def _identity_table(self):
        """(768, hidden): first-layer input of each pair's one-hot columns, plus the bias."""
        if getattr(self, "_table", None) is None:
            mean, std = self.ranker_scaler
            m = feat.N_PAIR_MEASURES
            onehot = (feat.PAIR_ONEHOTS - mean[m:]) / std[m:]
            self._table = (onehot @ self.ranker[0][m:] + self.ranker[1]).astype(np.float32)
        return self._table

    def option_logits(self, scan_feats):
        """(N, P, 47) raw scan features -> (N, P, 16) logits over (reorder, interleave)."""
        mean, std = self.scan_scaler
        return mlp_forward(self.scan, (scan_feats - mean) / std)[0]

    def rank(self, ws, timings=None, max_trials=16):
        """Everything the strategy needs for blocks of one size, from their workspaces.

        Returns (residuals int16 (N, 8, C, n) block-major (features.block_major), pairs
        (N, K) ranked best first, pair scores (N, K),
        option order (N, P, 16) best first and option log-probabilities (N, P, 16) in
        option-id order, for the first P pairs: those whose options the two rounds can
        reach with max_trials trials (option_pairs)).
        """
        clock = _Clock(timings)
        ws = np.asarray(ws)
        h, w = ws.shape[2] - 1, ws.shape[3] - 2
        planes, sad, nonzero = feat.block_stats(ws)
        cand = feat.top_pairs(feat.pair_proxy(sad, ws.shape[1]), self.candidates)
        pair_feats = feat.pair_features(sad, nonzero, cand, w * h, identity=False)
        clock("features")
        scores = self.pair_scores(pair_feats, cand)
        order = np.argsort(-scores, axis=1, kind="stable")
        pairs = np.take_along_axis(cand, order, 1)
        scores = np.take_along_axis(scores, order, 1)
        clock("inference")
        top = pairs[:, :option_pairs(self, max_trials, distinct_options(w, h), pairs.shape[1])]
        residuals = feat.block_major(planes)
        scan_feats = feat.scan_features(feat.coded_pairs(residuals, top), w, h)
        clock("features")
        logits = self.option_logits(scan_feats)
        if w != 8 or h != 8:
            # Edge blocks keep raster order for every reorder (cost spec §4): only the
            # interleave matters, so only reorder 0 is ever tried.
            logits[..., 2:] = -np.inf
        logp = logits - _logsumexp(logits)
        options = np.argsort(-logits, axis=2, kind="stable")
        clock("inference")
        return residuals, pairs, scores, options, logp

    # -- the guide's per-block API (features = workspace-v1 vectors) -------------------

    def image_features(self, samples, grid=None):
        """Raw features of an image's blocks: workspace-v1 vectors (N, 363)."""
        return feat.image_workspace_vectors(samples, grid)

    def _groups(self, features):
        x = np.asarray(features, np.float32)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != feat.N_WORKSPACE_FEATURES:
            raise ValueError(f"features must have shape ({feat.N_WORKSPACE_FEATURES},) or "
                             f"(N, {feat.N_WORKSPACE_FEATURES}) (layout "
                             f"{feat.WORKSPACE_LAYOUT}), not {np.shape(features)}")
        keys = [tuple(int(v) for v in row) for row in x[:, :3]]
        for key in sorted(set(keys)):
            index = np.array([i for i, k in enumerate(keys) if k == key])
            ws = np.stack([feat.workspace_from_vector(x[i]) for i in index])
            yield index, ws

    def head_log_proba(self, features):
        """{head name: log-probabilities (N, size)} of workspace-v1 features, derived from
        the ranking: the pair heads are the ranker's softmax over its candidates summed per
        class, reorder and interleave the scan model's for the first-ranked pair."""
        x = np.asarray(features, np.float32)
        n = 1 if x.ndim == 1 else len(x)
        out = {name: np.full((n, size), -np.inf, np.float32) for name, size in HEADS}
        for index, ws in self._groups(features):
            _, pairs, scores, _, logp = self.rank(ws)
            for name, value in head_log_proba(pairs, scores, logp).items():
                out[name][index] = value
        return out

    def predict_logits(self, features):
        """Per-head log-probabilities (they serve as logits): (F,) -> {head: (K,)},
        (N, F) -> {head: (N, K)}."""
        single = np.asarray(features).ndim == 1
        logp = self.head_log_proba(features)
        return {k: v[0] if single else v for k, v in logp.items()}

    def topk_arrays(self, features, k=2):
        """{head name: (ids (N, k'), logprobs (N, k'))}, best first (ties: lower id)."""
        out = {}
        for name, part in self.head_log_proba(features).items():
            ids = np.argsort(-part, axis=1, kind="stable")[:, :min(k, part.shape[1])]
            out[name] = (ids, np.take_along_axis(part, ids, axis=1))
        return out

    def predict_topk(self, features, k=2):
        """Top-k classes of one block: {head name: [(class_id, logprob), ...]}."""
        x = np.asarray(features, np.float32)
        if x.ndim == 2 and len(x) != 1:
            raise ValueError(f"predict_topk takes one block, not {len(x)}; use topk_arrays")
        return {name: [(int(i), float(lp)) for i, lp in zip(ids[0], lps[0])]
                for name, (ids, lps) in self.topk_arrays(x, k).items()}

    # -- files -----------------------------------------------------------------------

    def save(self, path):
        arrays = {
            "format": np.array(SELECTOR_FORMAT),
            "feature_layout": np.array(SELECTOR_LAYOUT),
            "pair_feature_layout": np.array(feat.PAIR_FEATURE_LAYOUT),
            "scan_feature_layout": np.array(feat.SCAN_FEATURE_LAYOUT),
            "ranker_scaler": np.stack(self.ranker_scaler),
            "scan_scaler": np.stack(self.scan_scaler),
            "strategy": np.array([self.candidates, self.probe_pairs, self.probe_options]),
            "metadata": np.array(json.dumps(self.metadata)),
        }
        for i, p in enumerate(self.ranker):
            arrays[f"ranker_{i}"] = p
        for i, p in enumerate(self.scan):
            arrays[f"scan_{i}"] = p
        write_file(path, "wb", lambda f: np.savez(f, **arrays))


def _open_npz(path):
    """np.load of an NPZ, or None when the file is not one (a .npy, not a zip, ...)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        return None
    return npz


def is_selector_file(path):
    """True when `path` is an NPZ written by PairSelector.save."""
    npz = _open_npz(path)
    if npz is None:
        return False
    with npz:
        return "format" in npz.files and str(npz["format"]) == SELECTOR_FORMAT


def load_selector(path):
    """Read a PairSelector NPZ; clear ValueError for other files and other layouts."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file")
    npz = _open_npz(path)
    if npz is None:
        raise ValueError(f"{path}: not a pair-selector model ({SELECTOR_FORMAT}): not an NPZ")
    with npz:
        if "format" not in npz.files or str(npz["format"]) != SELECTOR_FORMAT:
            raise ValueError(f"{path}: not a pair-selector model ({SELECTOR_FORMAT})")
        layouts = (str(npz["pair_feature_layout"]), str(npz["scan_feature_layout"]))
        if layouts != (feat.PAIR_FEATURE_LAYOUT, feat.SCAN_FEATURE_LAYOUT):
            raise ValueError(f"{path}: feature layouts {layouts} are not this version's "
                             f"{(feat.PAIR_FEATURE_LAYOUT, feat.SCAN_FEATURE_LAYOUT)}; "
                             f"re-train with train_multitask.py --selector")
        candidates, probe_pairs, probe_options = (int(v) for v in npz["strategy"])
        return PairSelector([npz[f"ranker_{i}"] for i in range(4)], npz["ranker_scaler"],
                            [npz[f"scan_{i}"] for i in range(4)], npz["scan_scaler"],
                            candidates, probe_pairs, probe_options,
                            json.loads(str(npz["metadata"])))


HEADS = (("head_predictor", 8), ("head_filter_perm", 6), ("head_filter_primary", 4),
         ("head_filter_secondary", 4), ("head_reorder", 8), ("head_interleave", 2))


def head_log_proba(pairs, scores, option_logp):
    """The six heads' log-probabilities (N, size) from a ranking (PairSelector.rank)."""
    n = len(pairs)
    pair_logp = scores - _logsumexp(scores)                               # (N, K)
    perm, primary, secondary = stages.split_filter_code(pairs % stages.N_FILTERS)
    values = (pairs // stages.N_FILTERS, perm, primary, secondary)
    out = {}
    for (name, size), value in zip(HEADS[:4], values):
        prob = np.zeros((n, size), np.float64)
        np.add.at(prob, (np.arange(n)[:, None], value), np.exp(pair_logp))
        with np.errstate(divide="ignore"):
            out[name] = np.log(prob).astype(np.float32)
    top = option_logp[:, 0].reshape(n, stages.N_REORDERS, stages.N_INTERLEAVES)
    out["head_reorder"] = _logsumexp(top)[..., 0].astype(np.float32)
    out["head_interleave"] = _logsumexp(np.swapaxes(top, 1, 2))[..., 0].astype(np.float32)
    return out


def _logsumexp(z):
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        return m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


class _Clock:
    """Adds wall time since the previous call to timings[name] (no-op without a dict)."""

    def __init__(self, timings):
        import time
        self.timings = timings
        self.now = time.perf_counter
        self.last = self.now()

    def __call__(self, name):
        if self.timings is not None:
            t = self.now()
            self.timings[name] = self.timings.get(name, 0.0) + t - self.last
            self.last = t


# ---------------------------------------------------------------------------------------
# The adaptive strategy

def config_of(pair, option):
    """(predictor, filter, reorder, interleave) arrays from pair and option ids."""
    pair, option = np.broadcast_arrays(np.asarray(pair), np.asarray(option))
    return np.stack([pair // stages.N_FILTERS, pair % stages.N_FILTERS, option // 2,
                     option % 2], axis=-1)


def distinct_options(w, h):
    """Options per pair that differ in bits: 16, or 2 for edge blocks, whose reorders all
    keep raster order (rank() orders reorder 0's two options first for them)."""
    return N_OPTIONS if (w, h) == (8, 8) else stages.N_INTERLEAVES


def round_one_shape(probe_pairs, probe_options, max_trials, distinct, available):
    """(pairs, options per pair) of round one: the model's parameters, cut so that
    pairs x options <= max_trials (the cap wins) and pairs <= the `available` ones."""
    n_pairs = min(probe_pairs, available)
    n_opts = min(probe_options, distinct)
    while n_pairs * n_opts > max_trials:
        if n_pairs > 1:
            n_pairs -= 1
        else:
            n_opts -= 1
    return n_pairs, n_opts


def option_pairs(model, max_trials, distinct, available):
    """How many of the ranked pairs the two rounds can try options of: the probed ones
    and, when the best probed pair runs out of untried options (edge blocks), the next."""
    n_pairs, n_opts = round_one_shape(model.probe_pairs, model.probe_options, max_trials,
                                      distinct, available)
    left = max_trials - n_pairs * n_opts - (distinct - n_opts)
    return min(available, n_pairs + max(0, -(-left // distinct)))


def round_one(pairs, options, probe_pairs, probe_options, max_trials, distinct=N_OPTIONS):
    """Round-1 trials: (N, T1, 4) configs, the first probe_pairs pairs x their first
    probe_options options, pair-major; T1 <= max_trials."""
    n_pairs, n_opts = round_one_shape(probe_pairs, probe_options, max_trials, distinct,
                                      min(pairs.shape[1], options.shape[1]))
    pr = np.repeat(pairs[:, :n_pairs], n_opts, axis=1)
    op = options[:, :n_pairs, :n_opts].reshape(len(pairs), -1)
    return config_of(pr, op), n_pairs, n_opts


def round_two(pairs, options, measured, n_pairs, n_opts, budget, distinct=N_OPTIONS):
    """Round-2 trials (N, budget, 4): the untried options of the pair that measured best in
    round 1 (fewest bits, earlier pair on ties), then the options of the pairs after the
    probed ones, in rank order; measured: (N, n_pairs) least bits per probed pair."""
    n_blocks = len(pairs)
    best = np.argmin(measured, axis=1)
    rows = np.arange(n_blocks)
    own = options[rows, best, n_opts:distinct]                          # (N, D - Q)
    own_cfg = config_of(pairs[rows, best][:, None], own)
    later = options[:, n_pairs:, :distinct]                             # (N, P', D)
    later_cfg = config_of(np.repeat(pairs[:, n_pairs:options.shape[1]], distinct, axis=1),
                          later.reshape(n_blocks, -1))
    queue = np.concatenate([own_cfg, later_cfg], axis=1)
    return queue[:, :budget]


def select_blocks(ws, model, max_trials=16, timings=None, evaluate=None):
    """Configurations of blocks of one size, at most max_trials trials each (always).

    evaluate(residuals, configs (N, T, 4)) -> (bits, entropy) (N, T) defaults to the exact
    cost model (tlg8.cost.block_configs_bits). Returns a dict of arrays:
    choices (N, 5) = p, f, r, i, entropy; bits (N,); trials (N,); tried (N, T, 4) in trial
    order with tried_bits and tried_entropy (N, T); and the ranking: pairs (N, K),
    pair_scores (N, K), option_logp (N, P, 16).
    """
    max_trials = check_max_trials(max_trials)
    ws = np.asarray(ws)
    h, w = ws.shape[2] - 1, ws.shape[3] - 2
    if evaluate is None:
        def evaluate(residuals, configs):
            return cost.block_configs_bits(residuals, configs, w, h)
    distinct = distinct_options(w, h)
    residuals, pairs, scores, options, logp = model.rank(ws, timings, max_trials)
    clock = _Clock(timings)
    first, n_pairs, n_opts = round_one(pairs, options, model.probe_pairs, model.probe_options,
                                       max_trials, distinct)
    bits1, ent1 = evaluate(residuals, first)
    measured = bits1.reshape(len(ws), n_pairs, n_opts).min(axis=2)
    second = round_two(pairs, options, measured, n_pairs, n_opts,
                       max_trials - first.shape[1], distinct)
    if second.shape[1]:
        bits2, ent2 = evaluate(residuals, second)
        tried = np.concatenate([first, second], axis=1)
        bits = np.concatenate([bits1, bits2], axis=1)
        entropy = np.concatenate([ent1, ent2], axis=1)
    else:
        tried, bits, entropy = first, bits1, ent1
    clock("trials")
    pick = np.argmin(bits, axis=1)                       # first minimum: earlier trial wins
    rows = np.arange(len(ws))
    return {"choices": np.concatenate([tried[rows, pick], entropy[rows, pick][:, None]], 1),
            "bits": bits[rows, pick], "trials": np.full(len(ws), tried.shape[1], np.int64),
            "tried": tried, "tried_bits": bits, "tried_entropy": entropy,
            "pairs": pairs, "pair_scores": scores, "option_logp": logp}


def check_max_trials(max_trials):
    if isinstance(max_trials, bool) or not isinstance(max_trials, (int, np.integer)) or \
            max_trials < 1:
        raise ValueError(f"max_trials must be a positive integer, not {max_trials!r}")
    return int(max_trials)


def select_image(samples, model, max_trials=16, timings=None, progress=None, chunk=2048):
    """select_blocks over a whole image (blocks grouped by size, `chunk` at a time).

    Returns (grid, choices (N, 5), bits (N,), trials (N,)) in tlg8.image.block_grid order.
    timings (optional dict) accumulates seconds of "blocks" (cutting workspaces),
    "features", "inference" and "trials".
    """
    grid = block_grid(samples.shape[1], samples.shape[0])
    choices = np.zeros((len(grid), 5), np.int64)
    bits = np.zeros(len(grid), np.int64)
    trials = np.zeros(len(grid), np.int64)
    for part in block_batches(grid, chunk):
        clock = _Clock(timings)
        ws = block_workspaces(samples, grid[part])
        clock("blocks")
        sel = select_blocks(ws, model, max_trials, timings)
        choices[part], bits[part], trials[part] = sel["choices"], sel["bits"], sel["trials"]
        if progress:
            progress(len(part))
    return grid, choices, bits, trials


def select_one(ws, model, try_encode_block, max_trials=16):
    """One block through the caller's encoder: (cfg (p, f, r, i) list, bits, trials).

    The same two rounds as select_blocks; try_encode_block(p, f, r, i) -> bits is called at
    most max_trials times (distinct configurations; the earlier trial wins ties).
    """
    max_trials = check_max_trials(max_trials)
    ws = np.asarray(ws)[None]
    _, pairs, _, options, _ = model.rank(ws, max_trials=max_trials)
    return _callback_rounds(pairs[0], options[0], model, try_encode_block, max_trials,
                            distinct_options(ws.shape[3] - 2, ws.shape[2] - 1))


def select_with_callback(features, model, try_encode_block, max_trials=16):
    """Many blocks given as workspace-v1 vectors (N, 363): one model pass per block size,
    then each block's two rounds through try_encode_block(block_index, p, f, r, i).

    Returns (configs int64 (N, 4), bits (N,), trials int64 (N,)).
    """
    max_trials = check_max_trials(max_trials)
    x = np.asarray(features, np.float32)
    x = x[None] if x.ndim == 1 else x
    configs = np.zeros((len(x), 4), np.int64)
    bits = [None] * len(x)
    trials = np.zeros(len(x), np.int64)
    for index, ws in model._groups(x):
        _, pairs, _, options, _ = model.rank(ws, max_trials=max_trials)
        distinct = distinct_options(ws.shape[3] - 2, ws.shape[2] - 1)
        for k, i in enumerate(index.tolist()):
            cfg, bits[i], trials[i] = _callback_rounds(
                pairs[k], options[k], model,
                lambda *c, i=i: try_encode_block(i, *c), max_trials, distinct)
            configs[i] = cfg
    return configs, np.array(bits), trials


def _callback_rounds(pairs, options, model, try_encode_block, max_trials, distinct):
    """The two rounds of one block (pairs (K,), options (P, 16)) through a callback."""
    pairs, options = pairs[None], options[None]
    first, n_pairs, n_opts = round_one(pairs, options, model.probe_pairs,
                                       model.probe_options, max_trials, distinct)
    tried = []

    def run(configs):
        out = []
        for config in configs.tolist():
            if len(tried) >= max_trials:      # the cap is enforced, not only planned
                break
            bits = try_encode_block(*config)
            tried.append((config, bits))
            out.append(bits)
        return out

    bits1 = run(first[0])
    measured = np.array(bits1, np.float64).reshape(1, n_pairs, n_opts).min(axis=2)
    run(round_two(pairs, options, measured, n_pairs, n_opts, max_trials - len(tried),
                  distinct)[0])
    best = min(range(len(tried)), key=lambda k: (tried[k][1], k))
    return tried[best][0], tried[best][1], len(tried)


# ---------------------------------------------------------------------------------------
# Training (labels from the exact cost model; train_multitask.py --selector is the CLI)

SCAN_TRAIN_PAIRS = 4      # scan-model rows per block: the ranker's first pairs
RANKER_TEMPERATURE = 3.0  # bits; soft targets of the pair ranker
SCAN_TEMPERATURE = 2.0    # bits; soft targets of the scan model
LABEL_CHUNK = 256         # blocks per labelling pass (x 512 trials each)


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
        with np.load(cached) as z:
            return z["ws"].astype(np.int32), z["cand"], z["bits"]
    samples, _ = read_image(path)
    grid = block_grid(samples.shape[1], samples.shape[0])
    full = np.flatnonzero((grid[:, 4] == 8) & (grid[:, 5] == 8))
    if not len(full):
        raise ValueError(f"{path}: no full 8x8 block to train on")
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
        tmp = f"{cached}.{os.getpid()}.tmp.npz"
        np.savez(tmp, ws=ws.astype(np.uint8), cand=cand, bits=bits)
        os.replace(tmp, cached)
    return ws, cand, bits


def train(images, blocks_per_image=3000, candidates=DEFAULTS["candidates"],
          probe_pairs=DEFAULTS["probe_pairs"], probe_options=DEFAULTS["probe_options"],
          ranker_hidden=32, scan_hidden=64, ranker_epochs=10, scan_epochs=15, lr=2e-3,
          weight_decay=1e-4, seed=0, cache=None, log=None):
    """A trained PairSelector from image paths (labels: image_examples)."""
    parts = [image_examples(p, blocks_per_image, candidates, seed + i, cache, log)
             for i, p in enumerate(images)]
    pair_x, pair_t, residuals_all = [], [], []
    for ws, cand, bits in parts:
        planes, sad, nonzero = feat.block_stats(ws)
        pair_x.append(feat.pair_features(sad, nonzero, cand, 64))
        pair_t.append(soft_targets(bits.min(-1), RANKER_TEMPERATURE))
        residuals_all.append(feat.block_major(planes))
    if log:
        log(f"pair ranker: {sum(len(x) for x in pair_x)} blocks x {candidates} candidates")
    ranker, ranker_scaler = fit_mlp(np.concatenate(pair_x), np.concatenate(pair_t),
                                    ranker_hidden, ranker_epochs, lr, weight_decay,
                                    seed=seed, listwise=True)
    scan_x, scan_t = [], []
    mean, std = ranker_scaler
    for (ws, cand, bits), x, residuals in zip(parts, pair_x, residuals_all):
        score = mlp_forward(ranker, (x - mean) / std)[0][..., 0]
        order = np.argsort(-score, axis=1, kind="stable")[:, :SCAN_TRAIN_PAIRS]
        top = np.take_along_axis(cand, order, 1)
        scan_x.append(feat.scan_features(feat.coded_pairs(residuals, top), 8, 8)
                      .reshape(-1, feat.N_SCAN_FEATURES))
        rows = np.arange(len(cand))[:, None]
        scan_t.append(soft_targets(bits[rows, order].reshape(-1, N_OPTIONS),
                                   SCAN_TEMPERATURE))
    if log:
        log(f"scan model: {sum(len(x) for x in scan_x)} pairs")
    scan, scan_scaler = fit_mlp(np.concatenate(scan_x), np.concatenate(scan_t), scan_hidden,
                                scan_epochs, lr, weight_decay, batch=512, seed=seed)
    meta = {"images": [os.path.basename(p) for p in images],
            "blocks_per_image": blocks_per_image, "seed": seed, "lr": lr,
            "weight_decay": weight_decay, "ranker_hidden": ranker_hidden,
            "scan_hidden": scan_hidden, "ranker_epochs": ranker_epochs,
            "scan_epochs": scan_epochs}
    return PairSelector(ranker, ranker_scaler, scan, scan_scaler, candidates, probe_pairs,
                        probe_options, meta)
