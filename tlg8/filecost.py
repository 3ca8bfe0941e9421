"""What a block costs in the .tlg8 file, and choosing configurations for file bytes.

The reference search (and the pair selector) pick each block's configuration by the
per-block bit estimate (tlg8_block_cost.md §6), which starts every sequence from the
adaptive state a = 0, ends every run at the block's edge and ignores the side
information. The file (tlg8_file_format.md §5) differs in three ways this module models:

* the five choice streams of a tile, each coded in the cheapest of three modes (§5.3):
  under SameAsPrevious a block whose value equals the previous block's costs 1 bit
  instead of 1 + B; under RunLength it usually costs nothing;
* each Golomb row is one sequence per tile (§5.4): a block's values start from the state
  the row's earlier values left, and its runs of zeros or non-zeros continue the row's
  open run;
* per tile: the five 2-bit modes, two alignments to a byte, padding to 4 bytes and the
  4-byte length.

API (arrays in tlg8.image.block_grid order, which is the file's block order):

    side, golomb = file_bits(samples, choices)
        int64 (N, 5) and (N,): the bits each block adds to its tile given the blocks before
        it, side information per stream (file order p, f, r, e, i) under the mode the
        encoder gives that stream, and Golomb rows. file_size() adds the per-tile and
        header bytes; it equals len(tlgfile.encode_tlg8(samples, choices)).
    states = entering_states(samples, choices)
        int64 (4, N, 8): per block and Golomb row, what the earlier blocks of the tile left:
        the adaptive state a, the kind (1 = non-zero) and length of the open run, and
        whether the row has values yet.
    bits = golomb_bits(residuals, candidates, states, w, h)
        int64 (N, K): file bits in the rows, from `states`, of candidates (N, K, 5) =
        (p, f, r, i, e) of blocks of one size.
    choices = choose_for_file(samples, grid, tried, tried_bits, tried_entropy, ...)
        int64 (N, 5) (columns p, f, r, i, e as everywhere): from the configurations a
        model tried per block (choose_image(details=True): tried (N, T, 4), tried_bits and
        tried_entropy (N, T)), per tile the sequence of choices that minimises the
        file-bit model; see its docstring.

Every function takes the Golomb table the file is coded with (default: the default one,
the reference's), and any tile height (the reference's 80 rows unless given; tlg8.codec
uses taller tiles, choose_for_file takes them from its grid).
"""
import numpy as np

from . import cost, features, jit, stages, tlgfile
from .image import TILE_H, TILE_W, block_batches, block_grid, block_workspaces

STATE_FIELDS = ("a", "kind", "run", "started")
MODE_BITS = 2 * len(tlgfile.STREAM_BITS)          # the five mode fields of a tile (§5.2)
TILE_RECORD_BYTES = 4                             # the payload length L (§3.3)
HEADER_BYTES = tlgfile.HEADER_SIZE + tlgfile.TABLE_SIZE


# --------------------------------------------------------------------------------------
# Tiles


def tile_starts(grid):
    """Index of each tile's first block in a block grid (tlg8.image.block_grid, any tile
    height), and the total: int64 (T + 1,)."""
    grid = np.asarray(grid)
    new_tile = np.ones(len(grid), bool)
    new_tile[1:] = (grid[1:, :2] != grid[:-1, :2]).any(axis=1)
    return np.append(np.flatnonzero(new_tile), len(grid)).astype(np.int64)


