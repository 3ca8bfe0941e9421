"""The pair selector: the encoder's default model (inference only; libaom-style, the encoder
ships its weights in tlg8/models/).

Why: the reference picks among 768 (predictor, filter) pairs x 8 reorders x 2 interleaves.
The pairs differ mostly in how large their coded values are, which tlg8.features measures
cheaply for all 768 (sums of absolute values and non-zero counts of the deduplicated filter
outputs); pixel-input models have to learn the predictors and filters from scratch and lose
to that free measurement. So the selector is two small MLPs on cost-model statistics:

1. the *pair ranker* scores the K pairs with the least sum of absolute coded values
   (tlg8.features.top_pairs) from their per-pair features (layout pairs-v1), one shared MLP
   for all pairs;
2. the *scan model* gives 16 logits, one per option (reorder, interleave), for each of the
   top pairs from statistics of the pair's coded values along each scan (layout scan-v1).

Trials are then spent in two rounds (tlg8.trials.two_rounds): round 1 probes the
`probe_pairs` best-ranked pairs with their `probe_options` likeliest options; round 2
spends what is left of the budget on the untried options of the pair that measured best
(then on further pairs, which matters for edge blocks whose reorders all coincide). At most
max_trials per block, enforced; a cap below probe_pairs x probe_options uses the small-cap
shape of tlg8.trials.probe_shape (one option per pair, room left for round 2).

The model file is an NPZ with `format` = SELECTOR_FORMAT, `feature_layout` =
SELECTOR_LAYOUT (the per-block vectors of the guide's API), the internal layouts, the two
MLPs' arrays and their `*_scaler` (mean, std), and the strategy's parameters; `load` reads
one, `PairSelector.save` writes one. Training is on the model side
(tlg8_multitask.selector_training; CLI: train_multitask.py --selector).

A PairSelector answers the model interface of docs/architecture.md: `choose_image`,
`choose_block`, `choose_blocks`, the per-head `topk_arrays` / `predict_topk` /
`predict_logits`, `image_features`, `save`.
"""
import functools
import json
import os

import numpy as np

from . import cost, features as feat, stages, trials
from .fileio import write_file
from .heads import HEADS, top2_of_scores
from .image import block_workspaces
from .mlp import forward
from .modelfile import ModelFile

SELECTOR_FORMAT = "tlg8-pair-selector/1"
SELECTOR_LAYOUT = feat.WORKSPACE_LAYOUT  # what the per-block API takes (features.py)
DEFAULTS = {"candidates": 32, "probe_pairs": 6, "probe_options": 2}
DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models",
                             "pair_selector.npz")
MAX_HIDDEN = 4096


