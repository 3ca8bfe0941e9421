"""TLG8 per-block bit estimate (spec tlg8_block_cost.md §6), scalar and batched.

Two implementations of the same rules:

* `sequence_bits` — the spec, literally, one sequence at a time in plain Python. Used for
  single configurations (the beam-search callback) and as the reference the batched code is
  tested against.
* `lane_bits` — the same estimator over many sequences ("lanes") at once: the adaptive state
  is sequential along a sequence, so the loop runs over positions (at most 192) and every
  step is one vectorised operation across all lanes. This is where the speed comes from.
"""
import numpy as np

from . import features, jit, stages

# Mapped magnitudes are < 1275 (|value| <= 637), so (k << 11) | m indexes one cost table.
M_BITS = 11
# Run-length lanes mark zeros with this m: it costs 0 bits and leaves the state alone.
SKIP_M = (1 << M_BITS) - 1
# The state a stays below 16 * 1275 (it moves toward 16 m by a fraction < 1 each step).
A_SIZE = 16 * 1280


def _gamma_bits(v):
    return 2 * int(v).bit_length() - 1


def golomb_cost(m, k):
    """Bits of one Golomb-Rice code with escape (spec §6.3)."""
    q = m >> k
    q_esc = stages.ESCAPE_Q
    return q_esc + _gamma_bits(m - (q_esc - 1)) if q >= q_esc else q + 1 + k


def run_cost(length):
    """Bits of one run length in the run-length estimator (spec §6.5)."""
    return length if length <= 2 else 2 + _gamma_bits(length - 2)


def make_tables(golomb_table=stages.DEFAULT_GOLOMB_TABLE):
    """Lookup tables for a Golomb table: (k_by_idx (8,1024), ratios (8,2), k_by_a, cost)."""
    k_by_idx = stages.k_table(golomb_table)
    ratios = np.array([(up, down) for up, down, _ in golomb_table], np.int32)
    # k as a function of the state a itself: idx = (a + 8) >> 4, and k = 0 past the table
    # (spec §9.3). Stored pre-shifted (k << 11) so one OR with m gives the cost index.
    idx = (np.arange(A_SIZE) + 8) >> 4
    k_by_a = np.zeros((8, A_SIZE), np.int32)
    inside = idx < stages.K_INDEX_LIMIT
    k_by_a[:, inside] = k_by_idx[:, idx[inside]] << M_BITS
    # golomb_cost(m, k) for every m < SKIP_M (SKIP_M itself costs 0), as whole arrays
    m = np.arange(1 << M_BITS)
    q = m[None] >> np.arange(9)[:, None]
    escape = stages.ESCAPE_Q + 2 * np.frexp(np.maximum(m - (stages.ESCAPE_Q - 1), 1))[1] - 1
    cost = np.where(q >= stages.ESCAPE_Q, escape, q + 1 + np.arange(9)[:, None])
    cost[:, SKIP_M:] = 0
    return k_by_idx, ratios, k_by_a, cost.astype(np.int32).reshape(-1)


K_BY_IDX, RATIOS, K_BY_A, COST = make_tables()
RUN_COST = np.array([0] + [run_cost(n) for n in range(1, 4 * 64 + 1)], np.int32)


# ---------------------------------------------------------------------------------------
# Spec-literal scalar estimator


