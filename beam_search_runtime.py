"""Choose each block's configuration from the model's top candidates with few encoder trials.

For every phase the model's top-2 classes are kept unless the top-1 leads by more than the
phase's margin (in log-probability); the filter phase takes up to 4 codes from
`build_filter_candidates`. The combinations are tried best-first (summed log-probability)
through the caller's encoder, never more than `max_trials` of them, and the one with the
fewest bits wins (the earlier trial on a tie).

    cfg, bits = select_block_config(features, model, try_encode_block)

`select_block_configs` does the same for many blocks with one model call, and
`encode_choices` does it for a whole image with the cost model of tlg8.cost as the encoder.

Given a pair selector (pair_selector.PairSelector, what MultiTaskModel.load returns for an
NPZ from train_multitask.py --selector) the same three functions run its strategy instead:
rank the (predictor, filter) pairs from cost-model statistics, probe the first pairs with
their likeliest (reorder, interleave), then spend the rest of the trials on the pair that
measured best (pair_selector.py). The margins do not apply to it; the cap does, as hard.
Its features are workspace-v1 vectors (model.image_features, tlg8.features).
"""
import math
import numbers

import numpy as np

import multitask_model as mm
from tlg8 import features as tlg8_features
import pair_selector

CONFIG_FIELDS = ("predictor", "filter", "reorder", "interleave")
MAX_FILTER_CANDIDATES = 4


def _check_max_trials(max_trials):
    if isinstance(max_trials, bool) or not isinstance(max_trials, numbers.Integral) or max_trials < 1:
        raise ValueError(f"max_trials must be a positive integer, not {max_trials!r}")
    return int(max_trials)


def _kept(ids, logprobs, margin):
    """(ids (N, 2), logprobs, keep (N, 2)): the top-2 unless top-1 leads by more than margin."""
    keep = np.ones(ids.shape, bool)
    if ids.shape[1] > 1:
        keep[:, 1] = ~(logprobs[:, 0] - logprobs[:, 1] > margin)
    return ids, logprobs, keep


def plan_trials(features, model, margin_reorder=0.5, margin_interleave=0.5,
                margin_predictor=0.3, max_trials=16):
    """The trials of many blocks, best first, from one model call.

    features: raw features (N, F) (or one block (F,)). Returns (configs int64 (N, T, 4)
    with rows predictor, filter, reorder, interleave; scores float32 (N, T) summed
    log-probabilities; counts int64 (N,) trials per block). T <= max_trials; rows past a
    block's count are -1.
    """
    max_trials = _check_max_trials(max_trials)
    if isinstance(model, pair_selector.PairSelector):
        raise TypeError("a pair selector plans its trials from the bits of the first ones; "
                        "use select_block_config(s) or encode_choices")
    features = np.asarray(features, np.float32)
    if features.ndim == 1:
        features = features[None]
    topk = model.topk_arrays(features, k=2)
    phases = [
        _kept(*topk["head_predictor"], margin_predictor),
        None,
        _kept(*topk["head_reorder"], margin_reorder),
        _kept(*topk["head_interleave"], margin_interleave),
    ]
    codes, code_lp = mm.filter_candidate_arrays(topk, MAX_FILTER_CANDIDATES)
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
    return configs, scores, counts


def _bits_value(bits, config):
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, numbers.Real) or \
            (isinstance(bits, float) and math.isnan(bits)):
        raise TypeError(f"try_encode_block{tuple(config)} returned {bits!r}; it must return "
                        f"the number of bits")
    return bits


def _checked(encode):
    """encode, with its results checked like _run_trials does."""
    return lambda *config: _bits_value(encode(*config), config)


def _run_trials(configs, count, encode):
    best_cfg, best_bits = None, None
    for config in configs[:count].tolist():
        bits = _bits_value(encode(*config), config)
        if best_bits is None or bits < best_bits:
            best_cfg, best_bits = config, bits
    return best_cfg, best_bits