class PairSelector:
    """Pair ranker + scan model + the two rounds' parameters (see module doc)."""

    format = SELECTOR_FORMAT
    feature_layout = SELECTOR_LAYOUT

    def __init__(self, ranker, ranker_scaler, scan, scan_scaler,
                 candidates=DEFAULTS["candidates"], probe_pairs=DEFAULTS["probe_pairs"],
                 probe_options=DEFAULTS["probe_options"], metadata=None):
        self.ranker = [np.asarray(p, np.float32) for p in ranker]
        self.ranker_scaler = tuple(np.asarray(s, np.float32) for s in ranker_scaler)
        self.scan = [np.asarray(p, np.float32) for p in scan]
        self.scan_scaler = tuple(np.asarray(s, np.float32) for s in scan_scaler)
        self.candidates = int(candidates)
        self.probe_pairs = int(probe_pairs)
        self.probe_options = int(probe_options)
        self.metadata = dict(metadata or {})
        self._table = None
        if self.ranker[0].shape[0] != feat.N_PAIR_FEATURES or \
                self.scan[0].shape[0] != feat.N_SCAN_FEATURES or \
                self.scan[2].shape[1] != trials.N_OPTIONS or self.ranker[2].shape[1] != 1:
            raise ValueError("selector arrays do not match the pairs-v1 / scan-v1 layouts")

    def probe_shape(self, max_trials):
        """(probe pairs, probe options) of the two rounds under max_trials: the model's
        own, or for a cap below its round one the small-cap shape (trials.probe_shape)."""
        return trials.probe_shape(self.probe_pairs, self.probe_options, max_trials)

    # -- the two models --------------------------------------------------------------

    def pair_scores(self, pair_feats, pairs=None):
        """(N, K, 35) raw pair features -> (N, K) scores, higher = better.

        With `pairs` (N, K), pair_feats may be the 13 measures only (features.pair_features
        identity=False): the one-hot columns' share of the first layer is then read from a
        per-pair table (the same sum, without forming 22 columns per pair).
        """
        mean, std = self.ranker_scaler
        if pair_feats.shape[-1] == feat.N_PAIR_FEATURES:
            return forward(self.ranker, (pair_feats - mean) / std)[0][..., 0]
        m = feat.N_PAIR_MEASURES
        w1, b1, w2, b2 = self.ranker
        h = ((pair_feats - mean[:m]) / std[:m]) @ w1[:m]
        h += self._identity_table()[pairs]
        np.maximum(h, 0, out=h)
        return (h @ w2 + b2)[..., 0]

    def _identity_table(self):
        """(768, hidden): first-layer input of each pair's one-hot columns, plus the bias."""
        if self._table is None:
            mean, std = self.ranker_scaler
            m = feat.N_PAIR_MEASURES
            onehot = (feat.PAIR_ONEHOTS - mean[m:]) / std[m:]
            self._table = (onehot @ self.ranker[0][m:] + self.ranker[1]).astype(np.float32)
        return self._table

    def option_logits(self, scan_feats):
        """(N, P, 47) raw scan features -> (N, P, 16) logits over the options."""
        mean, std = self.scan_scaler
        return forward(self.scan, (scan_feats - mean) / std)[0]

    def rank(self, ws, timings=None, max_trials=16):
        """Everything the strategy needs for blocks of one size, from their workspaces.

        Returns (residuals int16 (N, 8, C, n) block-major (features.block_major), pairs
        (N, K) ranked best first, pair scores (N, K), option order (N, P, 16) best first
        and option log-probabilities (N, P, 16) in option-id order, for the first P pairs:
        those whose options the two rounds can reach with max_trials trials).
        """
        clock = trials.Clock(timings)
        ws = np.asarray(ws)
        h, w = ws.shape[2] - 1, ws.shape[3] - 2
        residuals, sad, nonzero = feat.block_residual_stats(ws)
        cand = feat.least_sad_pairs(sad, ws.shape[1], self.candidates)
        pair_feats = feat.pair_features(sad, nonzero, cand, w * h, identity=False)
        clock("features")
        scores = self.pair_scores(pair_feats, cand)
        order = np.argsort(-scores, axis=1, kind="stable")
        pairs = np.take_along_axis(cand, order, 1)
        scores = np.take_along_axis(scores, order, 1)
        clock("inference")
        reach = trials.option_pairs(*self.probe_shape(max_trials), max_trials,
                                    trials.distinct_options(w, h), pairs.shape[1])
        scan_feats = feat.pair_scan_features(residuals, pairs[:, :reach], w, h)
        clock("features")
        logits = self.option_logits(scan_feats)
        if not stages.is_full_block(w, h):
            # Edge blocks keep raster order for every reorder: only the interleave matters,
            # so only reorder 0's two options are ever tried.
            logits[..., stages.N_INTERLEAVES:] = -np.inf
        logp = logits - _logsumexp(logits)
        options = np.argsort(-logits, axis=2, kind="stable")
        clock("inference")
        return residuals, pairs, scores, options, logp

    # -- choosing configurations (the model interface) ---------------------------------

    def choose_image(self, samples, max_trials=16, progress=None, timings=None, details=False,
                     margins=None, chunk=2048, grid=None):
        """Configurations of all blocks of an image, at most max_trials trials each, the
        trials' bits from the exact cost model.

        Returns {"grid", "choices" (N, 5) = p, f, r, i, entropy, "bits" (N,), "trials"
        (N,)} in tlg8.image.block_grid order; details=True (or "trials": without "top2")
        adds "tried" (N, T, 4) in trial
        order (unused rows -1), "tried_bits", "tried_entropy" (N, T) and "top2" (N, 6, 2),
        each head's two best classes. timings (optional dict) accumulates seconds of
        "blocks", "features", "inference" and "trials". margins (of the beam search) do not
        apply and are ignored. grid: the blocks, in file order (default: block_grid of the
        image, the reference's tiles; tlg8.codec passes taller ones).
        """
        max_trials = trials.check_max_trials(max_trials)

        def select_batch(blocks):
            clock = trials.Clock(timings)
            ws = block_workspaces(samples, blocks)
            clock("blocks")
            return select_workspaces(ws, self, max_trials, timings, details)
        return trials.choose_in_batches(samples, grid, max_trials, details, chunk, progress,
                                        select_batch)

    def choose_block(self, features, try_encode_block, max_trials=16, margins=None):
        """One block (a workspace-v1 vector) through the caller's encoder: (config
        [p, f, r, i], bits, trials). The two rounds adapt to the measured bits; the beam
        search's margins do not apply and are ignored."""
        max_trials = trials.check_max_trials(max_trials)
        ws = feat.workspace_from_vector(self._check_features(features)[0])[None]
        _, pairs, _, options, _ = self.rank(ws, max_trials=max_trials)
        return trials.two_rounds_callback(
            pairs[0], options[0], *self.probe_shape(max_trials), max_trials,
            trials.distinct_options(ws.shape[3] - 2, ws.shape[2] - 1), try_encode_block)

    def choose_blocks(self, features, try_encode_block, max_trials=16, margins=None):
        """Many blocks given as workspace-v1 vectors (N, 363): one model pass per block size,
        then each block's two rounds through try_encode_block(block_index, p, f, r, i).

        Returns (configs int64 (N, 4), bits (N,), trials int64 (N,))."""
        max_trials = trials.check_max_trials(max_trials)
        x = self._check_features(features)
        configs = np.zeros((len(x), 4), np.int64)
        bits = [None] * len(x)
        counts = np.zeros(len(x), np.int64)
        for index, ws in self._groups(x):
            _, pairs, _, options, _ = self.rank(ws, max_trials=max_trials)
            distinct = trials.distinct_options(ws.shape[3] - 2, ws.shape[2] - 1)
            for k, i in enumerate(index.tolist()):
                configs[i], bits[i], counts[i] = trials.two_rounds_callback(
                    pairs[k], options[k], *self.probe_shape(max_trials), max_trials,
                    distinct, lambda *c, i=i: try_encode_block(i, *c))
        return configs, np.array(bits), counts

    # -- the guide's per-block API (features = workspace-v1 vectors) -------------------

    def image_features(self, samples, grid=None):
        """Raw features of an image's blocks: workspace-v1 vectors (N, 363)."""
        return feat.image_workspace_vectors(samples, grid)

    def _check_features(self, features):
        x = np.asarray(features, np.float32)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != feat.N_WORKSPACE_FEATURES:
            raise ValueError(f"features must have shape ({feat.N_WORKSPACE_FEATURES},) or "
                             f"(N, {feat.N_WORKSPACE_FEATURES}) (layout "
                             f"{feat.WORKSPACE_LAYOUT}), not {np.shape(features)}")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite numbers (no NaN or inf)")
        return x

    def _groups(self, x):
        """(block indices, workspaces) of the blocks of each size among vectors x."""
        keys = [tuple(int(v) for v in row) for row in x[:, :3]]
        for key in sorted(set(keys)):
            index = np.array([i for i, k in enumerate(keys) if k == key])
            yield index, np.stack([feat.workspace_from_vector(x[i]) for i in index])

    def head_log_proba(self, features):
        """{head name: log-probabilities (N, size)} of workspace-v1 features, derived from
        the ranking (head_log_proba)."""
        x = self._check_features(features)
        out = {name: np.full((len(x), size), -np.inf, np.float32) for name, size in HEADS}
        for index, ws in self._groups(x):
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

    predict_log_proba = predict_logits

    def topk_arrays(self, features, k=2):
        """{head name: (ids (N, k'), logprobs (N, k'))}, best first (ties: lower id)."""
        k = check_k(k)
        out = {}
        for name, part in self.head_log_proba(features).items():
            ids = np.argsort(-part, axis=1, kind="stable")[:, :min(k, part.shape[1])]
            out[name] = (ids, np.take_along_axis(part, ids, axis=1))
        return out

    def predict_topk(self, features, k=2):
        """Top-k classes of one block: {head name: [(class_id, logprob), ...]}."""
        x = self._check_features(features)
        if len(x) != 1:
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