def payload_bytes(side, golomb):
    """Bytes of a tile payload (§5.1) whose streams take `side` bits and rows `golomb`."""
    return ((MODE_BITS + side + 7) // 8 + (golomb + 7) // 8 + 3) // 4 * 4


# --------------------------------------------------------------------------------------
# Choice streams (§5.3)


def stream_bits(values, width, mode):
    """Bits each block's value adds to a choice stream coded in `mode`: int64 (NB,).

    RunLength charges a run its value and first varuint group where it starts, and one
    more group at the block where its length - 1 reaches 128^g; summed, the stream's cost.
    """
    values = np.asarray(values)
    n = len(values)
    if mode == 0:
        return np.full(n, width, np.int64)
    change = np.concatenate([[True], values[1:] != values[:-1]])
    if mode == 1:
        out = np.where(change, width + 1, 1).astype(np.int64)
        out[0] = width
        return out
    starts = np.flatnonzero(change)
    pos = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))   # length - 1
    grows = (pos >= 128) & (pos & (pos - 1) == 0) & ((tlgfile._bitlen(pos) - 1) % 7 == 0)
    return np.where(change, width + 8, 8 * grows).astype(np.int64)


def stream_modes(choices, starts):
    """Mode of each tile's five streams as the encoder picks them: int64 (T, 5)."""
    return np.array([[tlgfile._stream_mode(choices[t0:t1, col], width)
                      for col, width in zip(tlgfile.STREAM_COLUMNS, tlgfile.STREAM_BITS)]
                     for t0, t1 in zip(starts[:-1].tolist(), starts[1:].tolist())], np.int64)


def side_bits(choices, starts):
    """Bits of each block in the five streams of its tile (file order): int64 (N, 5)."""
    choices = np.asarray(choices)
    out = np.zeros((len(choices), 5), np.int64)
    modes = stream_modes(choices, starts)
    for t, (t0, t1) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist())):
        for s, (col, width) in enumerate(zip(tlgfile.STREAM_COLUMNS, tlgfile.STREAM_BITS)):
            out[t0:t1, s] = stream_bits(choices[t0:t1, col], width, modes[t, s])
    return out


# --------------------------------------------------------------------------------------
# Golomb rows (§5.4, §7)


def entering_states(samples, choices, golomb_table=None, tile_h=TILE_H):
    """What the earlier blocks of its tile leave in each Golomb row for every block.

    Returns int64 (4, N, 8) = STATE_FIELDS: the state a after the row's last coded value
    (0 before the first), the kind of the row's last value (1 = non-zero) and the length
    of the run it ends (run-length rows), and 1 if the row already has values (its
    run-length flag bit is written). Exact: the encoder's coded values and states under
    golomb_table's ratios (default: the default table), in tiles tile_h rows high.
    """
    height, width, ncomp = samples.shape
    choices = np.asarray(choices, np.int64)
    tiles = tlgfile._tiles(width, height, TILE_W, tile_h)
    table = stages.DEFAULT_GOLOMB_TABLE if golomb_table is None else golomb_table
    up = np.array([r[0] for r in table], np.int64)
    down = np.array([r[1] for r in table], np.int64)
    out = np.zeros((4, len(choices), 8), np.int64)
    base = 0
    for t0, t1 in tlgfile._chunks(tiles):
        blocks = tlgfile._chunk_blocks(tiles[t0:t1])
        ch = choices[base:base + len(blocks)]
        flat, _, rows = tlgfile._coded_values(tlgfile._canvas(samples, tiles[t0:t1]),
                                              blocks, ch)
        owner = np.repeat(np.arange(len(blocks)), ncomp * blocks[:, 3] * blocks[:, 4])
        tile = blocks[:, 0]
        # Each (tile, row) sequence in block order: a stable sort by that key.
        key = tile[owner] * 8 + rows
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        seqs = []
        for seg in np.split(order, bounds):
            r = int(rows[seg[0]])
            v = flat[seg]
            runlength = tlgfile._RUNLENGTH_ROW[r]
            coded = v != 0 if runlength else np.ones(len(v), bool)
            seqs.append((int(tile[owner[seg[0]]]), r, v, owner[seg], coded,
                         tlgfile._magnitudes(v, runlength)))
        before = tlgfile._adaptive_states([s[5] for s in seqs], [s[1] for s in seqs], table)
        first_block = np.searchsorted(tile, np.arange(t1 - t0 + 1))
        for (t, r, v, vblock, coded, m), a in zip(seqs, before):
            # after[j + 1]: the state after coded value j; after[0] = 0, the row's start.
            after = np.concatenate([[0], tlgfile._update_state(a, m, up[r], down[r])])
            mine = np.arange(first_block[t], first_block[t + 1])
            out[0, base + mine, r] = after[np.searchsorted(vblock[coded], mine)]
            last = np.searchsorted(vblock, mine) - 1
            seen = last >= 0
            out[3, base + mine, r] = seen
            if tlgfile._RUNLENGTH_ROW[r]:
                nonzero = v != 0
                change = np.concatenate([[True], nonzero[1:] != nonzero[:-1]])
                run_start = np.maximum.accumulate(np.where(change, np.arange(len(v)), 0))
                last = np.maximum(last, 0)
                out[1, base + mine, r] = seen & nonzero[last]
                out[2, base + mine, r] = np.where(seen, last - run_start[last] + 1, 0)
        base += len(blocks)
    return out


