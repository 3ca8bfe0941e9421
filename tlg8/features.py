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

Layout for speed: for these statistics blocks are the last (contiguous) axis, so that
every operation is one long vectorised loop and a sum over the 64 positions adds 64
contiguous rows instead of reducing 64-element rows. All values are int16 (|value| <= 637,
see the cost spec §3). Reading a few chosen pairs instead wants block-major residuals
(`block_major`, `coded_lanes`: a pair is 3-4 short rows of its own block); the trials of
tlg8.cost use the same.

The feature layouts a selector model reads are defined here, one place each:
`pairs-v1` (`pair_features`, per pair), `scan-v1` (`scan_features`, per pair and
reorder/interleave) and `workspace-v1` (`workspace_vectors`, one block as a flat vector for
the per-block API). Nothing here depends on the learned models; the ML side imports this.
"""
import numpy as np

from . import jit, stages
from .stages import MAX_COMPONENTS
from .heads import HEAD_OFFSETS, HEAD_SIZES, head_labels
from .image import block_batches, block_grid, block_workspaces


# The features' logarithms: log2_f32, the same bits on every machine and in the compiled
# kernels (encode_kernels.log2_f32, the same operations). NumPy's own float32 log2 is not:
# on CPUs with AVX-512 its vectorised loop (SVML) and its scalar one (libm's log2f)
# differ in the last bit for some arguments (log2(6), for one), so a feature would depend
# on the CPU, on the array's layout, and on whether numba is installed.
# log2(x) = e + log2(m), x = m 2^e, m in [sqrt(1/2), sqrt(2)); log2(m) = t P(t^2) with
# t = (m - 1) / (m + 1), |t| < 0.172, P the series of 2 atanh(t) / (t ln 2): 12 terms leave
# an error below 1e-17, far under float32's half unit. Only float64 +, -, *, / (exact
# IEEE operations, no fused multiply-add in NumPy or in numba without fastmath) and frexp.
LN2 = 0.6931471805599453                # ln 2, rounded to float64
SQRT_HALF = 0.7071067811865476          # sqrt(1/2), rounded to float64
LOG2_SERIES = tuple(2.0 / ((2 * k + 1) * LN2) for k in range(12))


def log2_f32(x):
    """log2 of x >= 1 (array or scalar, float32 or exact in float64), as float32 (the
    correctly rounded value but for arguments within 1e-16 of a rounding boundary, and
    always the same bits; see above)."""
    m, e = np.frexp(np.asarray(x, np.float64))
    low = m < SQRT_HALF
    m = np.where(low, m * 2.0, m)
    e = np.where(low, e - 1, e)
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    p = LOG2_SERIES[-1]
    for c in LOG2_SERIES[-2::-1]:
        p = p * t2 + c
    return (e + t * p).astype(np.float32)

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


# ---------------------------------------------------------------------------------------
# Pair candidates and their features (the learned selector's inputs)

N_PAIRS = stages.N_PREDICTORS * stages.N_FILTERS      # pair id = predictor * 96 + filter
PAIR_PREDICTOR = np.repeat(np.arange(stages.N_PREDICTORS), stages.N_FILTERS)
PAIR_FILTER = np.tile(np.arange(stages.N_FILTERS), stages.N_PREDICTORS)


def block_stats(ws):
    """Residual planes and per-sequence statistics of blocks of one size.

    Returns (planes int16 (8, C, n, N), sad uint16 (8, S, N), nonzero uint16 (8, S, N)).
    """
    planes = residual_planes(ws)
    sad, nonzero = sequence_stats(magnitude_sequences(planes))
    return planes, sad, nonzero


def block_residual_stats(ws):
    """block_stats for a model that then reads chosen configurations: (residuals int16
    (N, 8, C, n) block-major (block_major of the planes), sad, nonzero (8, S, N) uint16).
    With compiled kernels (tlg8.jit) the statistics are views of block-major arrays."""
    ws = np.asarray(ws)
    if jit.available() and ws.shape[1] in (3, 4):
        from . import encode_kernels as kernels
        n_blocks, ncomp, hp, wp = ws.shape
        count = N_SEQUENCES if ncomp == 4 else N_SEQUENCES - 1
        residuals = np.empty((n_blocks, stages.N_PREDICTORS, ncomp, (hp - 1) * (wp - 2)),
                             np.int16)
        sad = np.empty((n_blocks, stages.N_PREDICTORS, count), np.uint16)
        nonzero = np.empty_like(sad)
        kernels.block_stats(np.ascontiguousarray(ws, np.int32), residuals, sad, nonzero)
        return residuals, sad.transpose(1, 2, 0), nonzero.transpose(1, 2, 0)
    planes, sad, nonzero = block_stats(ws)
    return block_major(planes), sad, nonzero


def least_sad_pairs(sad, ncomp, k):
    """top_pairs(pair_proxy(sad, ncomp), k): int64 (N, k) pair ids."""
    k = min(int(k), N_PAIRS)
    if jit.available():
        from . import encode_kernels as kernels
        out = np.empty((sad.shape[2], k), np.int64)
        kernels.least_sad_pairs(np.ascontiguousarray(sad.transpose(2, 0, 1)), int(ncomp),
                                PAIR_SEQUENCE.astype(np.int64), out)
        return out
    return top_pairs(pair_proxy(sad, ncomp), k)


def pair_proxy(sad, ncomp):
    """Sum of absolute coded values of all 768 pairs: (8, S, N) -> int32 (N, 768)."""
    seq = PAIR_SEQUENCE[:, :ncomp]                                  # (96, C)
    per = sad[:, seq]                                               # (8, 96, C, N)
    total = np.add.reduce(per, axis=2, dtype=np.int32)              # (8, 96, N)
    return np.ascontiguousarray(total.reshape(N_PAIRS, -1).T)


def top_pairs(proxy, k):
    """The k pairs with the least proxy per block, ascending (ties: lower pair id first).

    proxy (N, 768) -> int64 (N, k) pair ids."""
    k = min(int(k), proxy.shape[1])
    # Sort key proxy * 1024 + id: unique per block, so argpartition + argsort is exact
    # (int32 is enough: the proxy is < 4 * 64 * 637 < 2^17).
    key = proxy.astype(np.int32) * np.int32(1024) + np.arange(proxy.shape[1], dtype=np.int32)
    part = np.argpartition(key, k - 1, axis=1)[:, :k] if k < proxy.shape[1] else \
        np.broadcast_to(np.arange(proxy.shape[1]), proxy.shape).copy()
    order = np.argsort(np.take_along_axis(key, part, 1), axis=1)
    return np.take_along_axis(part, order, 1).astype(np.int64)


# Layout "pairs-v1" of the per-pair feature vector (the ranker's input), F = 35:
#   for coded component slot c = 0..3 (zeros past C): log2(1 + sad_c * 64 / n),
#       non-zero fraction, log2(1 + sad_c / max(nonzero_c, 1))            -> 12
#   log2(1 + total sad * 64 / n)                                            -> 1
#   one-hot predictor (8), filter perm (6), primary (4), secondary (4)      -> 22
PAIR_FEATURE_LAYOUT = "pairs-v1"
N_PAIR_ONEHOTS = int(HEAD_SIZES[:4].sum())            # 22: the pair heads' classes
N_PAIR_FEATURES = 3 * MAX_COMPONENTS + 1 + N_PAIR_ONEHOTS


def _pair_onehots():
    """(768, 22): the pair's predictor and filter-part classes, one-hot in head order."""
    labels = head_labels(np.stack([PAIR_PREDICTOR, PAIR_FILTER, PAIR_PREDICTOR * 0,
                                   PAIR_PREDICTOR * 0], axis=1))[:, :4]
    out = np.zeros((N_PAIRS, N_PAIR_ONEHOTS), np.float32)
    out[np.arange(N_PAIRS)[:, None], HEAD_OFFSETS[:4] + labels] = 1
    return out


