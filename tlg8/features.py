"""Cheap per-block statistics of every (predictor, filter) pair, batched over many blocks.

What a selection model needs to rank the 768 (predictor, colour filter) pairs of a block
without encoding them: how large the coded values of each pair would be. The coded values
of component c of pair (p, f) are one of few sequences per predictor (search.CANDIDATE_INDEX:
51, or 52 with C = 4), and their magnitudes are fewer still, because |x - y| = |y - x|:

    S(x)    = r_x                         the predictor residual of source component x
    D(x, y) = r_x - r_y                   (x < y)
    H(x, y) = r_x - tdiv2(r_y)            (x != y)
    T(x, y) = r_x - tdiv2(3 r_y)          (x != y)
    A(z)    = r_z - tdiv2(r_x + r_y)      ({x, y} = the other two sources)

21 magnitude sequences per predictor (22 with C = 4: S(3), the untouched component 3),
`SEQUENCES`, against 52 x 64 values if every candidate were formed. Statistics of those
(sum of absolute values, number of non-zero values, ...) then give the statistics of all
768 pairs and their three or four components by one gather (`PAIR_SEQUENCE`).

Layout for speed: blocks are the last (contiguous) axis everywhere, so that every operation
is one long vectorised loop and a sum over the 64 positions adds 64 contiguous rows instead
of reducing 64-element rows. All values are int16 (|value| <= 637, see the cost spec §3).

Nothing here depends on the learned models; the ML side imports this module.
"""
import numpy as np

from . import stages

# Distinct magnitude sequences of one predictor: (kind, x, y). Kinds as in the docstring.
SEQUENCES = (
    [("S", x, -1) for x in range(3)]
    + [("D", x, y) for x in range(3) for y in range(x + 1, 3)]
    + [("H", x, y) for x in range(3) for y in range(3) if x != y]
    + [("T", x, y) for x in range(3) for y in range(3) if x != y]
    + [("A", z, -1) for z in range(3)]
    + [("S", 3, -1)]
)
N_SEQUENCES = len(SEQUENCES)           # 22; the last one exists only with C = 4
_SEQ = {key: i for i, key in enumerate(SEQUENCES)}


def _pair_sequence():
    """(96, 4): index into SEQUENCES of component c of filter `code` (for any predictor)."""
    out = np.zeros((stages.N_FILTERS, 4), np.intp)
    for code in range(stages.N_FILTERS):
        perm, primary, secondary = stages.split_filter_code(code)
        d0, d1, d2 = stages.PERMUTATIONS[perm]
        comp1 = [("S", d1, -1), ("D", min(d0, d1), max(d0, d1)), ("H", d1, d0),
                 ("T", d1, d0)][primary]
        comp2 = [("S", d2, -1), ("D", min(d0, d2), max(d0, d2)),
                 ("D", min(d1, d2), max(d1, d2)), ("A", d2, -1)][secondary]
        out[code] = [_SEQ[("S", d0, -1)], _SEQ[comp1], _SEQ[comp2], _SEQ[("S", 3, -1)]]
    return out


PAIR_SEQUENCE = _pair_sequence()


def residual_planes(ws):
    """Predictor residuals, block axis last: (N, C, h+1, w+2) -> int16 (8, C, n, N)."""
    x = np.ascontiguousarray(np.asarray(ws).astype(np.int16).transpose(1, 2, 3, 0))
    ncomp, hp, wp, n_blocks = x.shape
    a = x[:, 1:, :-2]
    b = x[:, :-1, 1:-1]
    c = x[:, :-1, :-2]
    d = x[:, :-1, 2:]
    own = x[:, 1:, 1:-1]
    out = np.empty((stages.N_PREDICTORS, ncomp, hp - 1, wp - 2, n_blocks), np.int16)
    for p in range(stages.N_PREDICTORS):
        np.subtract(own, stages.predict_neighbours(a, b, c, d, p), out=out[p])
    return out.reshape(stages.N_PREDICTORS, ncomp, -1, n_blocks)


def _tdiv2(x):
    return (x + (x < 0)) >> 1      # int16 stays int16 (bool adds as 0/1)


def magnitude_sequences(planes):
    """|values| of the SEQUENCES of every predictor: (8, C, n, N) -> uint16 (8, S, n, N).

    With C = 3 there are 21 sequences (S(3) is absent)."""
    n_pred, ncomp, n, n_blocks = planes.shape
    count = N_SEQUENCES if ncomp == 4 else N_SEQUENCES - 1
    out = np.empty((n_pred, count, n, n_blocks), np.int16)
    r = [planes[:, c] for c in range(ncomp)]
    for i, (kind, x, y) in enumerate(SEQUENCES[:count]):
        if kind == "S":
            out[:, i] = r[x]
        elif kind == "D":
            np.subtract(r[x], r[y], out=out[:, i])
        elif kind == "H":
            np.subtract(r[x], _tdiv2(r[y]), out=out[:, i])
        elif kind == "T":
            np.subtract(r[x], _tdiv2(r[y] * np.int16(3)), out=out[:, i])
        else:
            x0, x1 = [s for s in range(3) if s != x]
            np.subtract(r[x], _tdiv2(r[x0] + r[x1]), out=out[:, i])
    np.abs(out, out=out)
    return out.view(np.uint16)     # |v| <= 637: 64 of them still fit 16 unsigned bits


def sequence_stats(mags):
    """Per sequence: sum of |v| and number of non-zero values, (8, S, N) uint16 each."""
    sad = np.add.reduce(mags, axis=2, dtype=np.uint16)
    nonzero = np.add.reduce(mags != 0, axis=2, dtype=np.uint16)
    return sad, nonzero


def pair_component_stats(seq_stat, ncomp):
    """(8, S, N) per-sequence statistic -> (N, 8, 96, C) per pair and coded component."""
    return np.ascontiguousarray(seq_stat.transpose(2, 0, 1))[:, :, PAIR_SEQUENCE[:, :ncomp]]


def pair_sad(ws):
    """Sum of absolute filtered residuals of all 768 pairs: (N, 8, 96) int64 (the baseline
    proxy), straight from the definition of the colour filter; for tests and baselines."""
    from .search import CANDIDATE_INDEX, filter_candidates
    res = stages.all_residuals(np.asarray(ws))
    cand = np.abs(filter_candidates(res).astype(np.int64)).sum(-1)
    return cand[:, :, CANDIDATE_INDEX[:, :ws.shape[1]]].sum(-1)