def run_code_bits(length):
    """Bits of run-length codes (§7.5) of lengths >= 1, any size: int64."""
    length = np.asarray(length, np.int64)
    return np.where(length <= 2, length, 1 + 2 * tlgfile._bitlen(np.maximum(length - 2, 1)))


def _sequence_bits(values, row, entropy, states, block, exits=None, tables=None):
    """File bits of lanes (P, L) appended to Golomb row `row` of blocks `block`.

    The estimator run from the row's state gives the codes of the values, and of runs as
    if the first started here; a run-length row that already has values drops the flag
    bit, and a first run of the open run's kind continues it (its code grows from
    run_code_bits(open) to run_code_bits(open + first)). With `exits` (4, L) it also
    writes what the lanes leave in the row: a, the kind and length of the open run, and 1
    (the row has values)."""
    end = None if exits is None else np.empty(values.shape[1], np.int64)
    bits = cost.lane_bits(values, row, entropy, tables=tables, start=states[0, block, row],
                          end=end)
    if exits is not None:
        exits[0] = end
        exits[3] = 1
    if entropy == 0:
        return bits
    started = states[3, block, row]
    nonzero = values != 0
    other = nonzero != nonzero[0]
    first = np.where(other.any(0), other.argmax(0), len(values))
    open_run = states[2, block, row]
    joins = (started == 1) & (nonzero[0] == states[1, block, row])
    grow = run_code_bits(open_run + first) - run_code_bits(open_run) - run_code_bits(first)
    if exits is not None:
        tail = nonzero != nonzero[-1]
        exits[1] = nonzero[-1]
        exits[2] = np.where(tail.any(0), tail[::-1].argmax(0), len(values)) \
            + np.where(joins & (first == len(values)), open_run, 0)
    return bits - started + np.where(joins, grow, 0)


def _candidate_bits(residuals, flat, block, states, w, h, exits=None, tables=None):
    """Golomb bits of candidates flat (L, 5) = predictor, filter, reorder, interleave,
    entropy of blocks `block` (L,): int64 (L,). exits (4, L, 8), optional: what each
    leaves in the rows it uses (_sequence_bits); the other rows are left as they are.
    tables: cost.make_tables of the Golomb table coded with (None: the default one)."""
    ncomp = residuals.shape[2]
    scans = np.stack([stages.reorder_index(r, w, h) for r in range(stages.N_REORDERS)])
    bits = np.zeros(len(flat), np.int64)
    for interleaved, e in np.ndindex(stages.N_INTERLEAVES, stages.N_ENTROPIES):
        part = np.flatnonzero((flat[:, 3] == interleaved) & (flat[:, 4] == e))
        for lo in range(0, len(part), cost.TRIAL_CHUNK):
            sel = part[lo:lo + cost.TRIAL_CHUNK]
            lanes = cost._position_major(residuals, block, flat, sel, scans, interleaved)
            if interleaved:
                seqs = [(lanes, stages.INTERLEAVED_ROWS[e])]
            else:
                # With C = 4, component 3 follows component 0 in the same row (§5.4).
                seqs = [(np.concatenate([lanes[0], lanes[3]]) if c == 0 and ncomp == 4
                         else lanes[c], stages.component_row(e, c))
                        for c in range(min(ncomp, 3))]
            for values, row in seqs:
                out = None if exits is None else np.zeros((4, len(sel)), np.int64)
                bits[sel] += _sequence_bits(values, row, e, states, block[sel], out, tables)
                if exits is not None:
                    exits[:, sel, row] = out
    return bits