def check_k(k):
    """k of a top-k call: a positive integer (ValueError otherwise)."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    return int(k)


def load(path):
    """Read a PairSelector NPZ; ModelFormatError (with the reason) for anything else."""
    with ModelFile(path) as f:
        if f.format != SELECTOR_FORMAT:
            raise f.error(f"model format {f.format!r}, not a pair selector ({SELECTOR_FORMAT})")
        layouts = (f.text("pair_feature_layout"), f.text("scan_feature_layout"))
        if layouts != (feat.PAIR_FEATURE_LAYOUT, feat.SCAN_FEATURE_LAYOUT):
            raise f.error(f"feature layouts {layouts} are not this version's "
                          f"{(feat.PAIR_FEATURE_LAYOUT, feat.SCAN_FEATURE_LAYOUT)}; "
                          f"re-train with train_multitask.py --selector")
        candidates, probe_pairs, probe_options = (int(v) for v in f.array("strategy", (3,),
                                                                           np.int64))
        if not (1 <= candidates <= feat.N_PAIRS and 1 <= probe_pairs <= candidates
                and 1 <= probe_options <= trials.N_OPTIONS):
            raise f.error(f"strategy ({candidates}, {probe_pairs}, {probe_options}) out of range")
        nets = []
        for name, n_in, n_out in (("ranker", feat.N_PAIR_FEATURES, 1),
                                  ("scan", feat.N_SCAN_FEATURES, trials.N_OPTIONS)):
            shape = f.shape(f"{name}_0")
            hidden = shape[1] if len(shape) == 2 else 0
            if not 1 <= hidden <= MAX_HIDDEN:
                raise f.error(f"{name} has {hidden} hidden units (1..{MAX_HIDDEN})")
            w1 = f.array(f"{name}_0", (n_in, hidden))
            nets.append([w1, f.array(f"{name}_1", (hidden,)),
                         f.array(f"{name}_2", (hidden, n_out)), f.array(f"{name}_3", (n_out,))])
            scaler = f.array(f"{name}_scaler", (2, n_in))
            if not (scaler[1] > 0).all():
                raise f.error(f"{name}_scaler has a standard deviation <= 0")
            nets[-1] = (nets[-1], scaler)
        metadata = f.json("metadata") if "metadata" in f.files else {}
    (ranker, ranker_scaler), (scan, scan_scaler) = nets
    return PairSelector(ranker, ranker_scaler, scan, scan_scaler, candidates, probe_pairs,
                        probe_options, metadata if isinstance(metadata, dict) else {})


@functools.lru_cache(maxsize=1)
def default_model():
    """The shipped selector (DEFAULT_MODEL), loaded once per process."""
    return load(DEFAULT_MODEL)


def head_log_proba(pairs, scores, option_logp):
    """The six heads' log-probabilities (N, size) from a ranking (PairSelector.rank): the
    pair heads are the ranker's softmax over its candidates summed per class; reorder and
    interleave are marginals of the joint (pair, option) distribution over the P pairs
    that have option log-probabilities (the ranker's softmax renormalised over them x the
    scan model's). The marginal agrees with the reference more often than the first pair's
    options alone (held-out img3: reorder two_choice 0.481 against 0.458)."""
    n = len(pairs)
    pair_logp = scores - _logsumexp(scores)                               # (N, K)
    perm, primary, secondary = stages.split_filter_code(pairs % stages.N_FILTERS)
    values = (pairs // stages.N_FILTERS, perm, primary, secondary)
    out = {}
    weights = np.exp(pair_logp).ravel()
    rows = np.arange(n)[:, None]
    for (name, size), value in zip(HEADS[:4], values):
        # Per block and class, the sum of its pairs' probabilities (bincount: one pass,
        # in the order np.add.at would add them, many times faster).
        prob = np.bincount((rows * size + value).ravel(), weights, n * size).reshape(n, size)
        with np.errstate(divide="ignore"):
            out[name] = np.log(prob).astype(np.float32)
    reach = option_logp.shape[1]
    joint = (scores[:, :reach] - _logsumexp(scores[:, :reach]))[..., None] + option_logp
    options = _logsumexp(np.swapaxes(joint, 1, 2))[..., 0]                 # (N, 16)
    top = options.reshape(n, stages.N_REORDERS, stages.N_INTERLEAVES)
    out["head_reorder"] = _logsumexp(top)[..., 0].astype(np.float32)
    out["head_interleave"] = _logsumexp(np.swapaxes(top, 1, 2))[..., 0].astype(np.float32)
    return out


def _logsumexp(z):
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        return m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def select_workspaces(ws, model, max_trials=16, timings=None, details=False, evaluate=None):
    """The two rounds for blocks of one size (workspaces ws), at most max_trials each.

    evaluate(residuals, configs (N, T, 4)) -> (bits, entropy) (N, T) defaults to the exact
    cost model (tlg8.cost.block_configs_bits). Returns {"choices" (N, 5), "bits",
    "trials"}; details=True adds "tried", "tried_bits", "tried_entropy", "top2" and the
    ranking "pairs" (N, K), "pair_scores", "option_logp" (N, P, 16); details="trials" the
    tried ones only (what the file-bytes pass reads).
    """
    max_trials = trials.check_max_trials(max_trials)
    ws = np.asarray(ws)
    h, w = ws.shape[2] - 1, ws.shape[3] - 2
    residuals, pairs, scores, options, logp = model.rank(ws, timings, max_trials)
    evaluate = evaluate or (lambda res, configs: cost.block_configs_bits(res, configs, w, h))
    clock = trials.Clock(timings)
    tried, bits, entropy = trials.two_rounds(
        pairs, options, *model.probe_shape(max_trials), max_trials,
        trials.distinct_options(w, h), lambda configs: evaluate(residuals, configs))
    clock("trials")
    choices, chosen_bits = trials.pick_fewest(tried, bits, entropy)
    out = {"choices": choices, "bits": chosen_bits,
           "trials": np.full(len(ws), tried.shape[1], np.int64)}
    if details:
        out.update(tried=tried, tried_bits=bits, tried_entropy=entropy)
    if details and details != "trials":
        heads = head_log_proba(pairs, scores, logp)
        out.update(top2=top2_of_scores(heads), pairs=pairs, pair_scores=scores,
                   option_logp=logp)
    return out
