"""The six per-field classes ("heads") of a block configuration, and their metrics.

A configuration (predictor, filter, reorder, interleave) is read as six classes: the
predictor, the filter code's three parts (stages.split_filter_code) and the two scan
options. Every model reports per-head ranked classes in this table's order, and every
per-head metric (top1, top2, the guide's two_choice and the tie-aware share) is computed
here, one way for all.
"""
import numpy as np

from .stages import N_FILTERS, N_INTERLEAVES, N_PREDICTORS, N_REORDERS, split_filter_code

# The filter-code layout gives the sizes of its three parts.
N_PERMS, N_PRIMARY, N_SECONDARY = (int(v) + 1 for v in split_filter_code(N_FILTERS - 1))

# The head table: the one place that names the heads, their order and their sizes.
HEADS = (
    ("head_predictor", N_PREDICTORS),
    ("head_filter_perm", N_PERMS),
    ("head_filter_primary", N_PRIMARY),
    ("head_filter_secondary", N_SECONDARY),
    ("head_reorder", N_REORDERS),
    ("head_interleave", N_INTERLEAVES),
)
HEAD_NAMES = tuple(name for name, _ in HEADS)
HEAD_SIZES = np.array([size for _, size in HEADS])
HEAD_OFFSETS = np.concatenate([[0], np.cumsum(HEAD_SIZES)[:-1]])
N_OUTPUTS = int(HEAD_SIZES.sum())
METRICS = ("top1", "top2", "two_choice")
# With a tie mask: the first class belongs to some configuration with the minimum bits
# (best, or second when second.bits == best.bits). A quarter of the records tie, and then
# either answer costs the same; two_choice also credits a strictly worse second.
TIE_METRIC = "tie_aware"


def head_labels(candidates):
    """Per-head class ids of candidates (N, >= 4) = predictor, filter, reorder, interleave
    (the tlg8.records / tlg8.search layout). Returns int64 (N, 6) in HEADS order; rows with
    predictor -1 (a missing `second`) stay -1."""
    c = np.asarray(candidates, np.int64)
    perm, primary, secondary = split_filter_code(c[:, 1])
    out = np.stack([c[:, 0], perm, primary, secondary, c[:, 2], c[:, 3]], axis=1)
    out[c[:, 0] < 0] = -1
    return out


def head_topk(scores, k):
    """Per head, the k best classes of fused scores (N, 32) (logits or log-probabilities):
    {head name: (ids int64 (N, k'), scores (N, k'))}, k' = min(k, head size), best first;
    ties keep the lower class id first."""
    out = {}
    for name, a, n in zip(HEAD_NAMES, HEAD_OFFSETS, HEAD_SIZES):
        part = scores[:, a:a + n]
        ids = np.argsort(-part, axis=1, kind="stable")[:, :min(k, n)]
        out[name] = (ids, np.take_along_axis(part, ids, axis=1))
    return out


def hit_counts(top2, best, second, tie=None):
    """Per-head hit counts (6, 3) int64 of (top1, top2, two_choice); (6, 4) with the
    tie-aware count added when `tie` is given.

    top2: int (N, 6, 2) each head's two best classes; best, second: (N, 6) head_labels of
    the reference's best and second (-1 where second is missing). two_choice, the guide's
    metric: the first class is best's or second's. tie: bool (N,) second.bits ==
    best.bits (tie_mask); tie_aware: the first class is best's, or second's on a tie."""
    top2 = np.asarray(top2)
    first = top2[:, :, 0]
    top1 = first == best
    is_second = first == second
    columns = [top1.sum(0), (top1 | (top2[:, :, 1] == best)).sum(0), (top1 | is_second).sum(0)]
    if tie is not None:
        columns.append((top1 | (is_second & np.asarray(tie, bool)[:, None])).sum(0))
    return np.stack(columns, axis=1).astype(np.int64)


def tie_mask(second, bits):
    """Records whose second has as few bits as best: second (N, >= 1) with -1 where
    missing (tlg8.records `second`), bits (N, 2) = best.bits, second.bits."""
    bits = np.asarray(bits)
    return (np.asarray(second)[:, 0] >= 0) & (bits[:, 0] == bits[:, 1])


def metrics_of(counts, n):
    """{head name without "head_": {metric: share}} of hit_counts summed over n blocks
    (tie_aware too when the counts have it)."""
    names = (METRICS + (TIE_METRIC,))[:counts.shape[1]]
    return {name[5:]: {m: float(counts[h, i] / n) if n else 0.0 for i, m in enumerate(names)}
            for h, name in enumerate(HEAD_NAMES)}


def mean_two_choice(metrics, metric="two_choice"):
    return float(np.mean([m[metric] for m in metrics.values()]))


def top2_of_scores(scores):
    """{head name: scores (N, size)} (e.g. a model's per-head log-probabilities) -> each
    head's two best classes (N, 6, 2), ties to the lower class id."""
    return np.stack([np.argsort(-scores[name], axis=1, kind="stable")[:, :2]
                     for name in HEAD_NAMES], axis=1)


def top2_array(topk):
    """{head name: (ids (N, >= 2), ...)} (head_topk or a model's topk_arrays) -> (N, 6, 2)."""
    return np.stack([topk[name][0][:, :2] for name in HEAD_NAMES], axis=1)