def sequence_bits(values, row, entropy, tables=None):
    """Estimated bits of one sequence with Golomb row `row` and estimator `entropy`.

    entropy 0 = plain adaptive Golomb-Rice (§6.4), 1 = run-length (§6.5).
    """
    k_by_idx, ratios = (K_BY_IDX, RATIOS) if tables is None else tables[:2]
    krow = k_by_idx[row].tolist()
    up, down = (int(r) for r in ratios[row])
    values = [int(v) for v in values]
    if not values:
        return 0
    bits = 0
    a = 0
    if entropy == 1:
        bits = 1                                   # is-the-first-value-non-zero flag
        start = 0
        for i in range(1, len(values) + 1):
            if i == len(values) or (values[i] != 0) != (values[start] != 0):
                bits += run_cost(i - start)
                start = i
    for v in values:
        if entropy == 0:
            m = 2 * v if v >= 0 else -2 * v - 1
        elif v == 0:
            continue                               # zeros do not touch the state
        else:
            m = 2 * v - 1 if v > 0 else -2 * v - 2
        idx = (a + 8) >> 4
        bits += golomb_cost(m, krow[idx] if idx < stages.K_INDEX_LIMIT else 0)
        rho = up if a < m else down
        a = ((16 * m) * rho + a * (16 - rho) + 8) >> 4
    return bits


def block_bits(ws, predictor, code, reorder, interleave, entropy, tables=None):
    """Estimated bits of one block for one configuration (spec §6.6).

    ws: the block's padded workspace (C, h+1, w+2) from image.block_workspaces.
    """
    h, w = ws.shape[1] - 1, ws.shape[2] - 2
    comps = stages.coded_values(ws, predictor, code, reorder, w, h)
    if interleave:
        return sequence_bits(stages.interleave(comps), stages.INTERLEAVED_ROWS[entropy],
                             entropy, tables)
    return sum(sequence_bits(comps[c], stages.component_row(entropy, c), entropy, tables)
               for c in range(len(comps)))


# ---------------------------------------------------------------------------------------
# Batched estimator


def _value_tables(entropy):
    """m for every int16 value seen as uint16 (negative v sits at 65536 + v)."""
    v = np.arange(1 << 16, dtype=np.int64)
    v = np.where(v >= 1 << 15, v - (1 << 16), v)
    if entropy == 0:
        m = np.where(v >= 0, 2 * v, -2 * v - 1)
    else:                                   # run-length: zeros are skipped (SKIP_M)
        m = np.where(v > 0, 2 * v - 1, np.where(v < 0, -2 * v - 2, SKIP_M))
    return np.minimum(m, SKIP_M).astype(np.int32)


MAPPED = (_value_tables(0), _value_tables(1))
LANE_CHUNK = 16384          # lanes per pass (measured: 4k-32k within noise; 2k is slower)
# Run-length codes charged position by position: a run of length L costs
# RUN_COST[L] = sum(RUN_STEP[1..L]), so the estimator never needs to know where a run ends.
RUN_STEP = np.concatenate([[0], np.diff(RUN_COST), [0]]).astype(np.int32)


def lane_bits(values, row, entropy, orders=None, tables=None, start=None, end=None):
    """Estimated bits of many sequences at once, one per column ("lane").

    values: int16 (P, lanes), position-major so that one step reads one contiguous row.
    orders: (n_orders, L) positions to read, in sequence order (default: all P in order).
    A reorder or an interleave is just such an index; no reordered copy of the lanes is
    made, and the mapping of values is shared by all orders.
    All lanes use Golomb row `row` and estimator `entropy` and start from a = 0, or from
    the states `start` (int (lanes,)): a row of a file carries its state across blocks
    (tlg8.filecost), which also reads the states after the last position into `end`
    (int (lanes,), with a 1-D `orders`).
    Returns int64 (n_orders, lanes); a 1-D `orders` gives (lanes,).
    """
    values = np.asarray(values)
    if values.dtype != np.int16:
        values = values.astype(np.int16)
    if orders is None:
        orders = np.arange(values.shape[0])
    orders = np.asarray(orders, np.intp)
    single = orders.ndim == 1
    if single:
        orders = orders[None]
    lanes = values.shape[1]
    if _use_kernels(tables) and _in_kernel_range(values, start, orders):
        from . import encode_kernels as kernels
        kc, ratios = _kernel_tables(tables)
        out = np.zeros((len(orders), lanes), np.int64)
        kernels.lane_bits(np.ascontiguousarray(values), np.ascontiguousarray(orders),
                          kc, int(row), int(ratios[row, 0]), int(ratios[row, 1]),
                          int(entropy),
                          _NO_STATES if start is None else
                          np.ascontiguousarray(start, np.int64),
                          out, _NO_STATES if end is None else end)
        return out[0] if single else out
    out = np.zeros((len(orders), lanes), np.int64)
    if orders.shape[1] > 0:
        for lo in range(0, lanes, LANE_CHUNK):
            hi = min(lanes, lo + LANE_CHUNK)
            out[:, lo:hi] = _lane_chunk_bits(values[:, lo:hi], orders, row, entropy, tables,
                                             0 if start is None else start[lo:hi],
                                             None if end is None else end[lo:hi])
    return out[0] if single else out