def select_block_config(features, model, try_encode_block, margin_reorder=0.5,
                        margin_interleave=0.5, margin_predictor=0.3, max_trials=16):
    """The configuration of one block with the fewest bits among at most max_trials trials.

    features: the block's raw features (F,) or (1, F); model: a MultiTaskModel;
    try_encode_block(predictor, filter_code, reorder, interleave) -> bits.
    Returns (cfg, bits): cfg = {"predictor", "filter", "reorder", "interleave"} as ints.
    """
    features = np.asarray(features, np.float32)
    if features.ndim == 2 and len(features) != 1:
        raise ValueError(f"select_block_config takes one block, not {len(features)}; use "
                         f"select_block_configs for a batch")
    if isinstance(model, pair_selector.PairSelector):
        ws = tlg8_features.workspace_from_vector(features)
        config, bits, _ = pair_selector.select_one(ws, model, _checked(try_encode_block),
                                                   _check_max_trials(max_trials))
        return dict(zip(CONFIG_FIELDS, config)), bits
    configs, _, counts = plan_trials(features, model, margin_reorder, margin_interleave,
                                     margin_predictor, max_trials)
    config, bits = _run_trials(configs[0], counts[0], try_encode_block)
    return dict(zip(CONFIG_FIELDS, config)), bits


def select_block_configs(features, model, try_encode_block, margin_reorder=0.5,
                         margin_interleave=0.5, margin_predictor=0.3, max_trials=16):
    """select_block_config for many blocks with one model call.

    features: (N, F); try_encode_block(block_index, predictor, filter_code, reorder,
    interleave) -> bits. Returns (configs int64 (N, 4), bits (N,), trials int64 (N,)).
    """
    if isinstance(model, pair_selector.PairSelector):
        return pair_selector.select_with_callback(
            features, model, lambda i, *c: _bits_value(try_encode_block(i, *c), c),
            _check_max_trials(max_trials))
    configs, _, counts = plan_trials(features, model, margin_reorder, margin_interleave,
                                     margin_predictor, max_trials)
    chosen = np.empty((len(configs), 4), np.int64)
    bits = []
    for i, (block_configs, count) in enumerate(zip(configs, counts.tolist())):
        config, b = _run_trials(block_configs, count,
                                lambda *cfg, i=i: try_encode_block(i, *cfg))
        chosen[i] = config
        bits.append(b)
    return chosen, np.array(bits), counts


def encode_choices(samples, model, max_trials=16, progress=None, margin_reorder=0.5,
                   margin_interleave=0.5, margin_predictor=0.3, chunk=1024):
    """Configurations of all blocks of an image, with the cost model as the encoder.

    samples: (H, W, C) uint8 from tlg8.image.read_image; model: a MultiTaskModel or the
    path of its NPZ. The trials of many blocks are evaluated together (tlg8.cost.
    configs_bits), each block's plan being at most max_trials configurations.
    Returns (choices int64 (N, 5) = predictor, filter, reorder, interleave, entropy;
    bits int64 (N,); trials int64 (N,)) in tlg8.image.block_grid order.
    progress: optional callable(number of blocks just finished).
    """
    from tlg8.cost import configs_bits
    from tlg8.image import block_batches, block_grid, block_workspaces

    if not isinstance(model, (mm.MultiTaskModel, pair_selector.PairSelector)):
        model = mm.MultiTaskModel.load(model)
    if isinstance(model, pair_selector.PairSelector):
        _, choices, bits, trials = pair_selector.select_image(
            samples, model, _check_max_trials(max_trials), progress=progress)
        return choices, bits, trials
    grid = block_grid(samples.shape[1], samples.shape[0])
    configs, _, counts = plan_trials(model.image_features(samples, grid), model, margin_reorder,
                                     margin_interleave, margin_predictor, max_trials)
    choices = np.empty((len(grid), 5), np.int64)
    bits = np.empty(len(grid), np.int64)
    for part in block_batches(grid, chunk):
        cfg = configs[part]
        unused = cfg[:, :, 0] < 0
        # Unused plan rows repeat the first trial so the batch stays rectangular; their
        # bits are then ignored.
        filled = np.where(unused[:, :, None], cfg[:, :1], cfg)
        b, entropy = configs_bits(block_workspaces(samples, grid[part]), filled)
        b[unused] = np.iinfo(np.int64).max
        j = np.argmin(b, axis=1)                    # first minimum = earlier trial
        rows = np.arange(len(part))
        choices[part, :4] = cfg[rows, j]
        choices[part, 4] = entropy[rows, j]
        bits[part] = b[rows, j]
        if progress:
            progress(len(part))
    return choices, bits, counts
