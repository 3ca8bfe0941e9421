"""Trials: which configurations a strategy tries for a block, and which one it keeps.

The one place for what every selection strategy (learned or not) shares:

* ids: pair = predictor * 96 + filter, option = reorder * 2 + interleave (`config_of`);
* how many options differ in bits (`distinct_options`: edge blocks keep raster order);
* the cap (`check_max_trials`) and the encoder callback's result (`check_bits`);
* the rule that keeps a trial: fewest bits, the earlier trial on a tie (`pick_fewest`,
  `run_callback`);
* the model-free plans: `pair_major_plan` and the two rounds (`round_one`, `round_two`,
  `two_rounds`, `two_rounds_callback`) that the pair selector runs with its learned
  ranking and the "sad-adaptive" baseline with a fixed one (`baseline_trials`).
"""
import math
import numbers
import time

import numpy as np

from . import Tlg8Error, cost, stages
from . import features as feat
from .heads import HEADS
from .image import block_batches, block_grid

N_OPTIONS = stages.N_REORDERS * stages.N_INTERLEAVES
# A fixed option order (option ids) for the sad baselines: options by how often they are
# the best option of the best pair, counted once on training photos (dko_s, dko_t, img1
# exhaustive tables; bench/exhaustive_tables.py). A constant, not a model.
STATIC_OPTION_ORDER = (1, 0, 7, 6, 3, 2, 9, 8, 5, 4, 13, 15, 11, 12, 14, 10)
BASELINES = ("sse-top1", "sad-top1", "sad-adaptive")
# sad-adaptive: 4 least-absolute pairs x 2 options in round one, from 8 ranked pairs.
SAD_ROUNDS = {"pairs": 8, "probe_pairs": 4, "probe_options": 2}


class TrialError(Tlg8Error, ValueError):
    """An encoder callback returned something that is not a number of bits."""