def golomb_bits(residuals, choices, states, w, h, tables=None):
    """File bits of candidates of blocks of one size in their tiles' Golomb rows.

    residuals: int16 (N, 8, C, n) block-major (features.block_major, or
    stages.all_residuals); choices: int (N, K, 5) = predictor, filter, reorder,
    interleave, entropy; states: (4, N, 8) rows of entering_states for these blocks.
    Returns int64 (N, K). Every candidate is measured from the same states (those the
    caller's choices for the earlier blocks left). tables: cost.make_tables of the Golomb
    table (None: the default one).
    """
    choices = np.asarray(choices, np.int64)
    n_blocks, n_per = choices.shape[:2]
    block = np.repeat(np.arange(n_blocks), n_per)
    bits = _candidate_bits(residuals, choices.reshape(-1, 5), block, states, w, h,
                           tables=tables)
    return bits.reshape(n_blocks, n_per)


CHUNK = 2048        # blocks per residual_planes call: its transposes then stay in cache


def _size_classes(samples, grid):
    """(blocks of one size, their residuals int16 (Nb, 8, C, n), w, h)."""
    for part in block_batches(grid):
        ws = block_workspaces(samples, grid[part])
        residuals = np.concatenate([features.block_major(features.residual_planes(
            ws[lo:lo + CHUNK])) for lo in range(0, len(part), CHUNK)])
        yield part, residuals, int(grid[part[0], 4]), int(grid[part[0], 5])


def file_bits(samples, choices, golomb_table=None, tile_h=TILE_H):
    """Bits each block adds to its tile: side (N, 5) in stream order, Golomb rows (N,),
    coded with golomb_table (default: the default table) in tiles tile_h rows high."""
    height, width = samples.shape[:2]
    grid = block_grid(width, height, tile_h)
    choices = tlgfile._check_choices(choices, len(grid))
    states = entering_states(samples, choices, golomb_table, tile_h)
    tables = None if golomb_table is None else cost.make_tables(golomb_table)
    golomb = np.zeros(len(grid), np.int64)
    for part, residuals, w, h in _size_classes(samples, grid):
        golomb[part] = golomb_bits(residuals, choices[part, None], states[:, part], w, h,
                                   tables)[:, 0]
    return side_bits(choices, tile_starts(grid)), golomb


def file_size(samples, side, golomb, tile_h=TILE_H):
    """Bytes of the file from file_bits' per-block bits: header + tile records."""
    starts = tile_starts(block_grid(samples.shape[1], samples.shape[0], tile_h))
    side_t = np.add.reduceat(side.sum(1), starts[:-1])
    golomb_t = np.add.reduceat(golomb, starts[:-1])
    return HEADER_BYTES + int((TILE_RECORD_BYTES + payload_bytes(side_t, golomb_t)).sum())


# --------------------------------------------------------------------------------------
# Choosing configurations for file bytes