# The compiled estimators (tlg8.encode_kernels) give this module's numbers for |value| <=
# 1023 (mapped m below SKIP_M) and states below 2^15; the coding stages never exceed 637.
KERNEL_RANGE = 1023
_NO_STATES = np.zeros(0, np.int64)
_KERNEL_TABLES = {}


def _use_kernels(tables):
    """Whether the compiled kernels run: numba is there (tlg8.jit) and the tables are
    the default ones or make_tables' (their k and ratios)."""
    return jit.available() and (tables is None or len(tables) >= 2)


def _in_kernel_range(values, start=None, orders=None):
    if orders is not None and orders.shape[-1] >= 1 << 16:
        return False
    return (not values.size or (-KERNEL_RANGE <= values.min() and
                                values.max() <= KERNEL_RANGE)) and \
        (start is None or not len(start) or (0 <= np.min(start) and np.max(start) < 1 << 15))


def _kernel_tables(tables):
    """(kc, ratios) of tlg8.encode_kernels for `tables` (None: the default table)."""
    from . import encode_kernels as kernels
    if tables is None:
        return kernels.KC, kernels.RATIOS
    key = id(tables[0])
    if key not in _KERNEL_TABLES:
        table = [(int(up), int(down), np.bincount(np.asarray(k), minlength=9).tolist())
                 for k, (up, down) in zip(tables[0], tables[1])]
        _KERNEL_TABLES.clear()
        _KERNEL_TABLES[key] = (tables[0],) + kernels.k_tables(table)
    return _KERNEL_TABLES[key][1:]


def _lane_chunk_bits(values, orders, row, entropy, tables, start, end):
    """lane_bits for at most LANE_CHUNK lanes."""
    _, ratios, k_by_a, cost = (None, RATIOS, K_BY_A, COST) if tables is None else tables
    lanes = values.shape[1]
    up, down = int(ratios[row, 0]), int(ratios[row, 1])
    krow = k_by_a[row]
    # Map the values once for all orders (m for the estimator, 0/1 "non-zero" for runs).
    mapped = MAPPED[entropy].take(np.ascontiguousarray(values).view(np.uint16), mode="clip")
    mapped16 = mapped << 4
    nonzero = (values != 0).astype(np.int32) if entropy == 1 else None
    # Work vectors as rows of one buffer with a stride that is not a power of two: separate
    # allocations of 2^k bytes land on the same cache sets and made the loop much slower.
    work = np.zeros((10, lanes + 80), np.int32)[:, :lanes]
    a, bits, k, c, d, rho, same, run, _, _ = work
    # NumPy int32 scalars and explicit out= arrays: mixing Python ints or bools into the
    # ufuncs costs a slow type-resolution path, about 3x the whole step.
    rise, fall = np.int32(up - down), np.int32(down)
    one, eight, four = np.int32(1), np.int32(8), np.int32(4)
    out = np.empty((len(orders), lanes), np.int64)
    for o, order in enumerate(orders.tolist()):
        a[:] = start
        bits[:] = 0
        run[:] = 0
        previous = None
        for pos in order:
            m = mapped[pos]
            m16 = mapped16[pos]
            krow.take(a, out=k, mode="clip")
            np.bitwise_or(k, m, out=k)
            cost.take(k, out=c, mode="clip")
            np.add(bits, c, out=bits)
            np.less(a, m, out=rho, casting="unsafe")     # rho = up if a < m else down
            np.multiply(rho, rise, out=rho)
            np.add(rho, fall, out=rho)
            if entropy == 1:
                live = nonzero[pos]
                np.multiply(rho, live, out=rho)          # zeros leave a alone: rho = 0
                # Run lengths: run = 1 at a kind change, else run + 1; charge its step.
                if previous is not None:
                    np.equal(live, previous, out=same, casting="unsafe")
                    np.multiply(run, same, out=run)
                previous = live
                np.add(run, one, out=run)
                RUN_STEP.take(run, out=c, mode="clip")
                np.add(bits, c, out=bits)
            np.subtract(m16, a, out=d)
            np.multiply(d, rho, out=d)
            np.add(d, eight, out=d)
            np.right_shift(d, four, out=d)  # a' = ((16m)rho + a(16 - rho) + 8) >> 4
            np.add(a, d, out=a)             #    = a + ((16m - a)rho + 8) >> 4, floor shift
        out[o] = bits
    if end is not None:
        end[:] = a
    if entropy == 1:
        out += 1                            # the is-the-first-value-non-zero flag
    return out