def config_of(pair, option):
    """(predictor, filter, reorder, interleave) arrays (..., 4) from pair and option ids."""
    pair, option = np.broadcast_arrays(np.asarray(pair), np.asarray(option))
    return np.stack([pair // stages.N_FILTERS, pair % stages.N_FILTERS,
                     option // stages.N_INTERLEAVES, option % stages.N_INTERLEAVES], axis=-1)


def distinct_options(w, h):
    """Options per pair that differ in bits: 16, or 2 for edge blocks, whose reorders all
    keep raster order (so only reorder 0's two options are worth a trial)."""
    return N_OPTIONS if stages.is_full_block(w, h) else stages.N_INTERLEAVES


def option_order(distinct):
    """STATIC_OPTION_ORDER with the options an edge block can use first."""
    order = list(STATIC_OPTION_ORDER)
    return np.array([o for o in order if o < distinct] + [o for o in order if o >= distinct])


def check_max_trials(max_trials):
    """max_trials as an int; a clear ValueError unless it is a positive integer."""
    if isinstance(max_trials, (bool, np.bool_)) or not isinstance(max_trials, numbers.Integral) \
            or max_trials < 1:
        raise ValueError(f"max_trials must be a positive integer, not {max_trials!r}")
    return int(max_trials)


def check_bits(bits, config):
    """The callback's result for `config`, checked: a finite number >= 0 (Python or NumPy,
    a 0-d array too), else TrialError naming the trial."""
    value = bits[()] if isinstance(bits, np.ndarray) and bits.ndim == 0 else bits
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or value < 0:
        raise TrialError(f"try_encode_block{tuple(int(c) for c in config)} returned {bits!r}; "
                         f"it must return the block's bits, a finite number >= 0")
    return value


def pick_fewest(configs, bits, entropy):
    """The kept trial of each block: fewest bits, the earlier trial on a tie.

    configs (N, T, 4), bits and entropy (N, T). Returns (choices int64 (N, 5) = configs +
    entropy, bits (N,))."""
    rows = np.arange(len(bits))
    j = np.argmin(bits, axis=1)                 # argmin returns the first minimum
    return (np.concatenate([configs[rows, j], entropy[rows, j][:, None]], axis=1).astype(np.int64),
            bits[rows, j])


def run_callback(configs, try_encode_block, max_trials, tried):
    """Try configs (rows p, f, r, i) through the callback, never past max_trials trials in
    `tried` (a list of (config, bits) that grows). Returns the new bits."""
    out = []
    for config in np.asarray(configs).tolist():
        if len(tried) >= max_trials:            # the cap is enforced, not only planned
            break
        bits = check_bits(try_encode_block(*config), config)
        tried.append((config, bits))
        out.append(bits)
    return out


def fewest_of(tried):
    """(config, bits) of the kept trial among [(config, bits), ...] in trial order."""
    best = min(range(len(tried)), key=lambda k: (tried[k][1], k))
    return tried[best]


# ---------------------------------------------------------------------------------------
# Plans


def pair_major_plan(pair_order, options, max_trials, distinct):
    """Configs (N, T, 4): pairs in order, each with its first `distinct` options of
    `options` (16,), cut at max_trials."""
    n_blocks = len(pair_order)
    n_pairs = min(pair_order.shape[1], -(-max_trials // distinct))
    pairs = np.repeat(pair_order[:, :n_pairs], distinct, axis=1)[:, :max_trials]
    opts = np.tile(np.asarray(options)[:distinct], n_pairs)[:max_trials]
    return config_of(pairs, np.broadcast_to(opts, pairs.shape)).reshape(n_blocks, -1, 4)


def probe_shape(probe_pairs, probe_options, max_trials):
    """The (probe pairs, probe options) the two rounds use under a trial cap: a model's own
    when its round one fits the cap; below that, one option for each of the first
    ceil(5/8 cap) pairs and the rest of the cap for round two. Cutting the pairs of round
    one instead leaves round two nothing: on photos held out from training (pair selector
    32:6:2, bench/bench_guide_path.py) 8 trials as 5x1 + 3 gave +0.268 % extra bits
    against +0.328 % as 4x2, 4 trials as 3x1 + 1 +0.576 % against +0.627 % as 2x2."""
    if probe_pairs * probe_options <= max_trials:
        return probe_pairs, probe_options
    return min(probe_pairs, -(-5 * max_trials // 8)), 1


def round_one_shape(probe_pairs, probe_options, max_trials, distinct, available):
    """(pairs, options per pair) of round one: the strategy's parameters, cut so that
    pairs x options <= max_trials (the cap wins) and pairs <= the `available` ones."""
    n_pairs = min(probe_pairs, available)
    n_opts = min(probe_options, distinct)
    while n_pairs * n_opts > max_trials:
        if n_pairs > 1:
            n_pairs -= 1
        else:
            n_opts -= 1
    return n_pairs, n_opts


def option_pairs(probe_pairs, probe_options, max_trials, distinct, available):
    """How many of the ranked pairs the two rounds can try options of: the probed ones
    and, when the best probed pair runs out of untried options (edge blocks), the next."""
    n_pairs, n_opts = round_one_shape(probe_pairs, probe_options, max_trials, distinct,
                                      available)
    left = max_trials - n_pairs * n_opts - (distinct - n_opts)
    return min(available, n_pairs + max(0, -(-left // distinct)))


def round_one(pairs, options, probe_pairs, probe_options, max_trials, distinct=N_OPTIONS):
    """Round-1 trials: (N, T1, 4) configs, the first probe_pairs pairs x their first
    probe_options options, pair-major; T1 <= max_trials.

    pairs (N, K) ranked best first; options (N, P, 16) each pair's options best first."""
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


def two_rounds(pairs, options, probe_pairs, probe_options, max_trials, distinct, evaluate):
    """Both rounds for blocks of one size, batched: evaluate(configs (N, T, 4)) -> (bits,
    entropy) (N, T). Returns (tried (N, T, 4) in trial order, bits, entropy), T <= max_trials."""
    first, n_pairs, n_opts = round_one(pairs, options, probe_pairs, probe_options, max_trials,
                                       distinct)
    bits1, ent1 = evaluate(first)
    measured = bits1.reshape(len(pairs), n_pairs, n_opts).min(axis=2)
    second = round_two(pairs, options, measured, n_pairs, n_opts, max_trials - first.shape[1],
                       distinct)
    if not second.shape[1]:
        return first, bits1, ent1
    bits2, ent2 = evaluate(second)
    return (np.concatenate([first, second], 1), np.concatenate([bits1, bits2], 1),
            np.concatenate([ent1, ent2], 1))


def two_rounds_callback(pairs, options, probe_pairs, probe_options, max_trials, distinct,
                        try_encode_block):
    """Both rounds of one block (pairs (K,), options (P, 16)) through the caller's encoder.
    Returns (config list (p, f, r, i), bits, trials)."""
    pairs, options = pairs[None], options[None]
    first, n_pairs, n_opts = round_one(pairs, options, probe_pairs, probe_options, max_trials,
                                       distinct)
    tried = []
    bits1 = run_callback(first[0], try_encode_block, max_trials, tried)
    measured = np.array(bits1, np.float64).reshape(1, n_pairs, n_opts).min(axis=2)
    run_callback(round_two(pairs, options, measured, n_pairs, n_opts, max_trials - len(tried),
                           distinct)[0], try_encode_block, max_trials, tried)
    config, bits = fewest_of(tried)
    return config, bits, len(tried)


def empty_selection(n, max_trials, details):
    """Whole-image result arrays of a model's choose_image (unused trial rows: config -1,
    bits the int64 maximum); `grid` is added by the caller. details: False, True or
    "trials" (the tried configurations without the heads' "top2")."""
    out = {"choices": np.zeros((n, 5), np.int64), "bits": np.zeros(n, np.int64),
           "trials": np.zeros(n, np.int64)}
    if details:
        out.update(tried=np.full((n, max_trials, 4), -1, np.int64),
                   tried_bits=np.full((n, max_trials), np.iinfo(np.int64).max, np.int64),
                   tried_entropy=np.zeros((n, max_trials), np.int64))
    if details and details != "trials":
        out.update(top2=np.zeros((n, len(HEADS), 2), np.int64))
    return out


def choose_in_batches(samples, grid, max_trials, details, chunk, progress, select_batch):
    """A model's choose_image: select_batch(blocks of grid) -> that batch's selection, for
    each batch of blocks of one size (tlg8.image.block_batches, at most `chunk`), gathered
    into empty_selection arrays with "grid" (default: block_grid of the image, the
    reference's tiles); progress(number of blocks) after each batch."""
    if grid is None:
        grid = block_grid(samples.shape[1], samples.shape[0])
    out = empty_selection(len(grid), max_trials, details)
    for part in block_batches(grid, chunk):
        store_selection(out, part, select_batch(grid[part]))
        if progress:
            progress(len(part))
    out["grid"] = grid
    return out


def store_selection(out, part, sel):
    """Put one batch's results (blocks `part`) into empty_selection arrays; keys the batch
    has and the arrays do not (a model reporting more than asked) are left out."""
    for key, value in out.items():
        if key in ("tried", "tried_bits", "tried_entropy"):
            value[part, :sel[key].shape[1]] = sel[key]
        else:
            value[part] = sel[key]


# ---------------------------------------------------------------------------------------
# Model-free baselines


def _sorted_pairs(values):
    """Pair ids (N, 768) by values ascending, ties to the lower id (stable)."""
    return np.argsort(values.reshape(len(values), -1), axis=1, kind="stable")


def baseline_trials(ws, max_trials, timings=None):
    """{name: (tried (N, T, 4), bits, entropy)} of the non-ML BASELINES on blocks of one
    size, each with at most max_trials trials. timings: optional {name: Clock timings}.

    sse-top1 / sad-top1: the pair with the least squared / absolute filtered residual x its
    options in STATIC_OPTION_ORDER (then the next pairs while the cap allows); sad-adaptive:
    the two rounds with the absolute-residual ranking and the static option order."""
    timings = timings or {}
    h, w = ws.shape[2] - 1, ws.shape[3] - 2
    distinct = distinct_options(w, h)
    clock = Clock(timings.get("sse-top1"))
    res = stages.all_residuals(ws)
    from . import search
    _, e_pair = search.pair_energies(res, search.filter_candidates(res))
    sse_order = _sorted_pairs(e_pair)
    clock("features")
    planes, sad, _ = feat.block_stats(ws)
    sad_order = _sorted_pairs(feat.pair_proxy(sad, ws.shape[1]))
    residuals = feat.block_major(planes)
    for name in ("sad-top1", "sad-adaptive"):
        Clock(timings.get(name)).add("features", clock.since())

    def evaluate(configs):
        return cost.block_configs_bits(residuals, configs, w, h)

    options = option_order(distinct)
    out = {}
    for name, order in (("sse-top1", sse_order), ("sad-top1", sad_order)):
        clock = Clock(timings.get(name))
        plan = pair_major_plan(order, options, max_trials, distinct)
        out[name] = (plan,) + evaluate(plan)
        clock("trials")
    clock = Clock(timings.get("sad-adaptive"))
    ranked = sad_order[:, :SAD_ROUNDS["pairs"]]
    out["sad-adaptive"] = two_rounds(
        ranked, np.broadcast_to(options, ranked.shape + (N_OPTIONS,)),
        SAD_ROUNDS["probe_pairs"], SAD_ROUNDS["probe_options"], max_trials, distinct, evaluate)
    clock("trials")
    return out


class Clock:
    """Adds the wall time since the previous call to timings[name] (no-op without a dict):
    how the strategies report their "blocks", "features", "inference" and "trials" time."""

    def __init__(self, timings):
        self.timings = timings
        self.last = time.perf_counter()

    def since(self):
        return time.perf_counter() - self.last

    def add(self, name, seconds):
        if self.timings is not None:
            self.timings[name] = self.timings.get(name, 0.0) + seconds

    def __call__(self, name):
        now = time.perf_counter()
        self.add(name, now - self.last)
        self.last = now