# Rate weights per stream mode (Raw, SameAsPrevious, RunLength): how many bits a change of
# a stream's value from the previous block counts in the search, as a multiple of what
# it costs under SameAsPrevious (B) or RunLength (B + 8). Under Raw a change costs
# nothing, but counting it as under SameAsPrevious lets a tile's stream become cheap
# enough to flip to that mode (photos: 99.46 % of the reference bytes against 99.50 %
# with 0.5 for Raw, bench_filebytes --sweep).
RATE = (1.0, 1.0, 1.0)


STATE_ROUNDS = 1       # rounds of _chain_states for the first pass's row states


def choose_for_file(samples, grid, tried, tried_bits, tried_entropy, margin=16,
                    max_configs=8, rate=RATE, passes=1, golomb_table=None):
    """Per-block choices (N, 5) from the configurations already measured, for file bytes.

    tried (N, T, 4), tried_bits and tried_entropy (N, T): the configurations the selector
    tried for each block with their estimated bits and better entropy
    (a model's choose_image(details=True); unused rows, config -1 with the int64 maximum as
    bits, are never chosen; any per-block candidate lists will do).
    Trials: nothing new is tried. Each block re-scores its own tried configurations, at
    most max_configs of them within `margin` estimated bits of its best, each with its
    better entropy, in the file's Golomb rows; re-scoring an already-tried configuration
    is not a trial, so the per-block cap of the search that made `tried` still holds.
    (Re-scoring the other entropy too gained 0.001 % on img3 for twice the time.)
    The first choices are the per-block estimate's best. Each pass: the row states the
    current choices leave (_chain_states), every candidate's Golomb bits from them
    (golomb_bits), then per tile the sequence of candidates minimising Golomb bits plus,
    for each stream, rate[mode] x the bits a change of value costs in the mode the
    current choices give it (a Viterbi over the tile's blocks, all tiles at once); rate
    may also be (3, 5), per mode and stream. golomb_table: the table the file will be
    coded with (default: the default one; tlg8.golombfit). Edge blocks, whose reorder is not used,
    repeat the previous block's reorder value.
    Effort (6 photos held out, 16 trials, bench_filebytes --sweep): the defaults give
    99.46 % of tlgconv's bytes (selector alone 99.92 %) in about a quarter of the
    selector's time; passes=2: 99.43 % for ~1.7 x the time of one pass; passes=3 with
    margin=48, max_configs=16: 99.38 % for ~4.5 x.
    """
    n_blocks = len(grid)
    tables = None if golomb_table is None else cost.make_tables(golomb_table)
    rows = np.arange(n_blocks)[:, None]
    order = np.argsort(tried_bits, axis=1, kind="stable")[:, :max_configs]
    cand = np.concatenate([np.asarray(tried, np.int64)[rows, order],
                           np.asarray(tried_entropy, np.int64)[rows, order, None]], axis=2)
    bits = np.asarray(tried_bits)[rows, order]
    valid = bits <= bits[:, :1] + margin
    choices = cand[:, 0]
    starts = tile_starts(grid)
    # With compiled kernels the candidates are coded straight from the image; else the
    # blocks' residuals are computed once for all passes.
    classes = None if _use_kernels(samples) else list(_size_classes(samples, grid))
    change = np.array([tlgfile.STREAM_BITS, tlgfile.STREAM_BITS,
                       np.add(tlgfile.STREAM_BITS, 8)], np.float64)         # (mode, stream)
    weights_of_mode = np.broadcast_to(np.asarray(rate, np.float64).reshape(3, -1), (3, 5)) \
        * change
    states = np.zeros((4, n_blocks, 8), np.int64)
    for _ in range(STATE_ROUNDS):
        states = _chain_states(_exit_states(classes, choices, states, tables, samples, grid),
                               starts)
    for p in range(passes):
        if p:
            states = _chain_states(_exit_states(classes, choices, states, tables, samples,
                                                grid), starts)
        golomb = _golomb_of_candidates(classes, cand, valid, states, samples, grid, tables)
        modes = stream_modes(choices, starts)
        pick = _viterbi(golomb, cand[:, :, list(tlgfile.STREAM_COLUMNS)],
                        weights_of_mode[modes, np.arange(5)], starts)
        choices = cand[np.arange(n_blocks), pick]
    return _fill_edge_reorders(choices, grid, starts)


