"""The guide's runtime: choose each block's configuration with few encoder trials.

    cfg, bits = select_block_config(features, model, try_encode_block)

`select_block_config` (one block), `select_block_configs` (many blocks, one model call)
and `encode_choices` (a whole image, the cost model as the encoder) work with any model of
the model interface (docs/architecture.md): each model runs its own trial strategy through
`choose_block`, `choose_blocks`, `choose_image`, never more than `max_trials` trials, and
the trial with the fewest bits wins (the earlier one on a tie).

The strategy of per-head models (the multitask MLP) is the margin beam search defined here:
for every phase the model's top-2 classes are kept unless the top-1 leads by more than the
phase's margin (in log-probability); the filter phase takes up to 4 codes from
`build_filter_candidates`; the combinations are tried best-first (summed log-probability).
The pair selector (tlg8.selector) runs its two rounds instead; margins do not apply to it.
"""
import numpy as np

from tlg8 import cost, trials
from tlg8.heads import HEAD_NAMES, top2_array
from tlg8.image import block_workspaces
from tlg8.stages import filter_code

from . import loader

CONFIG_FIELDS = ("predictor", "filter", "reorder", "interleave")
MAX_FILTER_CANDIDATES = 4
DEFAULT_MARGINS = {"reorder": 0.5, "interleave": 0.5, "predictor": 0.3}



def filter_candidate_arrays(topk, max_candidates=4):
    """Filter codes from the perm/primary/secondary top candidates of many blocks.

    topk: topk_arrays output (only the three filter heads are used). Every combination
    perm x primary x secondary is scored by its summed log-probability; the best
    `max_candidates` are returned as (codes int64 (N, M), logprobs float32 (N, M)), best
    first. Ties keep the combination of better-ranked parts first.
    """
    (pi, pl), (qi, ql), (si, sl) = (topk[n] for n in HEAD_NAMES[1:4])
    n = len(pi)
    codes = filter_code(pi[:, :, None, None], qi[:, None, :, None], si[:, None, None, :])
    scores = pl[:, :, None, None] + ql[:, None, :, None] + sl[:, None, None, :]
    codes = codes.reshape(n, -1)
    scores = scores.reshape(n, -1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :max_candidates]
    return np.take_along_axis(codes, order, 1), np.take_along_axis(scores, order, 1)


def build_filter_candidates(topk, max_candidates=4):
    """Filter candidates of one block from predict_topk output: at most `max_candidates`
    [(filter_code, logprob), ...], best first; code = perm << 4 | primary << 2 | secondary."""
    arrays = {name: (np.array([[i for i, _ in topk[name]]]), np.array([[lp for _, lp in topk[name]]]))
              for name in HEAD_NAMES[1:4]}
    codes, scores = filter_candidate_arrays(arrays, max_candidates)
    return [(int(c), float(s)) for c, s in zip(codes[0], scores[0])]


def _margins(margins):
    out = dict(DEFAULT_MARGINS)
    out.update(margins or {})
    return out


def _kept(ids, logprobs, margin):
    """(ids (N, 2), logprobs, keep (N, 2)): the top-2 unless top-1 leads by more than margin."""
    keep = np.ones(ids.shape, bool)
    if ids.shape[1] > 1:
        keep[:, 1] = ~(logprobs[:, 0] - logprobs[:, 1] > margin)
    return ids, logprobs, keep


def plan_trials(features, model, margin_reorder=0.5, margin_interleave=0.5,
                margin_predictor=0.3, max_trials=16):
    """The beam's trials of many blocks, best first, from one model call.

    features: raw features (N, F) (or one block (F,)). Returns (configs int64 (N, T, 4)
    with rows predictor, filter, reorder, interleave; scores float32 (N, T) summed
    log-probabilities; counts int64 (N,) trials per block). T <= max_trials; rows past a
    block's count are -1.
    """
    return _plan(model, features, {"reorder": margin_reorder, "interleave": margin_interleave,
                                   "predictor": margin_predictor}, max_trials)[:3]


def _plan(model, features, margins, max_trials):
    """plan_trials, plus the model's per-head top-k (for metrics, without a second call)."""
    max_trials = trials.check_max_trials(max_trials)
    margins = _margins(margins)
    features = np.asarray(features, np.float32)
    if features.ndim == 1:
        features = features[None]
    topk = model.topk_arrays(features, k=2)
    phases = [
        _kept(*topk["head_predictor"], margins["predictor"]),
        None,
        _kept(*topk["head_reorder"], margins["reorder"]),
        _kept(*topk["head_interleave"], margins["interleave"]),
    ]
    codes, code_lp = filter_candidate_arrays(topk, MAX_FILTER_CANDIDATES)
    phases[1] = (codes, code_lp, np.ones(codes.shape, bool))
    n = len(features)
    # All combinations, enumerated in rank order (predictor rank major): a stable sort by
    # score then keeps the better-ranked combination first on ties.
    shape = [n] + [ids.shape[1] for ids, _, _ in phases]
    ids = np.empty(shape + [4], np.int64)
    score = np.zeros(shape, np.float32)
    valid = np.ones(shape, bool)
    for axis, (phase_ids, phase_lp, keep) in enumerate(phases):
        view = [n] + [1] * 4
        view[axis + 1] = phase_ids.shape[1]
        ids[..., axis] = phase_ids.reshape(view)
        score += phase_lp.reshape(view)
        valid &= keep.reshape(view)
    ids = ids.reshape(n, -1, 4)
    score = np.where(valid, score, -np.inf).reshape(n, -1)
    counts = np.minimum(valid.reshape(n, -1).sum(axis=1), max_trials)
    order = np.argsort(-score, axis=1, kind="stable")[:, :max_trials]
    configs = np.take_along_axis(ids, order[:, :, None], axis=1)
    scores = np.take_along_axis(score, order, axis=1)
    unused = np.arange(order.shape[1]) >= counts[:, None]
    configs[unused] = -1
    scores[unused] = -np.inf
    return configs, scores, counts, topk


