"""Compiled kernels of the encoder's loops (tlg8.jit; numba, optional).

Plain scalar Python over NumPy arrays, compiled ahead of time by tlg8.jit when numba is
installed. Each kernel has a NumPy path elsewhere that gives the same numbers (the
callers choose with jit.available(); test/test_encode_kernels.py compares the two):

* lane_bits — cost.lane_bits: the per-block bit estimate (cost spec §6) of many
  sequences, optionally from given adaptive states (the file's rows carry them);
* configs_bits — cost.block_configs_bits: the trials, both estimators, the better one;
* workspaces — image.block_workspaces;
* block_stats, least_sad_pairs, scan_sums — features.block_residual_stats,
  least_sad_pairs, pair_scan_features (the pair selector's statistics);
* file_golomb_bits, viterbi — the file-bytes pass (filecost.choose_for_file): candidates'
  Golomb-row bits and exit states coded straight from the image, the Viterbi;
* search_blocks — search.search_blocks, the reference search (cost spec §7);
* file_rows, index_costs, fit_counts, write_rows — tlgfile.encode_tlg8's
  Golomb rows, the fitted table (golombfit's costs and DP) and the rows' bits.

Conventions: values are the coded values (int16 in, int64 inside), |v| <= 1023 (the coding
stages give at most 637). A Golomb table comes as `kc` (8, STATES) int16, the k of each row
at every adaptive state a, pre-shifted (k << 11) so that `kc[a] | m` indexes RICE, and
`ratios` (8, 2) int64 = (raise, fall) per row. Numbers stay what the NumPy paths give for
such values: the state a then stays below STATES.
"""
import math

import numpy as np

from . import jit, stages
from .features import LOG2_SERIES, SQRT_HALF

# Array indices in the hot loops are cast to unsigned (U): numba then leaves out the
# handling of negative indices, a third of a Golomb step's instructions.
U = np.uint64
M_BITS = 11                     # mapped magnitudes m < 2^11 (|v| <= 1023)
STATES = 1 << 15                # the state a moves toward 16 m: a < 16 * 2^11
# Colour filter as multipliers (cost spec §3; features.coded_lanes): P1 = tdiv2(ALPHA * d0),
# P2 = tdiv2(BETA * d0 + GAMMA * d1).
_ALPHA = np.array([0, 2, 1, 3], np.int64)
_BETA = np.array([0, 2, 0, 1], np.int64)
_GAMMA = np.array([0, 0, 2, 1], np.int64)
_PERMS = np.array(stages.PERMUTATIONS, np.int64)
_PLAIN_ROWS = np.array(stages.PLAIN_ROWS, np.int64)
_RUNLENGTH_ROWS = np.array(stages.RUNLENGTH_ROWS, np.int64)


def _rice_table():
    """RICE[(k << 11) | m]: bits of the Golomb-Rice code of m with parameter k, with the
    escape (cost spec §6.3)."""
    m = np.arange(1 << M_BITS)
    out = np.zeros((9, 1 << M_BITS), np.int16)
    for k in range(9):
        q = m >> k
        escape = stages.ESCAPE_Q + 2 * np.frexp(np.maximum(m - (stages.ESCAPE_Q - 1), 1))[1] - 1
        out[k] = np.where(q < stages.ESCAPE_Q, q + 1 + k, escape)
    return out.reshape(-1)


MAX_LENGTH = 1 << 16            # longest sequence a kernel takes


def _run_steps():
    """RUN_STEP[L]: what a run adds when it grows to length L, run_cost(L) -
    run_cost(L - 1) (cost spec §6.5), so that runs are charged value by value; 0 from 257
    on, as cost.RUN_STEP (blocks have at most 256 values, so that is never)."""
    length = np.arange(258)
    cost = np.where(length <= 2, length, 1 + 2 * np.frexp(np.maximum(length - 2, 1))[1])
    out = np.zeros(MAX_LENGTH + 1, np.int16)
    out[1:257] = np.diff(cost)[:256]
    return out


RICE = _rice_table()
RUN_STEP = _run_steps()
# The least any k makes a code of m cost: a lower bound of a code before its k is known.
MIN_RICE = RICE.reshape(9, -1).min(axis=0)


def k_tables(golomb_table=stages.DEFAULT_GOLOMB_TABLE):
    """(kc (8, STATES) int16, ratios (8, 2) int64) of a Golomb table; k = 0 from k index
    1024 on (cost spec §9.3)."""
    idx = (np.arange(STATES) + 8) >> 4
    kc = np.zeros((8, STATES), np.int16)
    inside = idx < stages.K_INDEX_LIMIT
    kc[:, inside] = stages.k_table(golomb_table)[:, idx[inside]] << M_BITS
    ratios = np.array([(up, down) for up, down, _ in golomb_table], np.int64)
    return kc, ratios


KC, RATIOS = k_tables()


# ---------------------------------------------------------------------------------------
# The estimators (cost spec §6.4-§6.5)


@jit.kernel
def tdiv2(x):
    """x / 2 truncated toward zero."""
    return (x - (x >> 63)) >> 1


@jit.kernel
def plain_bits(seq, start, length, kc, row, up, down, a):
    """Plain estimator (§6.4) of seq[start:start + length] with Golomb row `row` (of the
    table kc) from state a: (bits, state after)."""
    bits = 0
    for j in range(start, start + length):
        v = seq[U(j)]
        m = (v << 1) ^ (v >> 63)                     # 2v, or -2v - 1 when v < 0
        bits += RICE[U(kc[U(row), U(a)] | m)]
        rho = up if a < m else down
        a += ((16 * m - a) * rho + 8) >> 4
    return bits, a


@jit.kernel
def runlength_bits(seq, start, length, kc, row, up, down, a, scratch):
    """Run-length estimator (§6.5) of seq[start:start + length] with Golomb row `row`
    from state a, without the first-value flag bit: (bits, state after). scratch: room
    for `length` values.

    The run codes do not depend on the state, so one pass charges them (each run as it
    grows, RUN_STEP) and gathers the non-zero values' magnitudes; the Golomb-Rice codes
    then run over those alone (zeros leave the state alone)."""
    bits = 0
    run = 0
    previous = -1
    count = 0
    for j in range(start, start + length):
        v = seq[U(j)]
        live = np.int64(v != 0)
        run = (run & -np.int64(live == previous)) + 1
        previous = live
        bits += RUN_STEP[U(run)]
        scratch[U(count)] = ((v << 1) ^ (v >> 63)) - 1   # 2v - 1, or -2v - 2 when v < 0
        count += live
    for j in range(count):
        m = scratch[U(j)]
        bits += RICE[U(kc[U(row), U(a)] | m)]
        rho = up if a < m else down
        a += ((16 * m - a) * rho + 8) >> 4
    return bits, a


# ---------------------------------------------------------------------------------------
# Many sequences (cost.lane_bits)

_LANE_GROUP = 32            # lanes copied out together: 32 int16 = one 64-byte line per row


@jit.export("void(int16[:, ::1], intp[:, ::1], int16[:, ::1], int64, int64, int64, int64, "
            "int64[::1], int64[:, ::1], int64[::1])")
def lane_bits(values, orders, kc, row, up, down, entropy, start, out, end):
    """cost.lane_bits: out[o, lane] = bits of the sequence values[orders[o], lane] with
    estimator `entropy`, from state start[lane] (0 when start is empty); end[lane] (if
    not empty) gets the state after the last order's sequence.

    values is position-major; each group of lanes is first copied lane-major, so every
    sequence then reads a few contiguous cache lines."""
    n_pos, lanes = values.shape
    n_orders, length = orders.shape
    group = np.empty((_LANE_GROUP, n_pos), np.int64)
    seq = np.empty(length, np.int64)
    scratch = np.empty(length, np.int64)
    for g0 in range(0, lanes, _LANE_GROUP):
        count = min(_LANE_GROUP, lanes - g0)
        for p in range(n_pos):
            for i in range(count):
                group[U(i), U(p)] = values[U(p), U(g0 + i)]
        for i in range(count):
            lane = g0 + i
            a0 = start[lane] if start.shape[0] else 0
            a = a0
            for o in range(n_orders):
                for j in range(length):
                    seq[U(j)] = group[U(i), U(orders[U(o), U(j)])]
                if entropy == 0:
                    bits, a = plain_bits(seq, 0, length, kc, row, up, down, a0)
                else:
                    bits, a = runlength_bits(seq, 0, length, kc, row, up, down, a0, scratch)
                    if length > 0:
                        bits += 1
                out[o, lane] = bits
            if end.shape[0]:
                end[lane] = a