# ---------------------------------------------------------------------------------------
# Many given configurations (the beam-search callback and its batched form)


def configs_bits(ws, configs):
    """Bits of given configurations of blocks of one size, the better entropy of the two.

    ws: (N, C, h+1, w+2) workspaces; configs: int (N, K, 4) rows (predictor, filter,
    reorder, interleave). Returns (bits, entropy), int64 (N, K) each; on a tie between the
    two estimators entropy 0 wins (it is tried first).
    """
    ws = np.asarray(ws)
    residuals = stages.all_residuals(ws).astype(np.int16)              # (N, 8, C, n)
    return block_configs_bits(residuals, configs, ws.shape[3] - 2, ws.shape[2] - 1)


TRIAL_CHUNK = 16384         # trials per pass: bounds the (C, lanes, n) temporaries


def block_configs_bits(residuals, configs, w, h):
    """configs_bits from predictor residuals int16 (N, 8, C, n) (block-major).

    The fast path computes the residuals once for its features and its trials. Each
    trial's coded values are gathered straight from them in its scan order and filtered
    with per-lane multipliers (features.coded_lanes), so nothing is formed for
    configurations not tried.
    """
    configs = np.asarray(configs, np.int64)
    n_blocks, n_per = configs.shape[:2]
    if residuals.shape[0] != n_blocks:
        raise ValueError(f"{n_blocks} blocks of configurations for {residuals.shape[0]} blocks")
    ncomp, n = residuals.shape[2:]
    flat = configs.reshape(-1, 4)
    if len(flat) and ((flat < 0) | (flat >= (8, 96, 8, 2))).any():
        raise ValueError("configuration out of range (predictor < 8, filter < 96, "
                         "reorder < 8, interleave < 2)")
    if ncomp >= 3 and _use_kernels(None) and (not residuals.size or (
            -255 <= residuals.min() and residuals.max() <= 255)):
        from . import encode_kernels as kernels
        bits = np.empty((n_blocks, n_per), np.int64)
        entropy = np.empty((n_blocks, n_per), np.int64)
        scans = np.stack([stages.reorder_index(r, w, h) for r in range(stages.N_REORDERS)])
        kernels.configs_bits(np.ascontiguousarray(residuals, np.int16),
                             np.ascontiguousarray(configs), scans.astype(np.intp),
                             kernels.KC, kernels.RATIOS, bits, entropy)
        return bits, entropy
    block = np.repeat(np.arange(n_blocks), n_per)
    # Interleave 0 and 1 lanes apart, each kind contiguous, so each pass sees one kind.
    by_kind = np.argsort(flat[:, 3], kind="stable")
    bits = np.zeros((len(flat), 2), np.int64)
    scans = np.stack([stages.reorder_index(r, w, h) for r in range(stages.N_REORDERS)])
    for lo in range(0, len(flat), TRIAL_CHUNK):
        part = by_kind[lo:lo + TRIAL_CHUNK]
        one = int(np.count_nonzero(flat[part, 3]))   # sorted: interleave 0 first, then 1
        split = len(part) - one
        if one:
            lanes = _position_major(residuals, block, flat, part[split:], scans, True)
            for e in range(2):
                bits[part[split:], e] = lane_bits(lanes, stages.INTERLEAVED_ROWS[e], e)
        if split:
            comps = _position_major(residuals, block, flat, part[:split], scans, False)
            for c in range(ncomp):
                for e in range(2):
                    bits[part[:split], e] += lane_bits(comps[c], stages.component_row(e, c), e)
    entropy = (bits[:, 1] < bits[:, 0]).astype(np.int64)
    best = bits[np.arange(len(flat)), entropy]
    return best.reshape(n_blocks, n_per), entropy.reshape(n_blocks, n_per)