# ---------------------------------------------------------------------------------------
# The beam as the model interface of per-head models (MultiTaskModel.choose_*)


def choose_block(model, features, try_encode_block, max_trials=16, margins=None):
    features = np.asarray(features, np.float32)
    if features.ndim == 2 and len(features) != 1:
        raise ValueError(f"select_block_config takes one block, not {len(features)}; use "
                         f"select_block_configs for a batch")
    max_trials = trials.check_max_trials(max_trials)
    configs, _, counts, _ = _plan(model, features, margins, max_trials)
    tried = []
    trials.run_callback(configs[0, :counts[0]], try_encode_block, max_trials, tried)
    config, bits = trials.fewest_of(tried)
    return config, bits, len(tried)


def choose_blocks(model, features, try_encode_block, max_trials=16, margins=None):
    max_trials = trials.check_max_trials(max_trials)
    configs, _, counts, _ = _plan(model, features, margins, max_trials)
    chosen = np.empty((len(configs), 4), np.int64)
    bits = []
    for i, (block_configs, count) in enumerate(zip(configs, counts.tolist())):
        tried = []
        trials.run_callback(block_configs[:count], lambda *c, i=i: try_encode_block(i, *c),
                            max_trials, tried)
        chosen[i], b = trials.fewest_of(tried)
        bits.append(b)
    return chosen, np.array(bits), counts


def choose_image(model, samples, max_trials=16, progress=None, timings=None, details=False,
                 margins=None, chunk=1024, grid=None):
    """All blocks of an image: the beam's plans from one model call per chunk, the trials
    of many blocks evaluated together by the cost model (tlg8.cost.configs_bits).
    grid: the blocks in file order (default: the reference's tiles). Returns the dict of
    tlg8.selector.PairSelector.choose_image."""
    max_trials = trials.check_max_trials(max_trials)

    def select_batch(blocks):
        clock = trials.Clock(timings)
        x = model.image_features(samples, blocks)
        clock("features")
        configs, _, counts, topk = _plan(model, x, margins, max_trials)
        clock("inference")
        unused = configs[:, :, 0] < 0
        # Unused plan rows repeat the first trial so the batch stays rectangular; their
        # bits are then ignored.
        filled = np.where(unused[:, :, None], configs[:, :1], configs)
        bits, entropy = cost.configs_bits(block_workspaces(samples, blocks), filled)
        bits[unused] = np.iinfo(np.int64).max
        clock("trials")
        choices, chosen_bits = trials.pick_fewest(configs, bits, entropy)
        return {"choices": choices, "bits": chosen_bits, "trials": counts, "tried": configs,
                "tried_bits": bits, "tried_entropy": entropy, "top2": top2_array(topk)}
    return trials.choose_in_batches(samples, grid, max_trials, details, chunk, progress,
                                    select_batch)


# ---------------------------------------------------------------------------------------
# The guide's functions: any model


def select_block_config(features, model, try_encode_block, margin_reorder=0.5,
                        margin_interleave=0.5, margin_predictor=0.3, max_trials=16):
    """The configuration of one block with the fewest bits among at most max_trials trials.

    features: the block's raw features (F,) or (1, F) in the model's layout
    (model.image_features); model: a loaded model (MultiTaskModel.load);
    try_encode_block(predictor, filter_code, reorder, interleave) -> bits.
    Returns (cfg, bits): cfg = {"predictor", "filter", "reorder", "interleave"} as ints.
    """
    config, bits, _ = model.choose_block(
        features, try_encode_block, max_trials,
        {"reorder": margin_reorder, "interleave": margin_interleave,
         "predictor": margin_predictor})
    return dict(zip(CONFIG_FIELDS, (int(c) for c in config))), bits


def select_block_configs(features, model, try_encode_block, margin_reorder=0.5,
                         margin_interleave=0.5, margin_predictor=0.3, max_trials=16):
    """select_block_config for many blocks with one model call.

    features: (N, F); try_encode_block(block_index, predictor, filter_code, reorder,
    interleave) -> bits. Returns (configs int64 (N, 4), bits (N,), trials int64 (N,)).
    """
    return model.choose_blocks(features, try_encode_block, max_trials,
                               {"reorder": margin_reorder, "interleave": margin_interleave,
                                "predictor": margin_predictor})


def encode_choices(samples, model, max_trials=16, progress=None, margin_reorder=0.5,
                   margin_interleave=0.5, margin_predictor=0.3):
    """Configurations of all blocks of an image, with the cost model as the encoder.

    samples: (H, W, C) uint8 from tlg8.image.read_image; model: a loaded model or the path
    of its NPZ. Returns (choices int64 (N, 5) = predictor, filter, reorder, interleave,
    entropy; bits int64 (N,); trials int64 (N,)) in tlg8.image.block_grid order.
    progress: optional callable(number of blocks just finished).
    """
    if not hasattr(model, "choose_image"):
        model = loader.load_model(model)
    margins = {"reorder": margin_reorder, "interleave": margin_interleave,
               "predictor": margin_predictor}
    sel = model.choose_image(samples, max_trials, progress=progress, margins=margins)
    return sel["choices"], sel["bits"], sel["trials"]