# ---------------------------------------------------------------------------------------
# Given configurations of blocks (cost.block_configs_bits)


@jit.kernel
def coded_block(flat, base, code, scans, reorder, ncomp, n, interleaved, out):
    """The coded values of one block and predictor with filter `code` in the order of
    scans[reorder] (cost spec §2-§5): pixel-interleaved, out[i * C + c], or component
    after component, out[c * n + i]. flat[base + c * n + i]: the predictor's residuals
    (block-major residuals (N, 8, C, n) flattened, base = ((block * 8 + p) * C) * n)."""
    perm = code >> 4
    alpha = _ALPHA[(code >> 2) & 3]
    beta = _BETA[code & 3]
    gamma = _GAMMA[code & 3]
    r0 = U(base + _PERMS[perm, 0] * n)
    r1 = U(base + _PERMS[perm, 1] * n)
    r2 = U(base + _PERMS[perm, 2] * n)
    r3 = U(base + 3 * n)
    step, comp = (ncomp, 1) if interleaved else (1, n)
    for i in range(n):
        pos = U(scans[U(reorder), U(i)])
        d0 = np.int64(flat[r0 + pos])
        d1 = np.int64(flat[r1 + pos])
        d2 = np.int64(flat[r2 + pos])
        at = i * step
        out[U(at)] = d0
        out[U(at + comp)] = d1 - tdiv2(alpha * d0)
        out[U(at + 2 * comp)] = d2 - tdiv2(beta * d0 + gamma * d1)
        if ncomp == 4:
            out[U(at + 3 * comp)] = flat[r3 + pos]


@jit.kernel
def best_of_estimators(seq, ncomp, n, interleaved, kc, ratios, scratch):
    """(bits, entropy) of a block's coded values: the better of the two estimators,
    entropy 0 on a tie (it is tried first). seq: interleaved (C * n) or component-major.
    (The run-length estimate is rarely better, but rarely by much either: on photos it is
    within 2 % of the plain one, so no bound lets it stop early.)"""
    if interleaved:
        plain, _ = plain_bits(seq, 0, ncomp * n, kc, 6, ratios[6, 0], ratios[6, 1], 0)
        rl, _ = runlength_bits(seq, 0, ncomp * n, kc, 7, ratios[7, 0], ratios[7, 1], 0,
                               scratch)
        rl += 1
    else:
        plain = 0
        rl = 0
        for c in range(ncomp):
            r = _PLAIN_ROWS[c]
            bits, _ = plain_bits(seq, c * n, n, kc, r, ratios[r, 0], ratios[r, 1], 0)
            plain += bits
            r = _RUNLENGTH_ROWS[c]
            bits, _ = runlength_bits(seq, c * n, n, kc, r, ratios[r, 0], ratios[r, 1], 0,
                                     scratch)
            rl += bits + 1
    if rl < plain:
        return rl, 1
    return plain, 0


@jit.export("void(int16[:, :, :, ::1], int64[:, :, ::1], intp[:, ::1], int16[:, ::1], "
            "int64[:, ::1], int64[:, ::1], int64[:, ::1])")
def configs_bits(residuals, configs, scans, kc, ratios, bits, entropy):
    """cost.block_configs_bits: bits[b, k] and entropy[b, k] of configurations
    configs[b, k] = (predictor, filter, reorder, interleave) of blocks of one size, the
    better estimator (entropy 0 on a tie). scans (8, n): the size's scan orders."""
    n_blocks, n_per = configs.shape[:2]
    ncomp = residuals.shape[2]
    n = residuals.shape[3]
    seq = np.empty(4 * 64, np.int64)
    scratch = np.empty(4 * 64, np.int64)
    flat = residuals.reshape(-1)
    for b in range(n_blocks):
        for k in range(n_per):
            interleaved = configs[b, k, 3] == 1
            coded_block(flat, (b * 8 + configs[b, k, 0]) * ncomp * n, configs[b, k, 1], scans,
                        configs[b, k, 2], ncomp, n, interleaved, seq)
            bits[b, k], entropy[b, k] = best_of_estimators(seq, ncomp, n, interleaved, kc,
                                                           ratios, scratch)


# ---------------------------------------------------------------------------------------
# Per-pair statistics (features.block_stats, pair_proxy, top_pairs)
#
# Arithmetic on int32 values cast back to int32 at every step: numba widens integer
# arithmetic to int64, and the casts let LLVM keep 8 values per AVX2 register.

I32 = np.int32


@jit.kernel
def predict(p, a, b, c, d):
    """Predictor p (cost spec §2) from the neighbours a (left), b (up), c (up-left),
    d (up-right)."""
    if p == 0:
        mx = max(a, b)
        mn = min(a, b)
        return mn if c > mx else (mx if c < mn else a + b - c)
    if p == 1:
        return (a + c + 1) >> 1
    if p == 2:
        return (b + c + 1) >> 1
    if p == 3:
        return (b + d + 1) >> 1
    if p == 4:
        return a
    if p == 5:
        return b
    if p == 6:
        return c
    return d


@jit.kernel
def predict_plane(p, own, a, b, c, d, comp, n, out):
    """out[comp, :n] = residuals of predictor p (cost spec §2) from the flat planes of
    the block (own) and its neighbours; one loop per predictor."""
    k = U(comp)
    if p == 0:
        for i in range(n):
            j = U(i)
            x, y, z = a[k, j], b[k, j], c[k, j]
            mx = max(x, y)
            mn = min(x, y)
            out[k, j] = I32(own[k, j] - (mn if z > mx else (mx if z < mn else I32(x + y - z))))
    elif p == 1:
        for i in range(n):
            out[k, U(i)] = I32(own[k, U(i)] - I32((a[k, U(i)] + c[k, U(i)] + 1) >> 1))
    elif p == 2:
        for i in range(n):
            out[k, U(i)] = I32(own[k, U(i)] - I32((b[k, U(i)] + c[k, U(i)] + 1) >> 1))
    elif p == 3:
        for i in range(n):
            out[k, U(i)] = I32(own[k, U(i)] - I32((b[k, U(i)] + d[k, U(i)] + 1) >> 1))
    else:
        src = a if p == 4 else (b if p == 5 else (c if p == 6 else d))
        for i in range(n):
            out[k, U(i)] = I32(own[k, U(i)] - src[k, U(i)])


@jit.kernel
def sum_abs(values, x, n):
    """(sum of |v|, number of v != 0) of values[x, :n] (int32)."""
    total = I32(0)
    nonzero = I32(0)
    for i in range(n):
        v = abs(values[U(x), U(i)])
        total = I32(total + v)
        nonzero = I32(nonzero + I32(v != 0))
    return total, nonzero


@jit.kernel
def sum_abs_difference(values, x, other, y, n):
    """(sum of |v - w|, number of v != w) of v = values[x, :n], w = other[y, :n]
    (int32)."""
    total = I32(0)
    nonzero = I32(0)
    for i in range(n):
        v = abs(I32(values[U(x), U(i)] - other[U(y), U(i)]))
        total = I32(total + v)
        nonzero = I32(nonzero + I32(v != 0))
    return total, nonzero


@jit.kernel
def neighbour_planes(ws, b, ncomp, w, h, own, na, nb, nc, nd):
    """Block b of workspaces ws and its neighbours a (left), b (up), c (up-left), d
    (up-right) as flat (C, n) planes, so that each predictor is one plain loop the
    compiler vectorises."""
    for c in range(ncomp):
        for y in range(h):
            for x in range(w):
                i = U(y * w + x)
                own[U(c), i] = ws[U(b), U(c), U(y + 1), U(x + 1)]
                na[U(c), i] = ws[U(b), U(c), U(y + 1), U(x)]
                nb[U(c), i] = ws[U(b), U(c), U(y), U(x + 1)]
                nc[U(c), i] = ws[U(b), U(c), U(y), U(x)]
                nd[U(c), i] = ws[U(b), U(c), U(y), U(x + 2)]


@jit.export("void(int32[:, :, :, ::1], int16[:, :, :, ::1], uint16[:, :, ::1], "
            "uint16[:, :, ::1])")