def _use_kernels(samples):
    return jit.available() and samples.shape[2] in (3, 4)


def _golomb_of_candidates(classes, cand, valid, states, samples, grid, tables=None):
    """Golomb bits (N, K) float64 of the valid candidates (N, K, 5) from `states`, inf
    for the others, coded with `tables` (cost.make_tables; None: the default table): from
    the residuals of _size_classes, or with classes None from the image by the compiled
    kernel."""
    if classes is None:
        from . import encode_kernels as kernels
        kc, ratios = cost._kernel_tables(tables)
        bits = np.empty(valid.shape, np.int64)
        kernels.file_golomb_bits(np.ascontiguousarray(samples), np.ascontiguousarray(grid),
                                 np.ascontiguousarray(cand, np.int64),
                                 np.ascontiguousarray(valid, np.uint8),
                                 np.ascontiguousarray(states, np.int64), kc, ratios, bits,
                                 _NO_EXITS)
        return np.where(valid, bits, np.inf)
    golomb = np.full(valid.shape, np.inf)
    for part, residuals, w, h in classes:
        block, j = np.nonzero(valid[part])
        golomb[part[block], j] = _candidate_bits(residuals, cand[part[block], j],
                                                 block, states[:, part], w, h, tables=tables)
    return golomb


_NO_EXITS = np.zeros((4, 0, 8), np.int64)


def _exit_states(classes, choices, states, tables=None, samples=None, grid=None):
    """What each block's choice leaves in the rows it uses, coded from `states`:
    int64 (4, N, 8) as STATE_FIELDS, started = 0 for the rows it does not use. With
    classes None the compiled kernel codes the choices from the image."""
    exits = np.zeros((4,) + states.shape[1:], np.int64)
    if classes is None:
        from . import encode_kernels as kernels
        kc, ratios = cost._kernel_tables(tables)
        kernels.file_golomb_bits(np.ascontiguousarray(samples), np.ascontiguousarray(grid),
                                 np.ascontiguousarray(choices, np.int64)[:, None],
                                 np.ones((len(choices), 1), np.uint8),
                                 np.ascontiguousarray(states, np.int64), kc, ratios,
                                 np.empty((len(choices), 1), np.int64), exits)
        return exits
    for part, residuals, w, h in classes:
        out = np.zeros((4, len(part), 8), np.int64)
        _candidate_bits(residuals, choices[part], np.arange(len(part)), states[:, part],
                        w, h, out, tables)
        exits[:, part] = out
    return exits


def _chain_states(exits, starts):
    """Row states entering each block: what the last earlier block of its tile that used
    the row left (exits of _exit_states), or the empty row. Each block's exits were coded
    from earlier entering states, so a round is exact as far as the states it started
    from were; a few rounds suffice because a row's state forgets its past."""
    n_blocks = exits.shape[1]
    index = np.where(exits[3] == 1, np.arange(n_blocks)[:, None], -1)
    last = np.maximum.accumulate(index, axis=0)
    last = np.concatenate([np.full((1, 8), -1), last[:-1]])
    tile_first = np.repeat(starts[:-1], np.diff(starts))
    seen = last >= tile_first[:, None]
    return np.where(seen, exits[:, np.maximum(last, 0), np.arange(8)], 0)