PAIR_ONEHOTS = _pair_onehots()


N_PAIR_MEASURES = 13        # the columns of pairs-v1 before the one-hot identity


def pair_features(sad, nonzero, pairs, n, identity=True):
    """Features (N, K, 35) float32 of the pairs `pairs` (N, K) (layout pairs-v1).

    sad, nonzero: (8, S, N) per-sequence statistics of block_stats; n: samples per
    component. identity=False leaves out the 22 one-hot columns, (N, K, 13): a model can
    add their (constant per pair) contribution from a table instead.
    """
    n_blocks, k = pairs.shape
    ncomp = 4 if sad.shape[1] == N_SEQUENCES else 3
    n_seq = sad.shape[1]
    if not identity and jit.available() and n_blocks and k:
        from . import encode_kernels as kernels
        out = np.empty((n_blocks, k, N_PAIR_MEASURES), np.float32)
        kernels.pair_measures(np.ascontiguousarray(sad.transpose(2, 0, 1), np.uint16),
                              np.ascontiguousarray(nonzero.transpose(2, 0, 1), np.uint16),
                              np.ascontiguousarray(pairs, np.int64), ncomp, int(n),
                              PAIR_SEQUENCE.astype(np.int64), out)
        return out
    # Flat gathers from block-major copies of the (small) per-sequence statistics.
    seq = PAIR_SEQUENCE[pairs % stages.N_FILTERS, :ncomp]                     # (N, K, C)
    index = ((np.arange(n_blocks)[:, None] * stages.N_PREDICTORS
              + pairs // stages.N_FILTERS) * n_seq)[..., None] + seq
    s = np.ascontiguousarray(sad.transpose(2, 0, 1)).reshape(-1).take(index)
    z = np.ascontiguousarray(nonzero.transpose(2, 0, 1)).reshape(-1).take(index)
    s = s.astype(np.float32)
    z = z.astype(np.float32)
    out = np.zeros((n_blocks, k, N_PAIR_FEATURES if identity else N_PAIR_MEASURES),
                   np.float32)
    scale = np.float32(64 / n)
    out[:, :, 0:ncomp] = log2_f32(1 + s * scale)
    out[:, :, 4:4 + ncomp] = z * np.float32(1 / n)
    out[:, :, 8:8 + ncomp] = log2_f32(1 + s / np.maximum(z, 1))
    out[:, :, 12] = log2_f32(1 + s.sum(-1) * scale)
    if identity:
        out[:, :, N_PAIR_MEASURES:] = PAIR_ONEHOTS[pairs]
    return out


def block_major(planes):
    """Block-last planes (8, C, n, N) -> block-major residuals int16 (N, 8, C, n).

    What reading a few chosen configurations wants: a pair's coded values are 2-4 rows of
    n values of its own block, which then sit together in memory."""
    return np.ascontiguousarray(planes.transpose(3, 0, 1, 2))


# Colour filter as two multipliers (cost spec §3): tdiv2(2x) = x, so for every code
# P1 = tdiv2(ALPHA[primary] * d0) and P2 = tdiv2(BETA[secondary] * d0 + GAMMA[secondary] * d1).
# One formula for all lanes instead of one pass per filter code.
_ALPHA = np.array([0, 2, 1, 3], np.int16)
_BETA = np.array([0, 2, 0, 1], np.int16)
_GAMMA = np.array([0, 0, 2, 1], np.int16)
_PERMS = np.array(stages.PERMUTATIONS, np.intp)


def coded_lanes(residuals, block, predictor, code, scan=None):
    """Coded values of given (block, predictor, filter) lanes: int16 (C, L, n).

    residuals: block-major (N, 8, C, n) (block_major); block, predictor, code: (L,) each;
    scan: (L, n) raster positions in reading order per lane (reorder), default raster.
    Lane-major, so each lane reads short contiguous rows of its own block.
    """
    n_blocks, n_pred, ncomp, n = residuals.shape
    flat = residuals.reshape(-1)
    base = ((np.asarray(block) * n_pred + predictor) * ncomp) * n        # (L,)
    pos = (np.arange(n) if scan is None else scan) + base[:, None]      # (L, n)
    out = np.empty((ncomp, len(base), n), np.int16)
    if ncomp < 3:                                                       # no colour filter
        for c in range(ncomp):
            flat.take(pos + c * n, out=out[c])
        return out
    perm, primary, secondary = stages.split_filter_code(np.asarray(code))
    src = _PERMS[perm] * n                                              # (L, 3)
    d0 = flat.take(pos + src[:, 0, None])
    d1 = flat.take(pos + src[:, 1, None])
    out[0] = d0
    flat.take(pos + src[:, 2, None], out=out[2])
    np.subtract(d1, _tdiv2(d0 * _ALPHA[primary][:, None]), out=out[1])
    out[2] -= _tdiv2(d0 * _BETA[secondary][:, None] + d1 * _GAMMA[secondary][:, None])
    if ncomp == 4:
        flat.take(pos + 3 * n, out=out[3])
    return out


def coded_pairs(residuals, pairs):
    """Coded values (raster order) of pairs (N, P) of each block: int16 (N, P, C, n).

    residuals: block-major (N, 8, C, n) (block_major)."""
    n_blocks, k = pairs.shape
    block = np.repeat(np.arange(n_blocks), k)
    flat = pairs.reshape(-1)
    out = coded_lanes(residuals, block, flat // stages.N_FILTERS, flat % stages.N_FILTERS)
    return out.transpose(1, 0, 2).reshape(n_blocks, k, residuals.shape[2], -1)


# Layout "scan-v1" of the per-pair (reorder, interleave) features (the second model's
# input), from the pair's coded values V (C, n) with B = bit length of |V|:
#   for each reorder r (scan T_r; raster order for edge blocks): mean |B[i] - B[i-1]| along
#   each component's scan, mean B of the first 2 scan positions, mean B of the first 8
#   minus the last 8, mean |B[j] - B[j-1]| along the interleaved sequence   -> 8 x 4 = 32
#   per component slot (zeros past C): log2(1 + sad * 64 / n), mean B, non-zero fraction
#                                                                           -> 12
#   spread of the log sads, mean |B_0 - B_1| + |B_1 - B_2| (per position), log total sad
#                                                                           -> 3
# (Zero/non-zero transition counts along the scans were measured and did not help.)
SCAN_FEATURE_LAYOUT = "scan-v1"
N_SCAN_FEATURES = 32 + 3 * MAX_COMPONENTS + 3
_BITLEN = np.array([int(v).bit_length() for v in range(1024)], np.int8)
SCAN_CHUNK = 4096           # pair rows per pass: keeps the per-step temporaries in cache


_SCAN_TABLES = {}


def _scan_tables(w, h):
    """Per block size: the distinct steps of the 8 scans and, per scan, which of them it
    takes. Returns (steps (E, 2) directed u -> v raster positions, step ids per scan
    (8, n-1), undirected pairs (U, 2), undirected ids per scan (8, n-1), scans (8, n))."""
    if (w, h) not in _SCAN_TABLES:
        n = w * h
        scans = np.stack([stages.reorder_index(r, w, h) for r in range(stages.N_REORDERS)])
        steps = sorted({(int(s[i - 1]), int(s[i])) for s in scans for i in range(1, n)})
        pairs = sorted({(min(u, v), max(u, v)) for u, v in steps})
        sid = {e: k for k, e in enumerate(steps)}
        pid = {e: k for k, e in enumerate(pairs)}
        step_ids = np.array([[sid[(int(s[i - 1]), int(s[i]))] for i in range(1, n)]
                             for s in scans], np.intp).reshape(len(scans), n - 1)
        pair_ids = np.array([[pid[tuple(sorted((int(s[i - 1]), int(s[i]))))]
                              for i in range(1, n)] for s in scans],
                            np.intp).reshape(len(scans), n - 1)
        _SCAN_TABLES[(w, h)] = (np.array(steps, np.intp).reshape(-1, 2), step_ids,
                                np.array(pairs, np.intp).reshape(-1, 2), pair_ids, scans)
    return _SCAN_TABLES[(w, h)]


def scan_features(coded, w, h):
    """(N, P, C, n) coded values -> (N, P, 47) float32 (layout scan-v1).

    The 8 scans share most of their steps (~250 distinct ones against 8 x 63), so the
    per-step terms are computed once and each scan's sum gathers its 63 of them.
    Position-major int8/int16 arrays make each step term a difference of two short
    contiguous rows; sums are exact integers (no BLAS: it is slower here than the plain
    gathers, and multithreaded BLAS stalls on a busy machine).
    """
    n_blocks, n_pairs, ncomp, n = coded.shape
    rows = n_blocks * n_pairs
    flat = coded.reshape(rows, ncomp, n)
    out = np.empty((rows, N_SCAN_FEATURES), np.float32)
    for lo in range(0, rows, SCAN_CHUNK):
        out[lo:lo + SCAN_CHUNK] = _scan_chunk(flat[lo:lo + SCAN_CHUNK], w, h).T
    return out.reshape(n_blocks, n_pairs, N_SCAN_FEATURES)


def pair_scan_features(residuals, pairs, w, h):
    """scan_features(coded_pairs(residuals, pairs), w, h): (N, P, 47) float32. With
    compiled kernels the integer sums come from tlg8.encode_kernels.scan_sums and the
    same float32 operations as _scan_chunk's make the features of them."""
    ncomp = residuals.shape[2]
    if not (jit.available() and ncomp >= 3 and pairs.size):
        return scan_features(coded_pairs(residuals, pairs), w, h)
    from . import encode_kernels as kernels
    n = w * h
    steps, step_ids, undirected, pair_ids, scans = (np.ascontiguousarray(t, np.intp)
                                                    for t in _scan_tables(w, h))
    head, part = min(2, n), min(8, n)
    sums = np.empty(pairs.shape + (kernels.N_SCAN_SUMS,), np.int32)
    kernels.scan_sums(np.ascontiguousarray(residuals, np.int16),
                      np.ascontiguousarray(pairs, np.int64), scans, steps, step_ids,
                      undirected, pair_ids, head, part, sums)
    out = np.zeros(pairs.shape + (N_SCAN_FEATURES,), np.float32)
    norm = np.float32(1 / (ncomp * max(n - 1, 1)))
    per_scan = sums[..., :32].reshape(pairs.shape + (stages.N_REORDERS, 4))
    view = out[..., :32].reshape(per_scan.shape)
    view[..., 0] = per_scan[..., 0] * norm
    view[..., 1] = per_scan[..., 1] * np.float32(1 / (head * ncomp))
    view[..., 2] = per_scan[..., 2] * np.float32(1 / (part * ncomp))
    view[..., 3] = per_scan[..., 3] * norm
    sad = sums[..., 32:32 + ncomp].astype(np.float32)
    lsad = log2_f32(1 + sad * np.float32(64 / n))
    out[..., 32:32 + ncomp] = lsad
    # NumPy's mean with a float32 accumulator: the (exact) sum divided by the count.
    out[..., 36:36 + ncomp] = np.true_divide(sums[..., 36:36 + ncomp].astype(np.float32), n)
    out[..., 40:40 + ncomp] = np.true_divide(sums[..., 40:40 + ncomp].astype(np.float32), n)
    out[..., 44] = lsad.max(-1) - lsad.min(-1)
    out[..., 45] = (np.true_divide(sums[..., 44].astype(np.float32), n)
                    + np.true_divide(sums[..., 45].astype(np.float32), n))
    out[..., 46] = log2_f32(1 + sad.sum(-1) * np.float32(64 / n))
    return out


def _scan_chunk(coded, w, h):
    rows, ncomp, n = coded.shape
    mag = np.ascontiguousarray(np.abs(coded).transpose(2, 1, 0))    # (n, C, R)
    bits = _BITLEN.take(mag)                                        # int8, 0..10
    steps, step_ids, pairs, pair_ids, scans = _scan_tables(w, h)
    out = np.zeros((N_SCAN_FEATURES, rows), np.float32)
    view = out[:32].reshape(stages.N_REORDERS, 4, rows)
    norm = np.float32(1 / (ncomp * max(n - 1, 1)))
    step = np.abs(bits[pairs[:, 0]] - bits[pairs[:, 1]]).sum(1, dtype=np.int16)   # (U, R)
    total = bits.sum(1, dtype=np.int16)                                           # (n, R)
    # Interleaved: within a position comp c -> c+1 (the same for every scan), and from
    # the last component at u to component 0 at v for each step u -> v of the scan.
    within = np.abs(np.diff(bits, axis=1)).sum((0, 1), dtype=np.int32)
    cross = np.abs(bits[steps[:, 0], -1] - bits[steps[:, 1], 0])                  # (E, R)
    head, part = min(2, n), min(8, n)
    for r in range(stages.N_REORDERS):
        scan = scans[r]
        view[r, 0] = np.add.reduce(step[pair_ids[r]], axis=0, dtype=np.int32) * norm
        view[r, 1] = np.add.reduce(total[scan[:head]], axis=0, dtype=np.int32) \
            * np.float32(1 / (head * ncomp))
        view[r, 2] = (np.add.reduce(total[scan[:part]], axis=0, dtype=np.int32)
                      - np.add.reduce(total[scan[n - part:]], axis=0, dtype=np.int32)) \
            * np.float32(1 / (part * ncomp))
        view[r, 3] = (within + np.add.reduce(cross[step_ids[r]], axis=0, dtype=np.int32)) * norm
    sad = mag.sum(0, dtype=np.int32).astype(np.float32)             # (C, R)
    lsad = log2_f32(1 + sad * np.float32(64 / n))
    out[32:32 + ncomp] = lsad
    out[36:36 + ncomp] = bits.mean(0, dtype=np.float32)
    out[40:40 + ncomp] = (mag != 0).mean(0, dtype=np.float32)
    out[44] = lsad.max(0) - lsad.min(0)
    if ncomp >= 3:
        out[45] = (np.abs(bits[:, 0] - bits[:, 1]).mean(0, dtype=np.float32)
                   + np.abs(bits[:, 1] - bits[:, 2]).mean(0, dtype=np.float32))
    out[46] = log2_f32(1 + sad.sum(0) * np.float32(64 / n))
    return out


# ---------------------------------------------------------------------------------------
# One block's inputs as a flat vector (the per-block API of a selector model)

# Layout "workspace-v1": [w, h, C] then the padded workspace (cost spec §1.4: the block and
# the neighbours its predictors read) as raw samples 0..255, placed in a (4, 9, 10) array
# (component, y + 1, x + 1) and zero elsewhere. Unlike the 259 pixel features it keeps the
# neighbours, without which no residual (and no cost-model statistic) can be computed.
WORKSPACE_LAYOUT = "workspace-v1"
N_WORKSPACE_FEATURES = 3 + MAX_COMPONENTS * 9 * 10


def workspace_vectors(ws):
    """(N, C, h+1, w+2) workspaces -> (N, 363) float32 vectors (layout workspace-v1)."""
    ws = np.asarray(ws)
    n_blocks, ncomp, hp, wp = ws.shape
    out = np.zeros((n_blocks, N_WORKSPACE_FEATURES), np.float32)
    out[:, 0:3] = (wp - 2, hp - 1, ncomp)
    grid = out[:, 3:].reshape(n_blocks, MAX_COMPONENTS, 9, 10)
    grid[:, :ncomp, :hp, :wp] = ws
    return out


def workspace_from_vector(vector):
    """One workspace-v1 vector (363,) -> int32 (C, h+1, w+2); checks the header."""
    v = np.asarray(vector, np.float32).reshape(-1)
    if v.shape != (N_WORKSPACE_FEATURES,):
        raise ValueError(f"a {WORKSPACE_LAYOUT} feature vector has {N_WORKSPACE_FEATURES} "
                         f"values, not {v.size}")
    w, h, ncomp = (int(x) for x in v[:3])
    if not (1 <= w <= 8 and 1 <= h <= 8 and 3 <= ncomp <= MAX_COMPONENTS) or \
            (v[:3] != (w, h, ncomp)).any():
        raise ValueError(f"bad {WORKSPACE_LAYOUT} header (w, h, C) = {tuple(v[:3])}")
    grid = v[3:].reshape(MAX_COMPONENTS, 9, 10)[:ncomp, :h + 1, :w + 2]
    if not ((grid >= 0) & (grid <= 255) & (grid == np.round(grid))).all():
        raise ValueError(f"{WORKSPACE_LAYOUT} samples must be integers 0..255")
    return grid.astype(np.int32)


def image_workspace_vectors(samples, grid=None):
    """workspace-v1 vectors (N, 363) of an image's blocks (default: all, in block order)."""
    if grid is None:
        grid = block_grid(samples.shape[1], samples.shape[0])
    out = np.zeros((len(grid), N_WORKSPACE_FEATURES), np.float32)
    for index in block_batches(grid):
        out[index] = workspace_vectors(block_workspaces(samples, grid[index]))
    return out