CODE_CHUNK = 1024            # lanes coded per step: keeps the index arrays in cache


def _position_major(residuals, block, flat, part, scans, interleaved):
    """Coded values of trials `part`, position-major as lane_bits reads them:
    interleaved -> (n * C, L) with row j = component j % C at scan position j // C;
    else (C, n, L). Built in cache-sized pieces, each transposed while still in cache."""
    ncomp, n = residuals.shape[2:]
    out = np.empty((n, ncomp, len(part)) if interleaved else (ncomp, n, len(part)), np.int16)
    for lo in range(0, len(part), CODE_CHUNK):
        sel = part[lo:lo + CODE_CHUNK]
        p, f, r = flat[sel, 0], flat[sel, 1], flat[sel, 2]
        coded = features.coded_lanes(residuals, block[sel], p, f, scans[r])   # (C, l, n)
        if interleaved:
            out[:, :, lo:lo + len(sel)] = coded.transpose(2, 0, 1)
        else:
            out[:, :, lo:lo + len(sel)] = coded.transpose(0, 2, 1)
    return out.reshape(n * ncomp, -1) if interleaved else out


class BlockEncoder:
    """The beam search's encoder callback for one block.

    `encoder(predictor, filter_code, reorder, interleave)` returns the block's estimated
    bits with the better of the two entropy estimators; `entropy_of(...)` says which one.
    Results are cached per configuration, and `trials` counts distinct configurations.
    """

    def __init__(self, ws, tables=None):
        self.ws = np.asarray(ws, np.int32)
        self.tables = tables
        self._cache = {}

    @classmethod
    def from_image(cls, samples, grid_row, tables=None):
        from .image import block_workspaces
        return cls(block_workspaces(samples, np.asarray(grid_row)[None])[0], tables)

    @property
    def trials(self):
        return len(self._cache)

    def _evaluate(self, config):
        if config not in self._cache:
            p, f, r, i = config
            if not (0 <= p < 8 and 0 <= f < 96 and 0 <= r < 8 and 0 <= i < 2):
                raise ValueError(f"configuration out of range: predictor={p} filter={f} "
                                 f"reorder={r} interleave={i}")
            bits = [block_bits(self.ws, p, f, r, i, e, self.tables) for e in range(2)]
            entropy = int(bits[1] < bits[0])
            self._cache[config] = (bits[entropy], entropy)
        return self._cache[config]

    def __call__(self, predictor, filter_code, reorder, interleave):
        return self._evaluate((int(predictor), int(filter_code), int(reorder),
                               int(interleave)))[0]

    def entropy_of(self, predictor, filter_code, reorder, interleave):
        return self._evaluate((int(predictor), int(filter_code), int(reorder),
                               int(interleave)))[1]