def _viterbi(cost_of, values, weights, starts):
    """Per tile, the candidate of each block minimising the sum of cost_of (N, K) and,
    between consecutive blocks, weights[tile, s] for each stream s whose value (values
    (N, K, 5)) changes. All tiles advance together. Returns int64 (N,) candidate indices."""
    n_tiles = len(starts) - 1
    sizes = np.diff(starts)
    if jit.available() and _integral(weights) and _exact_in_float32(cost_of, weights, starts):
        # The kernel: the same float32 sums (whole numbers here, so exact), no pruning
        # (which, below, never changes the result) and no padding.
        from . import encode_kernels as kernels
        pick = np.empty(len(cost_of), np.int64)
        kernels.viterbi(np.ascontiguousarray(cost_of, np.float32),
                        np.ascontiguousarray(values, np.int64),
                        np.ascontiguousarray(weights, np.float32),
                        np.ascontiguousarray(starts, np.int64), pick)
        return pick
    # A candidate saves at most the weights of all streams on the way in and on the way
    # out, so one dearer than the block's cheapest by more can never be on the best path.
    bound = 2 * weights.sum(1)
    keep = cost_of <= cost_of.min(1, keepdims=True) + np.repeat(bound, sizes)[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :int(keep.sum(1).max())]
    k = order.shape[1]
    rows = np.arange(len(cost_of))[:, None]
    cost_of = np.where(keep[rows, order], cost_of[rows, order], np.inf).astype(np.float32)
    values = values[rows, order]
    # Tiles padded to one length: padding blocks have one free candidate whose values
    # match nothing, which adds the same to every path.
    length = int(sizes.max())
    pos = np.arange(length)
    inside = pos < sizes[:, None]
    index = np.where(inside, starts[:-1, None] + pos, 0)
    cost = np.where(inside[..., None], cost_of[index], np.float32(np.inf))
    cost[~inside, 0] = 0
    vals = np.where(inside[..., None, None], values[index], -1)
    # trans[t, p, j, i]: moving from candidate j of block p - 1 to candidate i of block p.
    trans = np.zeros((n_tiles, length, k, k), np.float32)
    for s in range(values.shape[2]):
        differ = vals[:, :-1, :, None, s] != vals[:, 1:, None, :, s]
        trans[:, 1:] += differ * weights[:, s, None, None, None].astype(np.float32)
    total = cost[:, 0]
    back = np.zeros((n_tiles, length, k), np.int64)
    for p in range(1, length):
        paths = total[:, :, None] + trans[:, p]
        back[:, p] = paths.argmin(axis=1)
        total = paths.min(axis=1) + cost[:, p]
    pick = np.zeros((n_tiles, length), np.int64)
    pick[:, -1] = total.argmin(axis=1)
    tiles = np.arange(n_tiles)
    for p in range(length - 1, 0, -1):
        pick[:, p - 1] = back[tiles, p, pick[:, p]]
    return order[rows[:, 0], pick[inside]]


def _integral(weights):
    """Whole numbers small enough that float32 sums of a tile's worth are exact."""
    weights = np.asarray(weights, np.float64)
    return bool((weights == np.round(weights)).all() and (np.abs(weights) < 1 << 10).all())


def _exact_in_float32(cost_of, weights, starts):
    """Every path sum of every tile is below 2^24 (so float32 adds whole numbers exactly)."""
    finite = np.where(np.isfinite(cost_of), cost_of, 0).max(1)
    path = np.add.reduceat(finite, starts[:-1]) if len(finite) else np.zeros(0)
    return bool((path + np.diff(starts) * np.abs(weights).sum(1) < 1 << 24).all())


def _fill_edge_reorders(choices, grid, starts):
    """Edge blocks never reorder (§6.3), so their stored reorder may be anything: the
    previous block's value costs the least in any mode. The first block of a tile, when
    an edge block, keeps 0."""
    edge = (grid[:, 4] < 8) | (grid[:, 5] < 8)
    if not edge.any():
        return choices
    choices = choices.copy()
    first = np.zeros(len(grid), bool)
    first[starts[:-1]] = True
    choices[edge & first, 2] = 0
    source = np.maximum.accumulate(np.where(~edge | first, np.arange(len(grid)), 0))
    choices[:, 2] = choices[source, 2]
    return choices