def block_stats(ws, residuals, sad, nonzero):
    """features.block_stats, block-major: the residuals of all 8 predictors (N, 8, C, n)
    and per predictor the sum of |v| and the count of v != 0 of each magnitude sequence
    of features.SEQUENCES, in that order: sad, nonzero (N, 8, S). ws: workspaces
    (N, C, h+1, w+2) of image.block_workspaces."""
    n_blocks, ncomp, hp, wp = ws.shape
    h = hp - 1
    w = wp - 2
    n = h * w
    # Work planes of neighbour_planes.
    own = np.empty((4, 64), np.int32)
    na = np.empty((4, 64), np.int32)
    nb = np.empty((4, 64), np.int32)
    nc = np.empty((4, 64), np.int32)
    nd = np.empty((4, 64), np.int32)
    r = np.empty((4, 64), np.int32)
    half = np.empty((3, 64), np.int32)         # tdiv2(r_y)
    three = np.empty((3, 64), np.int32)        # tdiv2(3 r_y)
    avg = np.empty((3, 64), np.int32)          # r_z - tdiv2(r_x + r_y)
    for b in range(n_blocks):
        neighbour_planes(ws, b, ncomp, w, h, own, na, nb, nc, nd)
        for p in range(8):
            for c in range(ncomp):
                predict_plane(p, own, na, nb, nc, nd, c, n, r)
                for i in range(n):
                    residuals[U(b), U(p), U(c), U(i)] = r[U(c), U(i)]
            for z in range(3):
                x0 = 1 if z == 0 else 0
                x1 = 1 if z == 2 else 2
                for i in range(n):
                    v = r[U(z), U(i)]
                    half[U(z), U(i)] = I32((v - (v >> 31)) >> 1)
                    t = I32(3 * v)
                    three[U(z), U(i)] = I32((t - (t >> 31)) >> 1)
                    t = I32(r[U(x0), U(i)] + r[U(x1), U(i)])
                    avg[U(z), U(i)] = I32(v - I32((t - (t >> 31)) >> 1))
            # The order of features.SEQUENCES: S(x), D(x < y), H(x != y), T(x != y), A(z),
            # S(3).
            k = 0
            for x in range(3):
                sad[b, p, k], nonzero[b, p, k] = sum_abs(r, x, n)
                k += 1
            for x in range(3):
                for y in range(x + 1, 3):
                    sad[b, p, k], nonzero[b, p, k] = sum_abs_difference(r, x, r, y, n)
                    k += 1
            for x in range(3):
                for y in range(3):
                    if x != y:
                        sad[b, p, k], nonzero[b, p, k] = sum_abs_difference(r, x, half, y,
                                                                            n)
                        k += 1
            for x in range(3):
                for y in range(3):
                    if x != y:
                        sad[b, p, k], nonzero[b, p, k] = sum_abs_difference(r, x, three, y,
                                                                            n)
                        k += 1
            for z in range(3):
                sad[b, p, k], nonzero[b, p, k] = sum_abs(avg, z, n)
                k += 1
            if ncomp == 4:
                sad[b, p, k], nonzero[b, p, k] = sum_abs(r, 3, n)


@jit.export("void(uint16[:, :, ::1], int64, int64[:, ::1], int64[:, ::1])")
def least_sad_pairs(sad, ncomp, pair_sequence, out):
    """features.top_pairs(features.pair_proxy(sad, C), k): per block the k = out.shape[1]
    (predictor, filter) pairs with the least sum of absolute coded values, ascending,
    ties to the lower pair id. sad: (N, 8, S) of block_stats; pair_sequence:
    features.PAIR_SEQUENCE (96, 4)."""
    n_blocks = sad.shape[0]
    k = out.shape[1]
    heap = np.empty(k, np.int64)              # a max-heap of the k least keys so far
    first = np.empty(4, np.int64)
    second = np.empty(4, np.int64)
    for b in range(n_blocks):
        count = 0
        for p in range(8):
            for perm in range(6):
                # Filter 16 perm + 4 primary + secondary: component 0 depends on perm only,
                # 1 on (perm, primary), 2 on (perm, secondary): 16 sums of 1 + 4 + 4 values.
                code = 16 * perm
                base = sad[U(b), U(p), U(pair_sequence[U(code), 0])]
                if ncomp == 4:
                    base += sad[U(b), U(p), U(pair_sequence[U(code), 3])]
                low1 = low2 = 1 << 30
                for j in range(4):
                    first[U(j)] = sad[U(b), U(p), U(pair_sequence[U(code + 4 * j), 1])]
                    second[U(j)] = sad[U(b), U(p), U(pair_sequence[U(code + j), 2])]
                    low1 = min(low1, first[U(j)])
                    low2 = min(low2, second[U(j)])
                ids = p * 96 + code
                if count == k and (base + low1 + low2) * 1024 + ids >= heap[0]:
                    continue                          # none of the 16 gets in
                for j1 in range(4):
                    for j2 in range(4):
                        key = (base + first[U(j1)] + second[U(j2)]) * 1024 + ids + 4 * j1 + j2
                        if count < k:
                            j = count                 # sift up
                            while j > 0 and heap[U((j - 1) >> 1)] < key:
                                heap[U(j)] = heap[U((j - 1) >> 1)]
                                j = (j - 1) >> 1
                            heap[U(j)] = key
                            count += 1
                        elif key < heap[0]:
                            j = 0                     # replace the root, sift down
                            while True:
                                child = 2 * j + 1
                                if child >= k:
                                    break
                                if child + 1 < k and heap[U(child + 1)] > heap[U(child)]:
                                    child += 1
                                if heap[U(child)] <= key:
                                    break
                                heap[U(j)] = heap[U(child)]
                                j = child
                            heap[U(j)] = key
        # ascending: insertion sort of the k keys
        for i in range(1, count):
            key = heap[U(i)]
            j = i
            while j > 0 and heap[U(j - 1)] > key:
                heap[U(j)] = heap[U(j - 1)]
                j -= 1
            heap[U(j)] = key
        for j in range(k):
            out[U(b), U(j)] = heap[U(j)] & 1023


F32 = np.float32
_LOG2_SERIES = np.array(LOG2_SERIES)      # a global array: a constant of the compiled code


@jit.kernel(inline=True, allocates=False)
def log2_f32(x):
    """features.log2_f32 of one x >= 1, by the same float64 operations in the same order."""
    m, e = math.frexp(np.float64(x))
    if m < SQRT_HALF:
        m = m * 2.0
        e = e - 1
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    last = len(_LOG2_SERIES) - 1
    p = _LOG2_SERIES[last]
    for k in range(last - 1, -1, -1):
        p = p * t2 + _LOG2_SERIES[k]
    return F32(e + t * p)


@jit.export("void(uint16[:, :, ::1], uint16[:, :, ::1], int64[:, ::1], int64, int64, "
            "int64[:, ::1], float32[:, :, ::1])")
def pair_measures(sad, nonzero, pairs, ncomp, n, pair_sequence, out):
    """features.pair_features(identity=False): the 13 measures (layout pairs-v1) of the
    pairs pairs[b] of each block, out (N, K, 13) float32, by the same float32 operations
    in the same order (so the same numbers; the logarithms are features.log2_f32's).
    sad, nonzero: (N, 8, S) of block_stats."""
    scale = F32(64 / n)
    inverse = F32(1 / n)
    one = F32(1)
    for b in range(pairs.shape[0]):
        for k in range(pairs.shape[1]):
            pair = pairs[U(b), U(k)]
            p = U(pair // 96)
            f = U(pair % 96)
            total = F32(0)
            for c in range(4):
                if c < ncomp:
                    q = U(pair_sequence[f, U(c)])
                    sc = F32(sad[U(b), p, q])
                    zc = F32(nonzero[U(b), p, q])
                    out[U(b), U(k), U(c)] = log2_f32(one + sc * scale)
                    out[U(b), U(k), U(4 + c)] = zc * inverse
                    out[U(b), U(k), U(8 + c)] = log2_f32(one + sc / max(zc, one))
                    total = total + sc
                else:
                    out[U(b), U(k), U(c)] = 0
                    out[U(b), U(k), U(4 + c)] = 0
                    out[U(b), U(k), U(8 + c)] = 0
            out[U(b), U(k), 12] = log2_f32(one + total * scale)


# ---------------------------------------------------------------------------------------
# Scan features (features.scan_features): their integer sums

N_SCAN_SUMS = 32 + 3 * 4 + 2


BIT_LENGTH = np.array([int(v).bit_length() for v in range(1024)], np.int64)


@jit.export("void(int16[:, :, :, ::1], int64[:, ::1], intp[:, ::1], intp[:, ::1], "
            "intp[:, ::1], intp[:, ::1], intp[:, ::1], int64, int64, int32[:, :, ::1])")
def scan_sums(residuals, pairs, scans, steps, step_ids, undirected, pair_ids, head, part,
              out):
    """The integer sums behind features.scan_features of the pairs pairs[b] (ids
    predictor * 96 + filter) of each block, out (N, P, N_SCAN_SUMS): per reorder r the
    sums of features._scan_chunk's four scan terms (bit-length variation along each
    component's scan; bit lengths of the first `head` positions; of the first `part` minus
    the last `part`; variation along the interleaved sequence), then per component the
    sum of |v|, of bit lengths and the count of v != 0, then the sums of |B_0 - B_1| and
    |B_1 - B_2| over the positions. scans (8, n), steps, step_ids, undirected, pair_ids:
    the size's features._scan_tables (the 8 scans share most of their steps, so each
    step's terms are summed once)."""
    n_blocks, n_pairs = pairs.shape
    ncomp = residuals.shape[2]
    n = residuals.shape[3]
    raster = np.arange(n).reshape(1, n)
    coded = np.empty(4 * 64, np.int64)
    # Bit lengths position-major, 4 slots per position (zeros past C), flat: a scan's
    # variation is then one loop over |o[j] - o[j - 4]|, which the compiler vectorises.
    bits = np.zeros(64 * 4, np.int32)
    ordered = np.zeros(64 * 4, np.int32)
    total = np.empty(64, np.int64)
    flat = residuals.reshape(-1)
    for b in range(n_blocks):
        for k in range(n_pairs):
            pair = pairs[U(b), U(k)]
            coded_block(flat, (b * 8 + pair // 96) * ncomp * n, pair % 96, raster, 0, ncomp, n,
                        False, coded)
            for j in range(out.shape[2]):
                out[U(b), U(k), U(j)] = 0
            for c in range(ncomp):
                sad = 0
                bitsum = 0
                nonzero = 0
                for i in range(n):
                    mag = abs(coded[U(c * n + i)])
                    bl = BIT_LENGTH[U(mag)]
                    bits[U(4 * i + c)] = bl
                    sad += mag
                    bitsum += bl
                    nonzero += mag != 0
                out[U(b), U(k), U(32 + c)] = sad
                out[U(b), U(k), U(36 + c)] = bitsum
                out[U(b), U(k), U(40 + c)] = nonzero
            within = 0
            d01 = 0
            d12 = 0
            for i in range(n):
                b0, b1 = bits[U(4 * i)], bits[U(4 * i + 1)]
                b2, b3 = bits[U(4 * i + 2)], bits[U(4 * i + 3)]
                total[U(i)] = b0 + b1 + b2 + b3
                d01 += abs(b1 - b0)
                d12 += abs(b2 - b1)
                within += abs(b3 - b2) if ncomp == 4 else 0
            out[U(b), U(k), 44] = d01
            out[U(b), U(k), 45] = d12
            within += d01 + d12
            last = ncomp - 1
            for r in range(8):
                # The scan's bit lengths in its order: its terms are then differences of
                # neighbouring positions.
                for i in range(n):
                    q = U(4 * scans[U(r), U(i)])
                    for c in range(4):
                        ordered[U(4 * i + c)] = bits[q + U(c)]
                variation = I32(0)
                for j in range(4, 4 * n):
                    variation = I32(variation + abs(I32(ordered[U(j)] - ordered[U(j - 4)])))
                cross = I32(0)
                for i in range(1, n):
                    cross = I32(cross + abs(I32(ordered[U(4 * i)] -
                                                ordered[U(4 * i - 4 + last)])))
                first = 0
                for i in range(head):
                    first += total[U(scans[U(r), U(i)])]
                early = 0
                late = 0
                for i in range(part):
                    early += total[U(scans[U(r), U(i)])]
                    late += total[U(scans[U(r), U(n - part + i)])]
                out[U(b), U(k), U(4 * r)] = variation
                out[U(b), U(k), U(4 * r + 1)] = first
                out[U(b), U(k), U(4 * r + 2)] = early - late
                out[U(b), U(k), U(4 * r + 3)] = within + cross


# ---------------------------------------------------------------------------------------
# Blocks straight from the image (the file pass and the encoder)


@jit.kernel
def block_workspace(samples, ox, oy, tw, th, bx, by, w, h, ws):
    """The padded workspace of one block (cost spec §1.4) into ws (C, h+1, w+2) int64:
    samples outside the block's tile read 0. (bx, by absolute, as image.block_grid.)"""
    ncomp = samples.shape[2]
    for y in range(h + 1):
        sy = by - 1 + y
        for x in range(w + 2):
            sx = bx - 1 + x
            inside = oy <= sy < oy + th and ox <= sx < ox + tw
            for c in range(ncomp):
                ws[U(c), U(y), U(x)] = samples[U(sy), U(sx), U(c)] if inside else 0


@jit.kernel
def block_residuals(ws, p, w, h, ncomp, res):
    """Residuals of predictor p (cost spec §2) of a workspace: res[p] (C, n) raster
    order."""
    for c in range(ncomp):
        for y in range(h):
            for x in range(w):
                res[U(p), U(c), U(y * w + x)] = ws[U(c), U(y + 1), U(x + 1)] - predict(
                    p, ws[U(c), U(y + 1), U(x)], ws[U(c), U(y), U(x + 1)],
                    ws[U(c), U(y), U(x)], ws[U(c), U(y), U(x + 2)])


@jit.kernel
def row_layout(res, p, code, scans, reorder, ncomp, n, interleaved, out):
    """A block's coded values as its Golomb rows take them (file spec §5.4), from the
    residuals res[p] (C, n) of its predictor, read in the order scans[reorder]:
    interleaved, the pixel-interleaved sequence; else component after component,
    component 3 (C = 4) right after component 0 — it shares component 0's row. Returns
    the length of the first row's part: C * n or n (or 2n)."""
    perm = code >> 4
    alpha = _ALPHA[(code >> 2) & 3]
    beta = _BETA[code & 3]
    gamma = _GAMMA[code & 3]
    s0 = _PERMS[perm, 0]
    s1 = _PERMS[perm, 1]
    s2 = _PERMS[perm, 2]
    for i in range(n):
        pos = U(scans[U(reorder), U(i)])
        d0 = res[U(p), U(s0), pos]
        d1 = res[U(p), U(s1), pos]
        d2 = res[U(p), U(s2), pos]
        v1 = d1 - tdiv2(alpha * d0)
        v2 = d2 - tdiv2(beta * d0 + gamma * d1)
        if interleaved:
            out[U(i * ncomp)] = d0
            out[U(i * ncomp + 1)] = v1
            out[U(i * ncomp + 2)] = v2
            if ncomp == 4:
                out[U(i * ncomp + 3)] = res[U(p), 3, pos]
        elif ncomp == 4:
            out[U(i)] = d0
            out[U(n + i)] = res[U(p), 3, pos]
            out[U(2 * n + i)] = v1
            out[U(3 * n + i)] = v2
        else:
            out[U(i)] = d0
            out[U(n + i)] = v1
            out[U(2 * n + i)] = v2
    if interleaved:
        return ncomp * n
    return 2 * n if ncomp == 4 else n


@jit.kernel
def run_code_bits(length):
    """Bits of a run-length code (file spec §7.5) of a run of `length` >= 1 values."""
    if length <= 2:
        return length
    g = length - 2
    n = 0
    while g > 0:
        g >>= 1
        n += 1
    return 1 + 2 * n


@jit.kernel
def file_row_bits(seq, start, length, entropy, kc, up, down, states, block, row, scratch,
                  exits):
    """File bits of a block's values seq[start:start + length] appended to Golomb row
    `row` of its tile (filecost._sequence_bits): from the row's state states[:, block,
    row] = (a, kind of the open run, its length, the row has values). Writes what the
    values leave into exits[:, block, row] when exits is not empty."""
    a = states[0, block, row]
    if entropy == 0:
        bits, a = plain_bits(seq, start, length, kc, row, up, down, a)
        if exits.shape[1]:
            exits[0, block, row] = a
            exits[3, block, row] = 1
        return bits
    bits, a = runlength_bits(seq, start, length, kc, row, up, down, a, scratch)
    started = states[3, block, row]
    bits += 1 - started                  # the first-value flag once per row
    live = seq[U(start)] != 0
    first = 1
    while first < length and (seq[U(start + first)] != 0) == live:
        first += 1
    open_run = states[2, block, row]
    joins = started == 1 and np.int64(live) == states[1, block, row]
    if joins:
        # The first run continues the open one: its code grows instead of starting anew.
        bits += run_code_bits(open_run + first) - run_code_bits(open_run) - \
            run_code_bits(first)
    if exits.shape[1]:
        last = seq[U(start + length - 1)] != 0
        tail = 1
        while tail < length and (seq[U(start + length - 1 - tail)] != 0) == last:
            tail += 1
        exits[0, block, row] = a
        exits[1, block, row] = np.int64(last)
        exits[2, block, row] = tail + (open_run if joins and first == length else 0)
        exits[3, block, row] = 1
    return bits


@jit.export("void(uint8[:, :, ::1], int64[:, ::1], int64[:, :, ::1], uint8[:, ::1], "
            "int64[:, :, ::1], int16[:, ::1], int64[:, ::1], int64[:, ::1], "
            "int64[:, :, ::1])")
def file_golomb_bits(samples, grid, candidates, valid, states, kc, ratios, bits, exits):
    """filecost._candidate_bits from the image: bits[b, k] = the file's Golomb-row bits
    of candidate candidates[b, k] = (p, f, r, i, e) of block grid[b] (image.block_grid
    rows) from the row states `states` (4, N, 8) its tile's earlier blocks left; -1 where
    valid[b, k] is 0. exits (4, N, 8), if not empty, gets what candidate 0 of each block
    leaves in the rows it uses (the other rows are left as they are)."""
    ncomp = samples.shape[2]
    n_blocks, n_cand = candidates.shape[:2]
    ws = np.empty((4, 9, 10), np.int64)
    res = np.empty((8, 4, 64), np.int64)
    have = np.zeros(8, np.int64)
    seq = np.empty(4 * 64, np.int64)
    scratch = np.empty(4 * 64, np.int64)
    scans = np.empty((8, 64), np.int64)
    no_exits = np.empty((4, 0, 8), np.int64)
    for b in range(n_blocks):
        ox, oy, bx, by, w, h = grid[b, 0], grid[b, 1], grid[b, 2], grid[b, 3], grid[b, 4], \
            grid[b, 5]
        n = w * h
        # Tiles of any height: a workspace reads only rows above the block's own bottom.
        tw = min(8192, samples.shape[1] - ox)
        th = samples.shape[0] - oy
        block_workspace(samples, ox, oy, tw, th, bx, by, w, h, ws)
        have[:] = 0
        for r in range(8):
            for i in range(n):
                scans[r, i] = REORDER[r, i] if w == 8 and h == 8 else i
        for k in range(n_cand):
            if not valid[b, k]:
                bits[b, k] = -1
                continue
            p, f, r, inter, e = candidates[b, k, 0], candidates[b, k, 1], \
                candidates[b, k, 2], candidates[b, k, 3], candidates[b, k, 4]
            if not have[p]:
                block_residuals(ws, p, w, h, ncomp, res)
                have[p] = 1
            first = row_layout(res, p, f, scans, r, ncomp, n, inter == 1, seq)
            out = exits if k == 0 and exits.shape[1] else no_exits
            if inter:
                row = 6 + e
                total = file_row_bits(seq, 0, first, e, kc, ratios[row, 0],
                                      ratios[row, 1], states, b, row, scratch, out)
            else:
                total = 0
                at = 0
                for c in range(3):
                    length = first if c == 0 else n
                    row = (_RUNLENGTH_ROWS if e else _PLAIN_ROWS)[c]
                    total += file_row_bits(seq, at, length, e, kc, ratios[row, 0],
                                           ratios[row, 1], states, b, row, scratch, out)
                    at += length
            bits[b, k] = total


REORDER = stages.REORDER_TABLES.astype(np.int64)


@jit.export("void(float32[:, ::1], int64[:, :, ::1], float32[:, ::1], int64[::1], "
            "int64[::1])")
def viterbi(cost, values, weights, starts, pick):
    """filecost._viterbi: per tile (blocks starts[t]:starts[t + 1]) the candidate of each
    block minimising the sum of cost (N, K) (inf: not a candidate) and, between
    consecutive blocks, weights[t, s] for each stream s whose value (values (N, K, 5))
    changes; pick (N,) gets the candidate indices. float32 sums in the order NumPy's
    makes them, first minimum on ties, so the choices are _viterbi's."""
    n_cand = cost.shape[1]
    n_streams = values.shape[2]
    back = np.zeros((cost.shape[0], n_cand), np.int64)
    total = np.empty(n_cand, np.float32)
    new = np.empty(n_cand, np.float32)
    for t in range(starts.shape[0] - 1):
        t0 = starts[t]
        t1 = starts[t + 1]
        if t1 == t0:
            continue
        for i in range(n_cand):
            total[i] = cost[t0, i]
        for b in range(t0 + 1, t1):
            for i in range(n_cand):
                best = np.float32(np.inf)
                arg = 0
                for j in range(n_cand):
                    step = np.float32(0)
                    for s in range(n_streams):
                        if values[b - 1, j, s] != values[b, i, s]:
                            step = np.float32(step + weights[t, s])
                    path = np.float32(total[j] + step)
                    if path < best:
                        best = path
                        arg = j
                back[b, i] = arg
                new[i] = np.float32(best + cost[b, i])
            for i in range(n_cand):
                total[i] = new[i]
        arg = 0
        for i in range(1, n_cand):
            if total[i] < total[arg]:
                arg = i
        for b in range(t1 - 1, t0 - 1, -1):
            pick[b] = arg
            arg = back[b, arg]


# ---------------------------------------------------------------------------------------
# The encoder's Golomb rows (tlgfile.encode_tlg8; file spec §5.4, §7)

RUNLENGTH_ROW = np.array([r in stages.RUNLENGTH_ROWS or r == stages.INTERLEAVED_ROWS[1]
                          for r in range(8)], np.int64)


@jit.kernel
def block_rows(entropy, interleaved, ncomp, n, lengths):
    """The rows a block's coded values go to (file spec §5.4) and how many to each:
    lengths (3,) and the rows as a tuple, in the order row_layout lays the values out."""
    if interleaved:
        lengths[0] = ncomp * n
        lengths[1] = 0
        lengths[2] = 0
        return 6 + entropy, 0, 0
    lengths[0] = 2 * n if ncomp == 4 else n
    lengths[1] = n
    lengths[2] = n
    if entropy:
        return _RUNLENGTH_ROWS[0], _RUNLENGTH_ROWS[1], _RUNLENGTH_ROWS[2]
    return _PLAIN_ROWS[0], _PLAIN_ROWS[1], _PLAIN_ROWS[2]


@jit.export("void(uint8[:, :, ::1], int64[:, ::1], int64[::1], int64[:, ::1], int16[::1], "
            "int64[:, ::1])")
def file_rows(samples, tiles, tile_first, choices, values, row_start):
    """The Golomb rows of every tile (file spec §5.4): tile t's row r is
    values[row_start[t, r]:row_start[t, r + 1]], the tile's rows one after the other
    (row_start (T, 9)). tiles (T, 4) = ox, oy, tw, th; the blocks of tile t are
    choices[tile_first[t]:tile_first[t + 1]] (rows p, f, r, i, e), in block index order."""
    ncomp = samples.shape[2]
    ws = np.empty((4, 9, 10), np.int64)
    res = np.empty((8, 4, 64), np.int64)
    seq = np.empty(4 * 64, np.int64)
    lengths = np.empty(3, np.int64)
    counts = np.zeros(8, np.int64)
    cursor = np.zeros(8, np.int64)
    base = 0
    for t in range(tiles.shape[0]):
        ox, oy, tw, th = tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3]
        counts[:] = 0
        b = tile_first[t]
        for by in range(0, th, 8):
            for bx in range(0, tw, 8):
                w = min(8, tw - bx)
                h = min(8, th - by)
                rows = block_rows(choices[b, 4], choices[b, 3] == 1, ncomp, w * h, lengths)
                for j in range(3):
                    counts[rows[j]] += lengths[j]
                b += 1
        for r in range(8):
            row_start[t, r] = base
            cursor[r] = base
            base += counts[r]
        row_start[t, 8] = base
        b = tile_first[t]
        for by in range(0, th, 8):
            for bx in range(0, tw, 8):
                w = min(8, tw - bx)
                h = min(8, th - by)
                n = w * h
                block_workspace(samples, ox, oy, tw, th, ox + bx, oy + by, w, h, ws)
                p = choices[b, 0]
                block_residuals(ws, p, w, h, ncomp, res)
                row_layout(res, p, choices[b, 1], REORDER if w == 8 and h == 8 else RASTER,
                           choices[b, 2], ncomp, n, choices[b, 3] == 1, seq)
                rows = block_rows(choices[b, 4], choices[b, 3] == 1, ncomp, n, lengths)
                at = 0
                for j in range(3):
                    r = rows[j]
                    for i in range(lengths[j]):
                        values[U(cursor[r] + i)] = seq[U(at + i)]
                    cursor[r] += lengths[j]
                    at += lengths[j]
                b += 1


RASTER = np.tile(np.arange(64, dtype=np.int64), (8, 1))    # edge blocks: every "reorder"


@jit.kernel
def coded_magnitude(v, runlength):
    """m of a value that gets a Golomb-Rice code (file spec §7.4-§7.5)."""
    m = (v << 1) ^ (v >> 63)
    return m - 1 if runlength else m


@jit.export("void(int16[::1], int64[:, ::1], int64[:, ::1], int64[:, :, ::1], int64[::1])")
def index_costs(values, row_start, ratios, cost, coded):
    """golombfit.index_costs of every row of the image: cost[r, i, k] = bits of the
    magnitudes coded at k index i < 1024 in row r if K[i] = k; coded[r] = how many values
    row r codes (at any index). The state, and so the index, depends on the ratios
    only (file spec §7.2)."""
    for t in range(row_start.shape[0]):
        for r in range(8):
            up = ratios[r, 0]
            down = ratios[r, 1]
            runlength = RUNLENGTH_ROW[r]
            a = 0
            for j in range(row_start[t, r], row_start[t, r + 1]):
                v = np.int64(values[U(j)])
                if runlength and v == 0:
                    continue
                m = coded_magnitude(v, runlength)
                coded[r] += 1
                idx = (a + 8) >> 4
                if idx < 1024:
                    for k in range(9):
                        cost[U(r), U(idx), U(k)] += RICE[U((k << M_BITS) | m)]
                rho = up if a < m else down
                a += ((16 * m - a) * rho + 8) >> 4


@jit.export("void(int64[:, ::1], int64[::1])")
def fit_counts(cost, counts):
    """golombfit.fit_counts: the counts n_0..n_8 of the non-decreasing k per index with
    the fewest bits under cost (1024, 9), ties as it breaks them."""
    n_idx = cost.shape[0]
    best = np.empty(9, np.int64)
    prefix = np.empty(9, np.int64)
    came_from = np.zeros((n_idx, 9), np.int64)
    for k in range(9):
        best[k] = cost[0, k]
    for i in range(1, n_idx):
        low = best[0]
        last = 0
        for k in range(9):
            low = min(low, best[k])
            prefix[k] = low
            # the last k' <= k whose best is the running minimum (where(best <= prefix))
            if best[k] <= low:
                last = k
            came_from[i, k] = last
        for k in range(9):
            best[k] = prefix[k] + cost[i, k]
    k = 0
    for j in range(1, 9):
        if best[j] < best[k]:
            k = j
    counts[:] = 0
    for i in range(n_idx - 1, -1, -1):
        counts[k] += 1
        k = came_from[i, k]


@jit.kernel
def gamma_field(g):
    """(value, length) of the Elias gamma code of g >= 1 (file spec §7.3)."""
    z = -1
    x = g
    while x > 0:
        x >>= 1
        z += 1
    return (np.int64(1) << z) | ((g - (np.int64(1) << z)) << (z + 1)), 2 * z + 1


@jit.kernel
def rice_field(m, k):
    """(value, length) of the Golomb-Rice code of m with parameter k, with escape."""
    q = m >> k
    if q < 16:
        return (np.int64(1) << q) | ((m & ((np.int64(1) << k) - 1)) << (q + 1)), q + 1 + k
    value, length = gamma_field(m - 15)
    return value << 16, length + 16


@jit.kernel
def run_field(length):
    """(value, length) of a run-length code (file spec §7.5)."""
    if length == 1:
        return 0, 1
    if length == 2:
        return 1, 2
    value, bits = gamma_field(length - 2)
    return 3 | (value << 2), bits + 2


@jit.kernel
def put_bits(out, state, value, length):
    """Append a field (value, length <= 56) LSB first: state = (byte position, pending
    bits, their count), the pending bits flushed a byte at a time."""
    pos, acc, count = state
    acc |= value << count
    count += length
    while count >= 8:
        out[U(pos)] = acc & 255
        acc >>= 8
        count -= 8
        pos += 1
    return pos, acc, count


@jit.kernel
def row_code(m, kt, a, up, down, out, state):
    """One value of a Golomb row: its Rice code at the row's state a, written, and the
    state after it (file spec §7.2-§7.3). Returns (length, state, a)."""
    value, length = rice_field(m, kt[U(min((a + 8) >> 4, 1024))])
    state = put_bits(out, state, value, length)
    rho = up if a < m else down
    return length, state, a + (((16 * m - a) * rho + 8) >> 4)


@jit.kernel
def tile_rows(values, start, ktab, ratios, out, pos):
    """Write one tile's Golomb rows, row r = values[start[r]:start[r + 1]], from byte pos
    of out, zero-padded to a byte; return (bytes, bits)."""
    state = (pos, np.int64(0), np.int64(0))
    bits = 0
    for r in range(8):
        j0 = start[r]
        j1 = start[r + 1]
        if j1 == j0:
            continue
        up = ratios[r, 0]
        down = ratios[r, 1]
        kt = ktab[r]
        a = 0
        if not RUNLENGTH_ROW[r]:
            for j in range(j0, j1):
                length, state, a = row_code(coded_magnitude(np.int64(values[U(j)]), False),
                                            kt, a, up, down, out, state)
                bits += length
            continue
        live = values[U(j0)] != 0
        bits += 1
        state = put_bits(out, state, np.int64(live), 1)
        j = j0
        while j < j1:
            live = values[U(j)] != 0
            e = j + 1
            while e < j1 and (values[U(e)] != 0) == live:
                e += 1
            value, length = run_field(e - j)
            bits += length
            state = put_bits(out, state, value, length)
            if live:
                for i in range(j, e):
                    length, state, a = row_code(coded_magnitude(np.int64(values[U(i)]), True),
                                                kt, a, up, down, out, state)
                    bits += length
            j = e
    if state[2]:
        state = put_bits(out, state, np.int64(0), 8 - state[2])
    return (bits + 7) // 8, bits


# Bytes of out that write_rows may need per value (compiled code does not check bounds,
# so this is a proof, not a guess): a value's code is at most 16 + 21 bits (rice_field:
# k <= 8, an escaped magnitude m < 2^11 has a 21-bit gamma code of m - 15), its share of
# a run field at most 3 bits (run_field of a run of L values: <= 3 + 2 log2 L <= 3 L), so
# 40 bits, 5 bytes; a tile's 8 run flags and its padding take 2 more bytes, within the
# 3 bytes per value to spare of any tile that has a row, plus the byte per tile given.
ROW_BYTES_PER_VALUE = 8


@jit.export("void(int16[::1], int64[:, ::1], int64[:, ::1], int64[:, ::1], uint8[::1], "
            "int64[::1])")
def write_rows(values, row_start, ktab, ratios, out, ends):
    """Each tile's Golomb rows (tile_rows), one tile after the other from out[0]; ends[t]:
    the byte after tile t. out: ROW_BYTES_PER_VALUE per value and a byte per tile (one
    pass: the sizes come out of the writing)."""
    pos = 0
    for t in range(row_start.shape[0]):
        size, _ = tile_rows(values, row_start[t], ktab, ratios, out, pos)
        pos += size
        ends[t] = pos


# ---------------------------------------------------------------------------------------
# The reference search (search.search_blocks; cost spec §7)

PREDICTOR_POSITION = np.argsort(np.array(stages.PREDICTOR_ORDER)).astype(np.int64)
FILTER_POSITION = np.argsort(np.array(stages.FILTER_ORDER)).astype(np.int64)
PREDICTOR_ORDER = np.array(stages.PREDICTOR_ORDER, np.int64)
FILTER_ORDER = np.array(stages.FILTER_ORDER, np.int64)
N_CANDIDATES = 52
# Candidate (deduplicated filter output) of component c of each filter code, as
# search.CANDIDATE_INDEX: [0, 3) component 0 by source, [3, 27) component 1 by (perm,
# primary), [27, 51) component 2 by (perm, secondary), 51 component 3.
_codes = np.arange(96)
CANDIDATE_INDEX = np.stack([_PERMS[_codes >> 4, 0], 3 + (_codes >> 4) * 4 + ((_codes >> 2) & 3),
                            27 + (_codes >> 4) * 4 + (_codes & 3),
                            np.full(96, 51)], axis=1).astype(np.int64)
NO_KEY = np.int64(1) << 62
RANK_BITS = 15


@jit.kernel
def plain_bits_limited(seq, length, kc, row, up, down, limit, least):
    """plain_bits of seq[:length] from state 0, or some number > limit once the bits
    exceed it (the caller then only needs to know that it lost). least: the sum of the
    values' least codes MIN_RICE (least_bits), a bound from the start; each code adds its
    excess over it."""
    bits = least
    a = 0
    for j in range(length):
        if bits > limit:
            break
        v = seq[U(j)]
        m = (v << 1) ^ (v >> 63)
        bits += RICE[U(kc[U(row), U(a)] | m)] - MIN_RICE[U(m)]
        rho = up if a < m else down
        a += ((16 * m - a) * rho + 8) >> 4
    return bits


@jit.kernel
def runlength_bits_limited(seq, length, kc, row, up, down, limit, least, scratch):
    """The run-length estimate (with its flag bit) of seq[:length] from state 0, or some
    number > limit once it exceeds it; as plain_bits_limited, least being the sum of the
    non-zero values' least codes. The run codes (which do not depend on the state) are
    charged first, in a pass that also gathers the non-zero values."""
    bits = 1 + least
    run = 0
    previous = -1
    count = 0
    for j in range(length):
        v = seq[U(j)]
        live = np.int64(v != 0)
        run = (run & -np.int64(live == previous)) + 1
        previous = live
        bits += RUN_STEP[U(run)]
        if bits > limit:
            return bits
        scratch[U(count)] = v
        count += live
    a = 0
    for j in range(count):
        if bits > limit:
            break
        v = scratch[U(j)]
        m = ((v << 1) ^ (v >> 63)) - 1
        bits += RICE[U(kc[U(row), U(a)] | m)] - MIN_RICE[U(m)]
        rho = up if a < m else down
        a += ((16 * m - a) * rho + 8) >> 4
    return bits


@jit.kernel
def least_bits(cand, p, q, n, entropy):
    """The sum of the least codes (MIN_RICE) of candidate sequence cand[p, q, :n]: of all
    its values (entropy 0), or of its non-zero ones (1). No order changes it, and no
    estimate is below it (the run-length one adds a flag and at least one run code)."""
    bits = 0
    for i in range(n):
        v = cand[U(p), U(q), U(i)]
        m = (v << 1) ^ (v >> 63)
        if entropy:
            if v != 0:
                bits += MIN_RICE[U(m - 1)]
        else:
            bits += MIN_RICE[U(m)]
    return bits


@jit.kernel
def keep_two(top, key):
    """The two least keys so far (top (2,)), ascending: the reference's best and second
    under its strict "<" bookkeeping (cost spec §7.3), keys being (bits << 15) + trial
    rank."""
    if key < top[0]:
        top[1] = top[0]
        top[0] = key
    elif key < top[1]:
        top[1] = key


@jit.kernel
def trial_rank(p, f, r, i, e):
    """Position of configuration (p, f, r, i, e) in the reference's trial order."""
    return (((PREDICTOR_POSITION[U(p)] * 96 + FILTER_POSITION[U(f)]) * 8 + r) * 4 + i * 2 + e)


@jit.kernel
def decode_key(key, out):
    """out (6,) = predictor, filter, reorder, interleave, entropy, bits of a key."""
    rank = key & ((1 << RANK_BITS) - 1)
    e = rank & 1
    i = (rank >> 1) & 1
    r = (rank >> 2) & 7
    pf = rank >> 5
    out[0] = PREDICTOR_ORDER[U(pf // 96)]
    out[1] = FILTER_ORDER[U(pf % 96)]
    out[2] = r
    out[3] = i
    out[4] = e
    out[5] = key >> RANK_BITS


@jit.export("void(int32[:, :, :, ::1], int64, int16[:, ::1], int64[:, ::1], "
            "int64[:, ::1], int64[:, ::1])")
def search_blocks(ws, exhaustive, kc, ratios, best, second):
    """search.search_blocks: the best and second configuration (rows predictor, filter,
    reorder, interleave, entropy, bits) of blocks of one size (ws (N, C, h+1, w+2)): the
    reference's 1.3 energy exit in its trial order, unless `exhaustive`, then every
    remaining configuration, ranked by (bits, trial order).

    Exact, and faster than estimating everything: a configuration's estimate stops as
    soon as it exceeds the second best found so far (it can then be neither), pairs are
    tried from the lowest energy up (good ones first make that bound tight early), and
    the interleave-0 component sequences, shared by many filters, are estimated once."""
    n_blocks, ncomp, hp, wp = ws.shape
    h = hp - 1
    w = wp - 2
    n = h * w
    full = w == 8 and h == 8
    n_orders = 8 if full else 1
    own = np.empty((4, 64), np.int32)
    na = np.empty((4, 64), np.int32)
    nb = np.empty((4, 64), np.int32)
    nc = np.empty((4, 64), np.int32)
    nd = np.empty((4, 64), np.int32)
    res = np.empty((8, 4, 64), np.int32)
    plane = np.empty((4, 64), np.int32)
    cand = np.empty((8, N_CANDIDATES, 64), np.int64)
    e_pred = np.empty(8, np.int64)
    e_cand = np.empty((8, N_CANDIDATES), np.int64)
    e_pair = np.empty((8, 96), np.int64)
    pair_order = np.empty(8 * 96, np.int64)
    pair_energy = np.empty(8 * 96, np.int64)
    memo = np.empty((8, N_CANDIDATES, 8, 2), np.int64)
    bound = np.empty((8, N_CANDIDATES, 2), np.int64)
    seq = np.empty(4 * 64, np.int64)
    scratch = np.empty(4 * 64, np.int64)
    top = np.empty(2, np.int64)
    scans = REORDER if full else RASTER
    for b in range(n_blocks):
        # residuals, candidates, energies (§2, §3, §7.2)
        neighbour_planes(ws, b, ncomp, w, h, own, na, nb, nc, nd)
        for p in range(8):
            e = 0
            for c in range(ncomp):
                predict_plane(p, own, na, nb, nc, nd, c, n, plane)
                for i in range(n):
                    v = plane[U(c), U(i)]
                    res[U(p), U(c), U(i)] = v
                    e += v * v
            e_pred[p] = e
            # the 52 distinct filter outputs (search.filter_candidates), one plain loop each
            for k in range(3):
                for i in range(n):
                    cand[U(p), U(k), U(i)] = res[U(p), U(k), U(i)]
            for perm in range(6):
                s0 = U(_PERMS[U(perm), 0])
                s1 = U(_PERMS[U(perm), 1])
                s2 = U(_PERMS[U(perm), 2])
                for mode in range(4):
                    k1 = U(3 + perm * 4 + mode)
                    k2 = U(27 + perm * 4 + mode)
                    alpha = _ALPHA[U(mode)]
                    beta = _BETA[U(mode)]
                    gamma = _GAMMA[U(mode)]
                    for i in range(n):
                        d0 = np.int64(res[U(p), s0, U(i)])
                        d1 = np.int64(res[U(p), s1, U(i)])
                        cand[U(p), k1, U(i)] = d1 - tdiv2(alpha * d0)
                        cand[U(p), k2, U(i)] = res[U(p), s2, U(i)] - tdiv2(beta * d0 + gamma * d1)
            for i in range(n):
                cand[U(p), 51, U(i)] = res[U(p), 3, U(i)] if ncomp == 4 else 0
            for k in range(N_CANDIDATES):
                e = 0
                for i in range(n):
                    v = cand[U(p), U(k), U(i)]
                    e += v * v
                e_cand[U(p), U(k)] = e
            for f in range(96):
                e = 0
                for c in range(ncomp):
                    e += e_cand[U(p), U(CANDIDATE_INDEX[U(f), U(c)])]
                e_pair[U(p), U(f)] = e
        # the pairs the reference evaluates (§7.2), from the lowest energy up
        count = 0
        best_res = np.inf
        best_filt = np.inf
        for pi in range(8):
            p = PREDICTOR_ORDER[U(pi)]
            ep = np.float64(e_pred[U(p)])
            live = exhaustive != 0 or not ep > best_res * 1.3
            if live:
                best_res = min(best_res, ep)
            for fi in range(96):
                f = FILTER_ORDER[U(fi)]
                ef = np.float64(e_pair[U(p), U(f)])
                if exhaustive != 0 or (live and not ef > best_filt * 1.3):
                    best_filt = min(best_filt, ef)
                    # insertion by energy, ties by trial order: any order gives the same
                    # result, this one tightens the bound soonest
                    j = count
                    while j > 0 and pair_energy[U(j - 1)] > e_pair[U(p), U(f)]:
                        pair_energy[U(j)] = pair_energy[U(j - 1)]
                        pair_order[U(j)] = pair_order[U(j - 1)]
                        j -= 1
                    pair_energy[U(j)] = e_pair[U(p), U(f)]
                    pair_order[U(j)] = p * 96 + f
                    count += 1
        # estimates (§6), best and second (§7.3)
        top[0] = NO_KEY
        top[1] = NO_KEY
        for k in range(8):
            for q in range(N_CANDIDATES):
                bound[U(k), U(q), 0] = -1
                bound[U(k), U(q), 1] = -1
                for r in range(8):
                    memo[U(k), U(q), U(r), 0] = -1
                    memo[U(k), U(q), U(r), 1] = -1
        for j in range(count):
            p = pair_order[U(j)] // 96
            f = pair_order[U(j)] % 96
            for r in range(n_orders):
                # interleave 0: the components' estimates, each computed once, and only
                # if the least the configuration can cost (the known estimates and the
                # others' least codes, which no reorder changes) does not lose already
                for e in range(2):
                    limit = top[1] >> RANK_BITS if top[1] != NO_KEY else NO_KEY
                    least = 0
                    for c in range(ncomp):
                        q = CANDIDATE_INDEX[U(f), U(c)]
                        if bound[U(p), U(q), U(e)] < 0:
                            bound[U(p), U(q), U(e)] = least_bits(cand, p, q, n, e)
                        bits = memo[U(p), U(q), U(r), U(e)]
                        least += bits if bits >= 0 else bound[U(p), U(q), U(e)] + 2 * e
                    if least > limit:
                        continue
                    total = 0
                    for c in range(ncomp):
                        q = CANDIDATE_INDEX[U(f), U(c)]
                        bits = memo[U(p), U(q), U(r), U(e)]
                        if bits < 0:
                            pu = U(p)
                            qu = U(q)
                            ru = U(r)
                            for i in range(n):
                                seq[U(i)] = cand[pu, qu, U(scans[ru, U(i)])]
                            row = (_RUNLENGTH_ROWS if e else _PLAIN_ROWS)[U(c)]
                            if e:
                                bits = runlength_bits_limited(seq, n, kc, row, ratios[row, 0],
                                                              ratios[row, 1], NO_KEY,
                                                              bound[U(p), U(q), 1], scratch)
                            else:
                                bits = plain_bits_limited(seq, n, kc, row, ratios[row, 0],
                                                          ratios[row, 1], NO_KEY,
                                                          bound[U(p), U(q), 0])
                            memo[U(p), U(q), U(r), U(e)] = bits
                        total += bits
                        if total > limit:
                            break
                    if total <= limit:
                        enter(top, total, p, f, r, 0, e, full)
                # interleave 1: one sequence, each estimate stopped once it loses; none is
                # made if the least codes of its values (the components' bounds, one
                # flag and one run) already lose
                limit = top[1] >> RANK_BITS if top[1] != NO_KEY else NO_KEY
                least_plain = 0
                least_rl = 0
                for c in range(ncomp):
                    q = CANDIDATE_INDEX[U(f), U(c)]
                    for e in range(2):
                        if bound[U(p), U(q), U(e)] < 0:
                            bound[U(p), U(q), U(e)] = least_bits(cand, p, q, n, e)
                    least_plain += bound[U(p), U(q), 0]
                    least_rl += bound[U(p), U(q), 1]
                if least_plain > limit and least_rl + 2 > limit:
                    continue
                q0 = U(CANDIDATE_INDEX[U(f), 0])
                q1 = U(CANDIDATE_INDEX[U(f), 1])
                q2 = U(CANDIDATE_INDEX[U(f), 2])
                pu = U(p)
                ru = U(r)
                if ncomp == 3:
                    for i in range(n):
                        at = U(scans[ru, U(i)])
                        seq[U(3 * i)] = cand[pu, q0, at]
                        seq[U(3 * i + 1)] = cand[pu, q1, at]
                        seq[U(3 * i + 2)] = cand[pu, q2, at]
                else:
                    for i in range(n):
                        at = U(scans[ru, U(i)])
                        seq[U(4 * i)] = cand[pu, q0, at]
                        seq[U(4 * i + 1)] = cand[pu, q1, at]
                        seq[U(4 * i + 2)] = cand[pu, q2, at]
                        seq[U(4 * i + 3)] = cand[pu, 51, at]
                for e in range(2):
                    limit = top[1] >> RANK_BITS if top[1] != NO_KEY else NO_KEY
                    if (least_rl + 2 if e else least_plain) > limit:
                        continue
                    row = 6 + e
                    if e:
                        bits = runlength_bits_limited(seq, ncomp * n, kc, row, ratios[row, 0],
                                                      ratios[row, 1], limit, least_rl, scratch)
                    else:
                        bits = plain_bits_limited(seq, ncomp * n, kc, row, ratios[row, 0],
                                                  ratios[row, 1], limit, least_plain)
                    if bits <= limit:
                        enter(top, bits, p, f, r, 1, e, full)
        decode_key(top[0], best[b])
        decode_key(top[1], second[b])


@jit.kernel
def enter(top, bits, p, f, r, i, e, full):
    """Offer a configuration's estimate to the best two; an edge block's estimate holds
    for all 8 reorders (they keep raster order), of which reorders 0 and 1 can place."""
    keep_two(top, (bits << RANK_BITS) + trial_rank(p, f, r, i, e))
    if not full:
        keep_two(top, (bits << RANK_BITS) + trial_rank(p, f, 1, i, e))


@jit.export("void(uint8[:, :, ::1], int64[:, ::1], int64, int64, int32[:, :, :, ::1])")
def workspaces(samples, grid, tile_w, tile_h, out):
    """image.block_workspaces: out[b] (C, h+1, w+2) = the padded workspace of block
    grid[b] (cost spec §1.4; 0 outside the block's tile of tile_w x tile_h)."""
    height, width, ncomp = samples.shape
    for b in range(grid.shape[0]):
        ox, oy, bx, by = grid[b, 0], grid[b, 1], grid[b, 2], grid[b, 3]
        w, h = grid[b, 4], grid[b, 5]
        tw = min(tile_w, width - ox)
        th = min(tile_h, height - oy)
        for y in range(h + 1):
            sy = by - 1 + y
            row_inside = oy <= sy < oy + th
            for x in range(w + 2):
                sx = bx - 1 + x
                inside = row_inside and ox <= sx < ox + tw
                for c in range(ncomp):
                    out[U(b), U(c), U(y), U(x)] = samples[U(sy), U(sx), U(c)] if inside else 0
