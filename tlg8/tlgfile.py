"""The .tlg8 file: encoder and decoder.

Spec: ../shared/spec/tlg8_file_format.md (section numbers below refer to it). The coding
stages (predictors, colour filter, reorder, interleave, Golomb table) come from
`tlg8.stages`, shared with the cost model; this module adds the container, the side
information, the adaptive Golomb rows and the decoder's reconstruction.

Arrays:
* samples: uint8 (H, W, C) in TLG8 component order (C = 3: R, G, B; C = 4: A, R, G, B);
* choices: int (N, 5), one row per block in file order (tiles, then block index; equal to
  `tlg8.image.block_grid` order for the encoder's 8192 x 80 tiles), columns
  predictor, filter, reorder, interleave, entropy (the JSONL key order).

Work is done per chunk of tiles: the tiles' samples sit in one zero-bordered canvas
(T, th+1, tw+2, C), so "outside the tile reads 0" (§2.4) is a plain array read, and the
decoder reconstructs all tiles of a chunk at once along anti-diagonal wavefronts.
"""
import os

import numpy as np

from . import Tlg8Error, golombfit, jit, stages
from .image import BLOCK, TILE_H, TILE_W

MAGIC = b"TLG8.0\x00raw\x1a"
SDS_MAGIC = b"TLG0.0\x00sds\x1a"          # generic TLG container prefix, accepted on decode
HEADER_SIZE = 49                          # bytes before the Golomb table (§3.1)
TABLE_SIZE = 176                          # 8 rows x 11 u16

# Choice streams in file order (§5.3): predictor, filter, reorder, entropy, interleave.
# STREAM_COLUMNS maps them to the columns of a choices array (JSONL order p, f, r, i, e).
STREAM_NAMES = ("predictor", "filter", "reorder", "entropy", "interleave")
STREAM_COLUMNS = (0, 1, 2, 4, 3)
STREAM_BITS = (4, 7, 4, 2, 2)
STREAM_LIMITS = (stages.N_PREDICTORS, stages.N_FILTERS, stages.N_REORDERS,
                 stages.N_ENTROPIES, stages.N_INTERLEAVES)
CHOICE_LIMITS = tuple(STREAM_LIMITS[STREAM_COLUMNS.index(col)] for col in range(5))

# Row of each coded value (§5.4): [entropy, component] when not interleaved, [entropy]
# when interleaved.
_COMPONENT_ROWS = np.array([stages.PLAIN_ROWS, stages.RUNLENGTH_ROWS], np.int8)
_INTERLEAVED_ROWS = np.array(stages.INTERLEAVED_ROWS, np.int8)
_RUNLENGTH_ROW = tuple(r in stages.RUNLENGTH_ROWS or r == stages.INTERLEAVED_ROWS[1]
                       for r in range(8))

ESCAPE_Q = stages.ESCAPE_Q              # a Golomb-Rice code escapes to gamma (§7.3)
K_INDEX_LIMIT = stages.K_INDEX_LIMIT    # k = 0 for idx >= 1024 (§11)
MAX_GAMMA_ZEROS = 31    # the decoder rejects longer gamma prefixes (§7.3)
MAX_VARUINT_GROUPS = 5

# Resource limits of the decoder. A run-length row codes 2^32 zeros in a few bytes, so the
# payload size does not bound the image size; these keep a hostile header from asking for
# gigabytes or hours. Reconstruction is sequential along a tile's (width + 2 * height)
# wavefronts, hence the span limit. Work arrays cover one chunk of tiles (or one tile),
# about 100 bytes per pixel.
MAX_PIXELS = 1 << 26            # whole image, W * H
MAX_TILE_PIXELS = 1 << 21       # one tile (the reference's 8192 x 80: 655 360)
MAX_TILE_SPAN = 1 << 16         # tile width + 2 * tile height (8192 x 80 tiles: 8352)
MAX_TILES = 1 << 16             # each tile costs ~0.3 ms of fixed overhead
CHUNK_PIXELS = 1 << 21          # canvas pixels processed together


class Tlg8FormatError(Tlg8Error):
    """The data is not a valid .tlg8 file (or exceeds the decoder's resource limits)."""


# --------------------------------------------------------------------------------------
# Golomb table


def check_golomb_table(table):
    """Validate a table given as 8 rows of (raise, fall, 9 counts); return it as tuples."""
    rows = tuple((int(up), int(down), tuple(int(c) for c in counts))
                 for up, down, counts in table)
    if len(rows) != 8:
        raise ValueError(f"a Golomb table has 8 rows, not {len(rows)}")
    for i, (up, down, counts) in enumerate(rows):
        if not (1 <= up <= 16 and 1 <= down <= 16):
            raise ValueError(f"Golomb table row {i}: ratios must be 1..16, got {up}, {down}")
        if len(counts) != 9 or min(counts) < 0 or max(counts) > 0xFFFF or sum(counts) != 1024:
            raise ValueError(f"Golomb table row {i}: need 9 counts 0..65535 adding up to 1024")
    return rows


def _table_bytes(table):
    flat = [v for up, down, counts in table for v in (up, down) + tuple(counts)]
    return np.array(flat, "<u2").tobytes()


# --------------------------------------------------------------------------------------
# Geometry (§2.2, §2.3)


def _tiles(width, height, tile_w, tile_h):
    """Tiles in file order: int64 (T, 4) = ox, oy, tw, th."""
    oy, ox = np.meshgrid(np.arange(0, height, tile_h, dtype=np.int64),
                         np.arange(0, width, tile_w, dtype=np.int64), indexing="ij")
    ox = ox.ravel()
    oy = oy.ravel()
    return np.stack([ox, oy, np.minimum(tile_w, width - ox), np.minimum(tile_h, height - oy)],
                    axis=1)


_BLOCK_CACHE = {}


def _tile_blocks(tw, th):
    """Blocks of a tw x th tile in block index order: int64 (NB, 4) = bx, by, w, h."""
    key = (tw, th)
    blocks = _BLOCK_CACHE.get(key)
    if blocks is None:
        by, bx = np.meshgrid(np.arange(0, th, BLOCK, dtype=np.int64),
                             np.arange(0, tw, BLOCK, dtype=np.int64), indexing="ij")
        bx = bx.ravel()
        by = by.ravel()
        blocks = np.stack([bx, by, np.minimum(BLOCK, tw - bx), np.minimum(BLOCK, th - by)],
                          axis=1)
        if len(_BLOCK_CACHE) > 64:
            _BLOCK_CACHE.clear()
        _BLOCK_CACHE[key] = blocks
    return blocks


def _chunks(tiles):
    """Split tile indices into runs whose common canvas stays under CHUNK_PIXELS."""
    start = 0
    max_w = max_h = 0
    for t in range(len(tiles)):
        tw, th = int(tiles[t, 2]), int(tiles[t, 3])
        new_w, new_h = max(max_w, tw), max(max_h, th)
        if t > start and (t - start + 1) * (new_w + 2) * (new_h + 1) > CHUNK_PIXELS:
            yield start, t
            start = t
            new_w, new_h = tw, th
        max_w, max_h = new_w, new_h
    if len(tiles):
        yield start, len(tiles)


def _chunk_blocks(tiles):
    """Blocks of a run of tiles: int64 (N, 5) = tile (index in the run), bx, by, w, h."""
    parts = []
    for t, (_, _, tw, th) in enumerate(tiles.tolist()):
        blocks = _tile_blocks(tw, th)
        parts.append(np.column_stack([np.full(len(blocks), t, np.int64), blocks]))
    return np.concatenate(parts)


def _value_rows(entropy, interleave, n, ncomp):
    """Where each block's coded values go (§5.4).

    A block's C*n values are stored contiguously: interleaved (i = 1) or component after
    component (i = 0). Returns (offsets of the blocks, row number of every value).
    """
    size = ncomp * n
    offsets = np.cumsum(size) - size
    # Per block C segments: one of C*n values (then C-1 empty ones) when interleaved,
    # else n values per component.
    inter = interleave[:, None] == 1
    seg_rows = np.where(inter, _INTERLEAVED_ROWS[entropy][:, None],
                        _COMPONENT_ROWS[entropy, :ncomp])
    seg_sizes = np.where(inter, np.where(np.arange(ncomp) == 0, size[:, None], 0), n[:, None])
    return offsets, np.repeat(seg_rows.ravel(), seg_sizes.ravel())


def _size_classes(blocks):
    """(w, h, indices) for each block size present (at most 4 with fixed tiles)."""
    sizes = blocks[:, 3] * 16 + blocks[:, 4]
    for key in _distinct(sizes):
        yield key >> 4, key & 15, np.flatnonzero(sizes == key)


def _groups(values):
    """(value, mask) for each distinct value of an int array."""
    for v in _distinct(values):
        yield v, values == v


def _distinct(values):
    """The distinct values of an array of small non-negative ints, ascending (bincount:
    np.unique's first call imports numpy.ma, 10 ms in every encoder process)."""
    return np.flatnonzero(np.bincount(values.ravel())).tolist()


def _block_index(blocks, w, h, extra):
    """Fancy indices (tile, y, x) of blocks' w x h samples in a tile array (extra = 0), or
    of their workspaces in a zero-bordered canvas (extra = 1: the row above and one column
    on each side, as image.block_workspaces)."""
    t = blocks[:, 0, None, None]
    y = blocks[:, 2, None, None] + np.arange(h + extra)[:, None]
    x = blocks[:, 1, None, None] + np.arange(w + 2 * extra)
    return t, y, x


# --------------------------------------------------------------------------------------
# Bit packing (§4)


def _bitlen(v):
    """Bit length of positive integers (< 2^53) as int64."""
    return np.frexp(np.asarray(v, np.float64))[1].astype(np.int64)


def _pack(values, lengths):
    """Append fields (value, bit length <= 57) LSB-first; return bytes, zero-padded to a byte.

    Fields never overlap, so the bytes are sums of the fields' shifted parts.
    """
    values = np.asarray(values, np.uint64)
    lengths = np.asarray(lengths, np.int64)
    if len(lengths) == 0:
        return b""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    nbytes = (int(ends[-1]) + 7) >> 3
    shifted = values << (starts & 7).astype(np.uint64)
    first = starts >> 3
    out = np.zeros(nbytes + 8, np.float64)
    top = ((starts & 7) + lengths + 7) >> 3             # bytes each field touches
    for j in range(int(top.max())):
        part = ((shifted >> np.uint64(8 * j)) & np.uint64(0xFF)).astype(np.float64)
        out += np.bincount(first + j, weights=part, minlength=nbytes + 8)
    return out[:nbytes].astype(np.uint8).tobytes()


def _gamma_fields(g):
    """gamma(g), g >= 1 (§7.3): z zeros, a 1, then the low z bits of g LSB first."""
    z = _bitlen(g) - 1
    return (np.int64(1) << z) | ((g - (np.int64(1) << z)) << (z + 1)), 2 * z + 1


def _rice_fields(m, k):
    """Golomb-Rice codes of mapped magnitudes m with parameters k, with escape (§7.3)."""
    q = np.minimum(m >> k, ESCAPE_Q)
    values = (np.int64(1) << q) | ((m & ((np.int64(1) << k) - 1)) << (q + 1))
    lengths = q + 1 + k
    esc = q >= ESCAPE_Q
    if esc.any():
        gval, glen = _gamma_fields(m[esc] - 15)
        values[esc] = gval << ESCAPE_Q
        lengths[esc] = glen + ESCAPE_Q
    return values, lengths


def _run_fields(lengths):
    """Run-length codes (§7.5): 1 -> `0`, 2 -> `1 0`, L >= 3 -> `1 1` + gamma(L - 2)."""
    values = np.where(lengths == 1, 0, 1).astype(np.int64)
    bits = np.where(lengths == 1, 1, 2).astype(np.int64)
    long = lengths >= 3
    if long.any():
        gval, glen = _gamma_fields(lengths[long] - 2)
        values[long] = 3 | (gval << 2)
        bits[long] = 2 + glen
    return values, bits


# --------------------------------------------------------------------------------------
# Encoder


def _update_state(a, m, up, down):
    """Adaptive state after coding m (§7.2): rho = raise ratio if a < m, else fall ratio."""
    rho = np.where(a < m, up, down)
    return (16 * m * rho + a * (16 - rho) + 8) >> 4


def _adaptive_k(ms, row_ids, table, span=256, lockstep_limit=4):
    """k before every value of several independent Golomb rows (§7.2): the k arrays."""
    states = _adaptive_states(ms, row_ids, table, span, lockstep_limit)
    ktab = _k_of_index(table)
    return [ktab[r, np.minimum((a + 8) >> 4, K_INDEX_LIMIT)] for a, r in zip(states, row_ids)]


def _k_of_index(table):
    """k of each row at k index 0..1024 (§7.1); any index >= 1024 has k = 0 (§11)."""
    ktab = np.zeros((8, K_INDEX_LIMIT + 1), np.int64)
    ktab[:, :K_INDEX_LIMIT] = stages.k_table(table)
    return ktab


def _adaptive_states(ms, row_ids, table, span=256, lockstep_limit=4):
    """The state `a` before every value of several independent Golomb rows (§7.2).

    ms: mapped magnitudes of each row sequence (int64 arrays); row_ids: their Golomb rows.
    Returns the state arrays. The state is sequential, but it forgets its start: each
    update keeps (16 - rho)/16 of it, so two states fed the same magnitudes meet after a
    few dozen values. Hence, vectorised:
    1. cut the concatenated sequences into segments of `span` values and advance all
       segments together from the guess a = 0 (exact where a row starts);
    2. re-run each segment whose true entering state differs, from that state, until it
       meets the stored states (from there on they are right); a cursor that does not meet
       in its own segment runs on into the next ones;
    3. if cursors are still running after lockstep_limit * span steps (a custom table with
       small ratios converges slowly), finish with a plain loop.
    The result is exactly the sequential one (the tests compare with a plain loop).
    """
    lengths = np.array([len(m) for m in ms], np.int64)
    n = int(lengths.sum())
    if n == 0:
        return [np.zeros(0, np.int64) for _ in ms]
    nseg = -(-n // span)
    size = nseg * span
    m = np.zeros(size, np.int64)
    m[:n] = np.concatenate(ms)
    reset = np.ones(size, bool)            # padding past n is harmless reset/zero values
    reset[:n] = False
    reset[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
    row = np.zeros(size, np.int64)
    row[:n] = np.repeat(np.asarray(row_ids, np.int64), lengths)
    up = np.array([r[0] for r in table], np.int64)
    down = np.array([r[1] for r in table], np.int64)

    # 1. all segments at once; states[t, s] = a before value s * span + t
    m_t, reset_t, row_t = (x.reshape(nseg, span).T.copy() for x in (m, reset, row))
    states = np.empty((span, nseg), np.int64)
    a = np.zeros(nseg, np.int64)
    for t in range(span):
        a[reset_t[t]] = 0
        states[t] = a
        a = _update_state(a, m_t[t], up[row_t[t]], down[row_t[t]])

    # 2. cursors from the segment starts whose entering state was guessed wrong
    seg = np.flatnonzero(~reset_t[0, 1:] & (a[:-1] != 0)) + 1
    pos = seg * span
    a = a[seg - 1]
    for _ in range(lockstep_limit * span):
        a[reset[pos]] = 0
        live = a != states[pos % span, pos // span]
        pos, a = pos[live], a[live]
        if not len(pos):
            break
        states[pos % span, pos // span] = a
        a = _update_state(a, m[pos], up[row[pos]], down[row[pos]])
        pos += 1
        inside = pos < n
        pos, a = pos[inside], a[inside]
    else:
        # 3. The lowest cursor's state is right (every cursor before it has met the
        # stored states); sweep on until past all other cursors and met.
        p, state, last = int(pos.min()), int(a[pos.argmin()]), int(pos.max())
        flat_m, flat_reset, flat_row = m.tolist(), reset.tolist(), row.tolist()
        while p < n:
            if flat_reset[p]:
                state = 0
            t, s = p % span, p // span
            if p > last and state == states[t, s]:
                break
            states[t, s] = state
            mp, r = flat_m[p], flat_row[p]
            rho = table[r][0] if state < mp else table[r][1]
            state = (16 * mp * rho + state * (16 - rho) + 8) >> 4
            p += 1

    return np.split(states.T.ravel()[:n], np.cumsum(lengths)[:-1])


def _magnitudes(v, runlength):
    """Mapped magnitudes of the values of a row that get a Golomb code (§7.4, §7.5)."""
    if not runlength:
        return np.where(v >= 0, 2 * v, -2 * v - 1)
    nz = v[v != 0]
    return np.where(nz > 0, 2 * nz - 1, -2 * nz - 2)


def _row_fields(v, m, k, runlength):
    """Fields of one Golomb row holding the values v (at least one), with their mapped
    magnitudes m and parameters k."""
    if not runlength:
        return _rice_fields(m, k)
    nonzero = v != 0
    starts = np.flatnonzero(np.concatenate([[True], nonzero[1:] != nonzero[:-1]]))
    run_values, run_bits = _run_fields(np.diff(np.append(starts, len(v))))
    val_values, val_bits = _rice_fields(m, k)
    # A run's length code comes right before the run's values.
    keys = np.concatenate([2 * starts, 2 * np.flatnonzero(nonzero) + 1])
    order = np.argsort(keys, kind="stable")
    values = np.concatenate([[int(nonzero[0])], np.concatenate([run_values, val_values])[order]])
    bits = np.concatenate([[1], np.concatenate([run_bits, val_bits])[order]])
    return values, bits


def _varuint_groups(x):
    out = []
    while True:
        group = x & 127
        x >>= 7
        out.append(group | 128 if x else group)
        if not x:
            return out


def _stream_costs(v, width):
    """Bits of one choice stream (§5.3) in each mode: (Raw, SameAsPrevious, RunLength)."""
    n = len(v)
    change = v[1:] != v[:-1]
    starts = np.flatnonzero(np.concatenate([[True], change]))
    run_lengths = np.diff(np.append(starts, n))
    groups = np.maximum(1, (_bitlen(np.maximum(run_lengths - 1, 1)) + 6) // 7)
    return (n * width,
            width + (n - 1) + width * int(change.sum()),
            int((width + 8 * groups).sum()))


def _stream_mode(v, width):
    """The mode the encoder codes a choice stream in: the cheapest, ties to the lower."""
    costs = _stream_costs(v, width)
    return costs.index(min(costs))


def _stream_fields(v, width):
    """(mode, values, bit lengths) of one choice stream, mode chosen by exact cost (§5.3)."""
    mode = _stream_mode(v, width)
    if mode == 0:
        return mode, v, np.full(len(v), width)
    change = v[1:] != v[:-1]
    if mode == 1:
        values = np.concatenate([v[:1], np.where(change, v[1:] << 1, 1)])
        bits = np.concatenate([[width], np.where(change, width + 1, 1)])
        return mode, values, bits
    starts = np.flatnonzero(np.concatenate([[True], change]))
    run_lengths = np.diff(np.append(starts, len(v)))
    values, bits = [], []
    for value, length in zip(v[starts].tolist(), run_lengths.tolist()):
        groups = _varuint_groups(length - 1)
        values += [value] + groups
        bits += [width] + [8] * len(groups)
    return mode, np.array(values, np.int64), np.array(bits, np.int64)


def _side_bytes(choices):
    """A tile's side information (§5.2, §5.3): the five modes and choice streams, packed
    and zero-padded to a byte."""
    modes, fields = [], []
    for col, width in zip(STREAM_COLUMNS, STREAM_BITS):
        mode, vals, bits = _stream_fields(choices[:, col], width)
        modes.append(mode)
        fields.append((vals, bits))
    side = [(np.array(modes), np.full(5, 2))] + fields
    return _pack(np.concatenate([f[0] for f in side]), np.concatenate([f[1] for f in side]))


def _tile_payload(choices, rows):
    """Payload of one tile (§5): side information, Golomb rows, padding.

    rows: (row, values, mapped magnitudes, k) of each non-empty Golomb row, in row order.
    """
    payload = _side_bytes(choices)
    row_fields = [_row_fields(v, m, k, _RUNLENGTH_ROW[r]) for r, v, m, k in rows]
    if row_fields:
        payload += _pack(np.concatenate([f[0] for f in row_fields]),
                         np.concatenate([f[1] for f in row_fields]))
    return payload + bytes(-len(payload) % 4)


def _canvas(samples, tiles):
    """Zero-bordered int32 canvas (T, th+1, tw+2, C) of a run of tiles (§2.4)."""
    tw_max = int(tiles[:, 2].max())
    th_max = int(tiles[:, 3].max())
    canvas = np.zeros((len(tiles), th_max + 1, tw_max + 2, samples.shape[2]), np.int32)
    for t, (ox, oy, tw, th) in enumerate(tiles.tolist()):
        canvas[t, 1:th + 1, 1:tw + 1] = samples[oy:oy + th, ox:ox + tw]
    return canvas


def _coded_values(canvas, blocks, choices):
    """Coded values of a run of blocks (§6), stored as _value_rows lays them out."""
    ncomp = canvas.shape[3]
    n = blocks[:, 3] * blocks[:, 4]
    offsets, rows = _value_rows(choices[:, 4], choices[:, 3], n, ncomp)
    flat = np.empty(len(rows), np.int64)
    for w, h, sel in _size_classes(blocks):
        ch = choices[sel]
        # Workspaces (Nb, C, h+1, w+2) straight from the canvas, as image.block_workspaces.
        ws = np.moveaxis(canvas[_block_index(blocks[sel], w, h, 1)], -1, 1)
        vals = np.empty((len(sel), ncomp, w * h), np.int32)
        for p, m in _groups(ch[:, 0]):
            vals[m] = stages.residuals(ws[m], p)
        for f, m in _groups(ch[:, 1]):
            vals[m] = stages.color_filter(vals[m], f)
        if w == BLOCK and h == BLOCK:
            for r, m in _groups(ch[:, 2]):
                vals[m] = stages.apply_reorder(vals[m], r, w, h)
        seq = np.where(ch[:, 3, None] == 1, stages.interleave(vals), vals.reshape(len(sel), -1))
        flat[offsets[sel, None] + np.arange(ncomp * w * h)] = seq
    return flat, offsets, rows


def _check_choices(choices, nblocks):
    choices = np.asarray(choices)
    if choices.shape != (nblocks, 5) or not np.issubdtype(choices.dtype, np.integer):
        raise ValueError(f"choices must be an integer array of shape ({nblocks}, 5), "
                         f"got {choices.dtype} {choices.shape}")
    choices = choices.astype(np.int64)
    for col, limit in enumerate(CHOICE_LIMITS):
        bad = (choices[:, col] < 0) | (choices[:, col] >= limit)
        if bad.any():
            b = int(np.flatnonzero(bad)[0])
            raise ValueError(f"block {b}: choice column {col} = {choices[b, col]} "
                             f"is outside 0..{limit - 1}")
    return choices


def encode_tlg8(samples, choices, golomb_table=None, tile_size=(TILE_W, TILE_H),
                fit_table=False):
    """Bytes of the .tlg8 file for `samples` coded with the per-block `choices` (§3-§7).

    golomb_table: 8 rows of (raise, fall, 9 counts), default stages.DEFAULT_GOLOMB_TABLE;
    it is stored in the header. fit_table: store instead the table with golomb_table's
    ratios and the counts that code these Golomb rows in the fewest bits (tlg8.golombfit;
    never larger). tile_size: the reference always uses 8192 x 80 (other
    sizes are valid files, used by tests; choices then follow those tiles' block order).
    Reorder values of edge blocks are stored as given (the reference stores 0; decoders
    ignore them).
    """
    samples = np.asarray(samples)
    if samples.dtype != np.uint8 or samples.ndim != 3 or samples.shape[2] not in (3, 4) \
            or samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ValueError(f"samples must be a non-empty uint8 array (H, W, 3 or 4), "
                         f"got {samples.dtype} {samples.shape}")
    table = check_golomb_table(stages.DEFAULT_GOLOMB_TABLE if golomb_table is None
                               else golomb_table)
    height, width, ncomp = samples.shape
    tile_w, tile_h = (int(v) for v in tile_size)
    if not (0 < tile_w < 1 << 32 and 0 < tile_h < 1 << 32):
        raise ValueError(f"tile size {tile_size} out of range")
    tiles = _tiles(width, height, tile_w, tile_h)
    per_tile = [len(_tile_blocks(tw, th)) for tw, th in tiles[:, 2:].tolist()]
    choices = _check_choices(choices, sum(per_tile))
    if jit.available():
        return _encode_compiled(samples, tiles, per_tile, choices, table, fit_table,
                                (tile_w, tile_h))
    chunks = _indexed_sequences(samples, tiles, per_tile, choices, table)
    if fit_table:
        # The state, and so the k index, depends on the ratios only, never on the counts
        # (§7.2): the fitted table is chosen from the indices the rows are coded at.
        chunks = list(chunks)
        table = golombfit.fit(table, golombfit.row_costs(
            [(r, m, idx) for _, _, seqs in chunks for _, r, _, m, idx in seqs]))
    ktab = _k_of_index(table)
    out = [_header(ncomp, width, height, tile_w, tile_h, table)]
    for ch, first, seqs in chunks:
        tile_rows = [[] for _ in range(len(first) - 1)]
        for t, r, v, m, idx in seqs:
            tile_rows[t].append((r, v, m, ktab[r, np.minimum(idx, K_INDEX_LIMIT)]))
        for t in range(len(first) - 1):
            payload = _tile_payload(ch[first[t]:first[t + 1]], tile_rows[t])
            out.append(len(payload).to_bytes(4, "little"))
            out.append(payload)
    return b"".join(out)


def _encode_compiled(samples, tiles, per_tile, choices, table, fit_table, tile_size):
    """encode_tlg8 with the compiled kernels (tlg8.encode_kernels), the same bytes: each
    chunk of tiles' Golomb rows gathered once (file_rows), the fitted table's costs from
    them (index_costs, fit_counts: golombfit's), then the rows' sizes and bits."""
    from . import encode_kernels as kernels
    height, width, ncomp = samples.shape
    samples = np.ascontiguousarray(samples)
    tile_first = np.concatenate([[0], np.cumsum(per_tile)]).astype(np.int64)
    ratios = np.array([(up, down) for up, down, _ in table], np.int64)
    chunks = list(_chunks(tiles))

    def rows_of(t0, t1):
        return _compiled_rows(samples, tiles, tile_first, choices, t0, t1)

    # One chunk (any image up to 2^21 pixels) is gathered once; bigger ones twice rather
    # than kept whole.
    kept = rows_of(*chunks[0]) if len(chunks) == 1 else None
    if fit_table:
        cost = np.zeros((8, K_INDEX_LIMIT, golombfit.N_K), np.int64)
        coded = np.zeros(8, np.int64)
        for t0, t1 in chunks:
            kernels.index_costs(*(kept or rows_of(t0, t1)), ratios, cost, coded)
        table = golombfit.fit(table, cost)
    ktab = _k_of_index(table)
    out = [_header(ncomp, width, height, tile_size[0], tile_size[1], table)]
    for t0, t1 in chunks:
        values, row_start = kept or rows_of(t0, t1)
        # (pages of the bound that the rows do not reach are never touched)
        rows = np.empty(kernels.ROW_BYTES_PER_VALUE * len(values) + (t1 - t0), np.uint8)
        offsets = np.zeros(t1 - t0 + 1, np.int64)
        kernels.write_rows(values, row_start, ktab, ratios, rows, offsets[1:])
        for t in range(t0, t1):
            payload = _side_bytes(choices[tile_first[t]:tile_first[t + 1]]) + \
                rows[offsets[t - t0]:offsets[t - t0 + 1]].tobytes()
            payload += bytes(-len(payload) % 4)
            out.append(len(payload).to_bytes(4, "little"))
            out.append(payload)
    return b"".join(out)


def _golomb_sequences(samples, tiles, per_tile, choices):
    """The Golomb rows of each chunk of tiles (§5.4), before any table is applied.

    Yields (the chunk's choices, its tiles' first block indices in them, and the rows as
    (tile in the chunk, row, values, mapped magnitudes)).
    """
    tile_first = np.concatenate([[0], np.cumsum(per_tile)])
    for t0, t1 in _chunks(tiles):
        blocks = _chunk_blocks(tiles[t0:t1])
        ch = choices[tile_first[t0]:tile_first[t1]]
        flat, offsets, rows = _coded_values(_canvas(samples, tiles[t0:t1]), blocks, ch)
        ends = np.append(offsets, len(flat))
        first = tile_first[t0:t1 + 1] - tile_first[t0]
        seqs = []
        for t in range(t1 - t0):
            v0, v1 = ends[first[t]], ends[first[t + 1]]
            for r in range(8):
                v = flat[v0:v1][rows[v0:v1] == r]
                if len(v):
                    seqs.append((t, r, v, _magnitudes(v, _RUNLENGTH_ROW[r])))
        yield ch, first, seqs


def golomb_row_costs(samples, choices, golomb_table=None, tile_size=(TILE_W, TILE_H)):
    """golombfit.row_costs of `samples` coded with `choices` in tiles of tile_size, the k
    indices from golomb_table's ratios (default: the default table's)."""
    table = check_golomb_table(stages.DEFAULT_GOLOMB_TABLE if golomb_table is None
                               else golomb_table)
    height, width, _ = samples.shape
    tiles = _tiles(width, height, *tile_size)
    per_tile = [len(_tile_blocks(tw, th)) for tw, th in tiles[:, 2:].tolist()]
    choices = _check_choices(choices, sum(per_tile))
    if jit.available():
        return _compiled_row_costs(samples, tiles, per_tile, choices, table)
    return sum(golombfit.row_costs([(r, m, idx) for _, r, _, m, idx in seqs])
               for _, _, seqs in _indexed_sequences(samples, tiles, per_tile, choices, table))


def _compiled_row_costs(samples, tiles, per_tile, choices, table):
    """golomb_row_costs with the compiled kernels (as _encode_compiled fits its table)."""
    from . import encode_kernels as kernels
    samples = np.ascontiguousarray(samples)
    tile_first = np.concatenate([[0], np.cumsum(per_tile)]).astype(np.int64)
    ratios = np.array([(up, down) for up, down, _ in table], np.int64)
    cost = np.zeros((8, K_INDEX_LIMIT, golombfit.N_K), np.int64)
    coded = np.zeros(8, np.int64)
    for t0, t1 in _chunks(tiles):
        kernels.index_costs(*_compiled_rows(samples, tiles, tile_first, choices, t0, t1),
                            ratios, cost, coded)
    return cost


def join_bands(files):
    """One .tlg8 file of bands coded apart: files of the image's bands of whole tile rows,
    top to bottom, with one tile size and Golomb table (tiles are coded independently,
    §3.3, so the image's file is their tile records under its own header)."""
    if len(files) == 1:
        return files[0]
    headers = [read_header(data) for data in files]
    first = headers[0]
    for hdr in headers[1:]:
        for key in ("ncomp", "width", "tile_w", "tile_h", "golomb_table"):
            if hdr[key] != first[key]:
                raise ValueError(f"bands differ in {key}: {first[key]} and {hdr[key]}")
    for hdr in headers[:-1]:
        if hdr["height"] % hdr["tile_h"]:
            raise ValueError(f"a band of {hdr['height']} rows is not whole tiles of "
                             f"{hdr['tile_h']}")
    height = sum(hdr["height"] for hdr in headers)
    return b"".join([_header(first["ncomp"], first["width"], height, first["tile_w"],
                             first["tile_h"], first["golomb_table"])]
                    + [data[hdr["offset"]:] for data, hdr in zip(files, headers)])


def _compiled_rows(samples, tiles, tile_first, choices, t0, t1):
    """The Golomb rows of tiles t0..t1 (kernels.file_rows): their values int16 and each
    tile's row starts (T, 9)."""
    from . import encode_kernels as kernels
    part = np.ascontiguousarray(tiles[t0:t1], np.int64)
    values = np.empty(int((part[:, 2] * part[:, 3]).sum()) * samples.shape[2], np.int16)
    row_start = np.empty((t1 - t0, 9), np.int64)
    kernels.file_rows(samples, part, tile_first[t0:t1 + 1] - tile_first[t0],
                      np.ascontiguousarray(choices[tile_first[t0]:tile_first[t1]]),
                      values, row_start)
    return values, row_start


def _indexed_sequences(samples, tiles, per_tile, choices, table):
    """_golomb_sequences with the k index before every value (§7.2) appended to each row:
    (tile in the chunk, row, values, mapped magnitudes, k indices)."""
    for ch, first, seqs in _golomb_sequences(samples, tiles, per_tile, choices):
        states = _adaptive_states([s[3] for s in seqs], [s[1] for s in seqs], table)
        yield ch, first, [seq + ((a + 8) >> 4,) for seq, a in zip(seqs, states)]


def _header(ncomp, width, height, tile_w, tile_h, table):
    return (MAGIC + bytes([ncomp, 1]) + TABLE_SIZE.to_bytes(3, "little") + b"\x08"
            + b"".join(v.to_bytes(8, "little") for v in (tile_w, tile_h, width, height))
            + _table_bytes(table))


# --------------------------------------------------------------------------------------
# Decoder: header and records


def read_header(data):
    """Parse and check the header (§3.1, §3.4).

    Returns a dict: ncomp, width, height, tile_w, tile_h, golomb_table, table_stored,
    offset (of the first tile record).
    """
    data = memoryview(data).cast("B")
    off = 0
    if bytes(data[:len(SDS_MAGIC)]) == SDS_MAGIC:
        off = len(SDS_MAGIC) + 4
    magic = bytes(data[off:off + len(MAGIC)])
    if magic != MAGIC[:len(magic)] or not magic:
        raise Tlg8FormatError("not a TLG8 file (bad magic)")
    if len(data) < off + HEADER_SIZE:
        raise Tlg8FormatError(f"truncated header ({len(data)} bytes)")
    head = bytes(data[off:off + HEADER_SIZE])
    ncomp, flags = head[11], head[12]
    table_len = int.from_bytes(head[13:16], "little")
    tile_w, tile_h, width, height = (int.from_bytes(head[17 + 8 * i:25 + 8 * i], "little")
                                     for i in range(4))
    if ncomp not in (3, 4):
        raise Tlg8FormatError(f"component count {ncomp} (must be 3 or 4)")
    for name, value in (("width", width), ("height", height),
                        ("tile width", tile_w), ("tile height", tile_h)):
        if not 0 < value < 1 << 32:
            raise Tlg8FormatError(f"{name} {value} out of range (1 .. 2^32-1)")
    off += HEADER_SIZE
    if flags & 1:
        if table_len != TABLE_SIZE:
            raise Tlg8FormatError(f"Golomb table length {table_len} (must be {TABLE_SIZE})")
        if len(data) < off + TABLE_SIZE:
            raise Tlg8FormatError("truncated Golomb table")
        flat = np.frombuffer(bytes(data[off:off + TABLE_SIZE]), "<u2").reshape(8, 11).tolist()
        table = tuple((r[0], r[1], tuple(r[2:])) for r in flat)
        try:
            check_golomb_table(table)
        except ValueError as e:
            raise Tlg8FormatError(f"bad stored {e}") from None
        off += TABLE_SIZE
    else:
        if table_len != 0:
            raise Tlg8FormatError(f"no Golomb table but table length {table_len}")
        table = stages.DEFAULT_GOLOMB_TABLE
    return {"ncomp": ncomp, "width": width, "height": height, "tile_w": tile_w,
            "tile_h": tile_h, "golomb_table": table, "table_stored": bool(flags & 1),
            "offset": off}


def tile_records(data, max_pixels=MAX_PIXELS):
    """(start, length) of every tile payload of a file, after read_header (§3.3)."""
    hdr = read_header(data)
    _, _, ntiles = _check_sizes(hdr, max_pixels, len(data) - hdr["offset"])
    return _records(memoryview(data).cast("B"), hdr["offset"], ntiles)


def _records(data, offset, ntiles):
    """(start, length) of each tile payload (§3.3)."""
    out = []
    for t in range(ntiles):
        if offset + 4 > len(data):
            raise Tlg8FormatError(f"file ends before tile {t} of {ntiles} (truncated)")
        length = int.from_bytes(data[offset:offset + 4], "little")
        offset += 4
        if offset + length > len(data):
            raise Tlg8FormatError(f"tile {t}: payload of {length} bytes but only "
                                  f"{len(data) - offset} left (truncated)")
        out.append((offset, length))
        offset += length
    return out


# --------------------------------------------------------------------------------------
# Decoder: bit reading

WINDOW_PAD = 16         # zero bytes after each payload: a gamma code may read 48 bits past its end


def _windows(buf):
    """56-bit little-endian windows (int64) starting at every byte of buf.

    After `>> (pos & 7)` a window holds at least 49 valid bits, enough for any code except
    a long gamma code, which re-reads. int64 rather than uint64: NumPy shifts and masks
    then mix with the int64 positions and states without casts.
    """
    b = np.frombuffer(buf, np.uint8)
    n = len(b) - 6
    win = b[:n].astype(np.int64)
    for j in range(1, 7):
        win |= b[j:j + n].astype(np.int64) << (8 * j)
    return win


def _read_stream(win, win_array, pos, end, mode, nb, width, name):
    """Decode one choice stream of nb values (§5.3); return (int64 array, new pos).

    The spec reads bits past the payload's end as 0 here; such a file always fails later
    (the Golomb rows then start past the end), so the loops stop there at once.
    """
    mask = (1 << width) - 1
    if mode == 0:
        if pos + nb * width > end:
            raise Tlg8FormatError(f"{name} stream runs past the end of the payload")
        bitpos = pos + width * np.arange(nb, dtype=np.int64)
        vals = (win_array[bitpos >> 3] >> (bitpos & 7)) & mask
        return vals, pos + nb * width
    if mode == 1:
        w = win[pos >> 3] >> (pos & 7)
        vals = [w & mask]
        pos += width
        for _ in range(nb - 1):
            if pos >= end:
                raise Tlg8FormatError(f"{name} stream runs past the end of the payload")
            w = win[pos >> 3] >> (pos & 7)
            if w & 1:
                vals.append(vals[-1])
                pos += 1
            else:
                vals.append((w >> 1) & mask)
                pos += 1 + width
        return np.array(vals, np.int64), pos
    # Run length: value, then varuint(L - 1) in 8-bit groups.
    run_values, run_lengths = [], []
    filled = 0
    while filled < nb:
        if pos >= end:
            raise Tlg8FormatError(f"{name} stream runs past the end of the payload")
        run_values.append((win[pos >> 3] >> (pos & 7)) & mask)
        pos += width
        x = 0
        for g in range(MAX_VARUINT_GROUPS + 1):
            if g == MAX_VARUINT_GROUPS:
                raise Tlg8FormatError(f"{name} stream: varuint longer than 5 groups")
            byte = (win[pos >> 3] >> (pos & 7)) & 0xFF
            pos += 8
            x |= (byte & 127) << (7 * g)
            if not byte & 128:
                break
        if filled + x + 1 > nb:
            raise Tlg8FormatError(f"{name} stream: run of {x + 1} goes past {nb} blocks")
        run_lengths.append(x + 1)
        filled += x + 1
    return np.repeat(np.array(run_values, np.int64), run_lengths), pos


def _side_information(win, start, length, nb, tile):
    """Choices (nb, 5) of one tile (§5.2, §5.3) and the bit where its Golomb rows start.

    win: windows of the payload buffer; start: the payload's first byte in it.
    """
    end = 8 * length
    # Python ints for the sequential stream modes: at most nb * (7 + 40) bits per stream.
    prefix = win[start:start + min(length, 30 * nb + 8) + 1].tolist()
    payload_win = win[start:start + length + 1]
    pos = 10
    modes = [(prefix[0] >> (2 * s)) & 3 for s in range(5)]  # past the end reads 0 (§8.6)
    choices = np.empty((nb, 5), np.int64)
    for s, (mode, col, width, limit) in enumerate(zip(modes, STREAM_COLUMNS, STREAM_BITS,
                                                      STREAM_LIMITS)):
        name = f"tile {tile}: {STREAM_NAMES[s]}"
        if mode == 3:
            raise Tlg8FormatError(f"{name} stream has mode 3")
        vals, pos = _read_stream(prefix, payload_win, pos, end, mode, nb, width, name)
        if (vals >= limit).any():
            raise Tlg8FormatError(f"{name} value {int(vals.max())} out of range (0..{limit - 1})")
        choices[:, col] = vals
    return choices, (pos + 7) & ~7


# --------------------------------------------------------------------------------------
# Decoder: Golomb rows
#
# A row is one sequential code stream: where a code starts and which k it uses depend on
# every code before it. The rows of all tiles are decoded together, and each row is cut at
# guessed bit positions into many segments, decoded in lockstep ("lanes") from a guessed
# state. A lane's decoding becomes exact as soon as its state (bit position, adaptive state
# a, run phase) equals the true one: decoding is deterministic, and both converge quickly
# (Golomb-Rice codes resynchronise within a few codes and a forgets its start, §7.2).
# After the lanes, a "cursor" runs on from the end of each lane until its state equals a
# state recorded by a later lane of the same row; the true decoding of the row is then
# lane 0 (which starts from the exact state), its cursor, the lane it met from the meeting
# point on, and so on. Whatever is not joined up this way (rare) starts the next round from
# the exact state reached. Errors found by a lane count only where they are on that path.

_TZ16 = np.full(1 << ESCAPE_Q, ESCAPE_Q, np.int64)     # quotient of a Rice code; 16: escape
_TZ16[1:] = np.log2(np.arange(1, 1 << ESCAPE_Q) & -np.arange(1, 1 << ESCAPE_Q))  # exact
_LOW_MASKS = (np.int64(1) << np.arange(33, dtype=np.int64)) - 1
_TZ16_LIST = _TZ16.tolist()
PAST_END, BAD_GAMMA = 1, 2                              # error codes of decoded codes
_LANE_CODES = 128       # codes per lane aimed at
_LANE_STEPS = 4 * _LANE_CODES
_CURSOR_STEPS = 2 * _LANE_CODES         # in lockstep, for every cursor
_CURSOR_RESUME_STEPS = 6 * _LANE_CODES  # one by one, for cursors on a path
_MIN_LANE_BITS = 64
# Below this many lanes a NumPy step costs more than decoding them one by one in Python.
_SCALAR_LANES = 32
# Codes decoded in one round at most (about 60 bytes each while the round runs).
_ROUND_CODES = 800_000
# Bits per value of the Golomb rows relative to row 0, as in the shared photos (the
# filtered and run-length rows are cheaper); only used to guess where rows end.
_ROW_WEIGHTS = (1.0, 0.8, 0.7, 0.6, 0.55, 0.5, 0.75, 0.5)
_SPAN_MARGIN = 1.25     # lanes cover this times the guessed rest of a row
_LOCKSTEP_CODES = 20_000  # rounds with fewer codes are decoded sequentially


def _decode_codes(win, ktab, state, const):
    """Decode the next code of every lane; return (out, err, new state).

    state: int64 arrays pos, a, rem, kind. rem < 0: a plain row, every code is a value;
    rem > 0: inside a non-zero run of a run-length row, rem values to go; rem == 0: a run
    length comes next, of a zero run (kind 0) or a non-zero run (kind 1).
    const: int64 (>= 4, N) rows: k-table offset of the lane's row, raise ratio, fall
    ratio, end bit of the payload (further rows are the callers').
    out: the mapped magnitude of a value, or the length of a run. err: 0, PAST_END or
    BAD_GAMMA.
    """
    pos, a, rem, kind = state
    w = win[pos >> 3] >> (pos & 7)
    k = ktab[const[0] + np.minimum((a + 8) >> 4, K_INDEX_LIMIT)]
    q = _TZ16[w & 0xFFFF]
    q1 = q + 1
    out = (q << k) | ((w >> q1) & _LOW_MASKS[k])
    bits = q1 + k
    value = rem != 0
    only_values = value.all()          # plain rows and non-zero runs: the common case
    if only_values:
        gamma = np.flatnonzero(q == ESCAPE_Q)
    else:
        short_run = 1 + (w & 1)                             # `0` -> 1, `1 0` -> 2
        out = np.where(value, out, short_run)
        bits = np.where(value, bits, short_run)
        gamma = np.flatnonzero(np.where(value, q == ESCAPE_Q, (w & 3) == 3))
    err = np.zeros(len(pos), np.int8)
    if len(gamma):
        is_value = value[gamma]
        skip = np.where(is_value, ESCAPE_Q, 2)              # 16 zeros, or `1 1`
        gpos = pos[gamma] + skip
        low = (win[gpos >> 3] >> (gpos & 7)) & 0xFFFFFFFF
        bad = low == 0                                      # more than 31 zeros
        z = np.frexp((low & -low) | bad)[1] - 1
        tpos = gpos + z + 1
        t = (win[tpos >> 3] >> (tpos & 7)) & _LOW_MASKS[z]
        out[gamma] = ((np.int64(1) << z) | t) + np.where(is_value, 15, 2)
        bits[gamma] = skip + 2 * z + 1
        if bad.any():
            err[gamma[bad]] = np.where(gpos[bad] >= const[3, gamma[bad]], PAST_END, BAD_GAMMA)
    new_pos = pos + bits
    past = new_pos > const[3]
    if past.any():
        err[past & (err == 0)] = PAST_END
    rho = np.where(a < out, const[1], const[2])
    new_a = a + ((rho * ((out << 4) - a) + 8) >> 4)
    if only_values:
        return out, err, [new_pos, new_a, rem - (rem > 0), kind]
    # Run codes leave a alone; a non-zero run's length is the number of values to follow.
    return out, err, [new_pos, np.where(value, new_a, a),
                      np.where(value, rem - (rem > 0), kind * out), kind ^ ~value]


def _gamma_at(win, base, gpos, end):
    """gamma (§7.3) at bit gpos: (g, bit length, err)."""
    low = (int(win[(gpos >> 3) - base]) >> (gpos & 7)) & 0xFFFFFFFF
    if not low:
        return 1, 1, PAST_END if gpos >= end else BAD_GAMMA
    z = (low & -low).bit_length() - 1
    tpos = gpos + z + 1
    t = (int(win[(tpos >> 3) - base]) >> (tpos & 7)) & ((1 << z) - 1)
    return (1 << z) | t, 2 * z + 1, 0


def _decode_code(win, base, ktab, pos, a, rem, kind, krow, up, down, end):
    """_decode_codes for one lane in Python ints: (out, err, new state). win: windows
    (array or list) from byte `base` on; ktab as a list."""
    w = int(win[(pos >> 3) - base]) >> (pos & 7)
    err = 0
    if rem:
        idx = (a + 8) >> 4
        k = ktab[krow + idx] if idx < K_INDEX_LIMIT else 0
        q = _TZ16_LIST[w & 0xFFFF]
        if q < ESCAPE_Q:
            out, bits = (q << k) | ((w >> (q + 1)) & ((1 << k) - 1)), q + 1 + k
        else:
            g, bits, err = _gamma_at(win, base, pos + ESCAPE_Q, end)
            out, bits = g + 15, bits + ESCAPE_Q
        rho = up if a < out else down
        a += (rho * ((out << 4) - a) + 8) >> 4
        rem -= rem > 0
    else:
        if w & 3 == 3:
            g, bits, err = _gamma_at(win, base, pos + 2, end)
            out, bits = g + 2, bits + 2
        else:
            out = bits = 1 + (w & 1)
        rem = kind * out
        kind ^= 1
    pos += bits
    if not err and pos > end:
        err = PAST_END
    return out, err, pos, a, rem, kind


def _one_by_one(win, ktab, ids, state, const, steps, final, status, meet=None):
    """Finish the last few lanes (or cursors: meet = (record map, lane records, met)) of a
    lockstep loop one at a time, with `steps` steps left; return their records."""
    ktab = ktab.tolist()
    records = []
    append = records.append
    for i, lane in enumerate(ids.tolist()):
        pos, a, rem, kind = (int(x[i]) for x in state)
        # const rows as _run_lanes or _run_cursors give them; shift is the cursors' map offset
        krow, up, down, end, limit, shift = (int(x) for x in const[:6, i])
        # A lane reads only up to its limit (and a code past it): as a list, faster.
        source, base = (win, 0) if meet is not None else \
            (win[pos >> 3:(limit >> 3) + 16].tolist(), pos >> 3)
        code = 0
        for step in range(steps + 1):
            if meet is not None:
                if pos >= limit:
                    code = 3
                    break
                r = int(meet[0][pos - shift])
                if r >= 0 and meet[1][2][r] == a and meet[1][3][r] == 2 * rem + kind:
                    code = 1
                    meet[2][lane] = r
                    break
            if step == steps:
                break
            out, err, new_pos, new_a, new_rem, new_kind = _decode_code(
                source, base, ktab, pos, a, rem, kind, krow, up, down, end)
            append((lane, pos, a, 2 * rem + kind, out, err))
            pos, a, rem, kind = new_pos, new_a, new_rem, new_kind
            if err:
                code = 2
                break
            if meet is None and pos >= limit:
                code = 1
                break
        for f, v in zip(final, (pos, a, rem, kind)):
            f[lane] = v
        status[lane] = code
    return tuple(np.array(records, np.int64).reshape(-1, 6).T)


def _step_records(steps):
    """Records appended step by step (lane ids, pos, a, phase, out, err) -> 6 arrays;
    empties `steps` field by field on the way, to keep the peak memory down."""
    if not steps:
        return [np.zeros(0, np.int64) for _ in range(6)]
    fields = [list(f) for f in zip(*steps)]
    steps.clear()
    out = []
    for f in fields:
        out.append(np.concatenate(f))
        f.clear()
    return out


def _run_lanes(win, ktab, state, const, max_steps):
    """Decode lanes in lockstep until each reaches its limit (const[4]), an error or
    max_steps. Returns (records, final states, status: 0 stopped by max_steps, 1 at its
    limit, 2 error)."""
    n = len(state[0])
    ids = np.arange(n, dtype=np.int32)
    final = [np.zeros(n, np.int64) for _ in state]
    status = np.zeros(n, np.int8)
    steps = []
    for step in range(max_steps):
        if len(ids) < _SCALAR_LANES:
            steps.append(_one_by_one(win, ktab, ids, state, const, max_steps - step, final,
                                     status))
            return _step_records(steps), final, status
        pos, a, rem, kind = state
        out, err, state = _decode_codes(win, ktab, state, const)
        steps.append((ids, pos, a, 2 * rem + kind, out, err))
        done = (state[0] >= const[4]) | (err != 0)
        if done.any():
            d = np.flatnonzero(done)
            for f, x in zip(final, state):
                f[ids[d]] = x[d]
            status[ids[d]] = np.where(err[d] != 0, 2, 1)
            keep = np.flatnonzero(~done)
            ids, const = ids[keep], const[:, keep]
            state = [x[keep] for x in state]
            if not len(ids):
                break
    for f, x in zip(final, state):
        f[ids] = x
    return _step_records(steps), final, status


def _run_cursors(win, ktab, state, const, recorded, lanes, max_steps):
    """Decode on from the ends of lanes until each meets a state recorded by a lane.

    const rows 4, 5: end of the row's lanes and the map offset of each cursor's row;
    recorded: map from bit position (minus the offset) to a lane record, -1 where none;
    lanes: the lanes' records. Returns (records, final states, status: 0 stopped by
    max_steps, 1 met, 2 error, 3 past the row's lanes; index of the met record).
    """
    lane_a, lane_phase = lanes[2], lanes[3]
    n = len(state[0])
    ids = np.arange(n, dtype=np.int32)
    final = [np.zeros(n, np.int64) for _ in state]
    status = np.zeros(n, np.int8)
    met = np.zeros(n, np.int64)
    steps = []
    for step in range(max_steps + 1):
        if len(ids) < _SCALAR_LANES:
            steps.append(_one_by_one(win, ktab, ids, state, const, max_steps - step, final,
                                     status, (recorded, lanes, met)))
            break
        pos, a, rem, kind = state
        phase = 2 * rem + kind
        beyond = pos >= const[4]
        r = recorded[np.where(beyond, 0, pos - const[5])]
        hit = ~beyond & (r >= 0) & (lane_a[r] == a) & (lane_phase[r] == phase)
        stop = hit | beyond if step < max_steps else np.ones(len(ids), bool)
        if stop.any():
            status[ids[hit]] = 1
            met[ids[hit]] = r[hit]
            status[ids[beyond]] = 3
            unmet = np.flatnonzero(stop & ~hit)
            for f, x in zip(final, state):
                f[ids[unmet]] = x[unmet]
            keep = np.flatnonzero(~stop)
            ids, const, phase = ids[keep], const[:, keep], phase[keep]
            state = [x[keep] for x in state]
            if not len(ids):
                break
        out, err, new_state = _decode_codes(win, ktab, state, const)
        steps.append((ids, state[0], state[1], phase, out, err))
        state = new_state
        if err.any():
            status[ids[err != 0]] = 2
            keep = np.flatnonzero(err == 0)
            ids, const = ids[keep], const[:, keep]
            state = [x[keep] for x in state]
            if not len(ids):
                break
    return _step_records(steps), final, status, met


def _k_lookup(table):
    """Flat k table: entry 1025 * row + min(idx, 1024) (k = 0 for idx >= 1024, §11)."""
    ktab = np.zeros((8, K_INDEX_LIMIT + 1), np.int64)
    ktab[:, :K_INDEX_LIMIT] = stages.k_table(table)
    return ktab.ravel()


def _start_row(win, tile, row, pos, end, counts):
    """Exact decoder state at the start of the first non-empty row >= row of a tile, or
    None when there is none (§8.2 step 4)."""
    while row < 8 and not counts[row]:
        row += 1
    if row == 8:
        return None
    if pos >= end:
        raise Tlg8FormatError(f"tile {tile}: Golomb row {row} runs past the end of the payload")
    st = {"row": row, "count": counts[row], "filled": 0, "a": 0, "rem": -1, "kind": 0,
          "first": pos, "parts": []}
    if _RUNLENGTH_ROW[row]:                 # the row starts with its non-zero flag (§7.5)
        st["kind"] = int(win[pos >> 3] >> (pos & 7)) & 1
        st["rem"] = 0
        pos += 1
    st["pos"] = pos
    return st


def _plan_lanes(st, end, counts):
    """Lane start bits and limits for the rest of a row from state st.

    The row's length in bits is estimated: at its start from the bits left in the payload,
    shared among the rows still to come by their value counts, weighted by the typical
    bits per value of each row (_ROW_WEIGHTS); later from the bits per value so far. A
    short estimate only costs another round.
    """
    row, pos, need = st["row"], st["pos"], st["count"] - st["filled"]
    left = end - pos + 1
    if st["filled"]:
        est = (pos - st["first"]) / st["filled"] * need
    else:
        later = sum(counts[r] * _ROW_WEIGHTS[r] for r in range(row + 1, 8))
        est = left * need * _ROW_WEIGHTS[row] / (need * _ROW_WEIGHTS[row] + later)
    span = int(min(left, _SPAN_MARGIN * est + 256))
    lane_bits = max(_MIN_LANE_BITS, int(_LANE_CODES * est / need))
    starts = np.arange(pos, pos + span, lane_bits, dtype=np.int64)
    return starts, np.append(starts[1:], pos + span), est / need


def _lane_guess(bits_per_value):
    """Adaptive state guessed where a lane starts: about 16 times the mapped magnitude of a
    Rice code of that length."""
    return 16 << max(0, min(20, int(bits_per_value) - 1))


def _chain(j, lane_cursor, lane_status, cursor_status, cursor_met, record_lane):
    """Follow the true decoding of a row from its lane 0 (j) through cursors and lanes.

    Returns (entries: (lane, record where the path enters it), cursors on the path, tail:
    ("lane" or "cursor", index) whose final state is the exact state after the path,
    or None when the path ends with an error record).
    """
    entries, cursors = [(j, None)], []
    while True:
        c = lane_cursor[j]
        if c < 0:
            return entries, cursors, None if lane_status[j] == 2 else ("lane", j)
        cursors.append(c)
        if cursor_status[c] != 1:
            return entries, cursors, None if cursor_status[c] == 2 else ("cursor", c)
        j = record_lane[cursor_met[c]]
        entries.append((j, cursor_met[c]))


def _take_path(st, path, tail, tile):
    """Append the values of a row's path (records pos, phase, out, err in path order) to
    row state st (§7.4, §7.5).

    Returns the bit position after the row's last code once the row is complete, else
    None (st then holds the exact state where the path stops). Raises for an error on the
    path before the row is complete.
    """
    pos, phase, out, err = path
    n = len(pos)
    need = st["count"] - st["filled"]
    runlength = _RUNLENGTH_ROW[st["row"]]
    where = f"tile {tile}: Golomb row {st['row']}"
    if runlength:
        rem = phase >> 1
        run = rem == 0
        emitted = np.where(run, out * (1 - (phase & 1)), 1)   # zero run: its zeros
        filled = np.cumsum(emitted)
        over = run & (filled - emitted + out > need)
        bad = (err != 0) | over
    else:
        filled = np.arange(1, n + 1)
        bad = err != 0
    complete = int(np.searchsorted(filled, need))
    first_bad = int(np.argmax(bad)) if bad.any() else n
    if first_bad <= complete and first_bad < n:
        if runlength and over[first_bad]:
            raise Tlg8FormatError(f"{where}: run of {int(out[first_bad])} goes past the "
                                  f"row's {st['count']} values")
        if err[first_bad] == BAD_GAMMA:
            raise Tlg8FormatError(f"{where}: gamma code with more than {MAX_GAMMA_ZEROS} "
                                  f"zeros")
        raise Tlg8FormatError(f"{where} runs past the end of the payload")
    keep = min(complete + 1, n)
    if runlength:
        vi = np.flatnonzero(rem[:keep] != 0)
        m = out[vi]
        st["parts"].append((st["filled"] + filled[vi] - 1,
                            np.where(m & 1, (m + 1) >> 1, -(m >> 1) - 1)))
    else:
        m = out[:keep]
        st["parts"].append(np.where(m & 1, -((m + 1) >> 1), m >> 1))
    st["filled"] += int(filled[keep - 1])
    if complete < n:
        return int(pos[keep]) if keep < n else int(tail[0])
    st["pos"], st["a"], st["rem"], st["kind"] = (int(x) for x in tail)
    return None


def _row_values(st):
    """All values of a completed row from the parts _take_path appended."""
    if not _RUNLENGTH_ROW[st["row"]]:
        return np.concatenate(st["parts"])
    values = np.zeros(st["count"], np.int64)
    for where, v in st["parts"]:
        values[where] = v
    return values


def _golomb_round(win, ktab, ratios, active, ends, counts, first_tile, rows, errors):
    """One round of _golomb_rows: lanes and cursors over the rest of every active tile's
    current row; completed rows go to rows, and their tiles on to the next row. A tile
    whose rows are broken gets its error in errors and None in active."""
    plans = []
    codes = 0
    for t, st in active.items():
        plan = _plan_lanes(st, ends[t], counts[t])
        codes += (plan[1][-1] - plan[0][0]) / plan[2]
        if plans and codes > _ROUND_CODES:
            break               # the other tiles wait for the next round (memory)
        plans.append((t, st, plan))
    # With few codes, a lockstep step costs more than it saves: one lane per row then,
    # decoded one code at a time. So too for a row where lanes hardly met before (noise
    # full of escape codes resynchronises slowly).
    few = codes < _LOCKSTEP_CODES
    sequential = few
    lanes, groups = [], []
    span_start = 0
    for t, st, (lane_starts, limits, bpv) in plans:
        if few or st.get("alone"):
            lane_starts, limits = lane_starts[:1], limits[-1:]
            sequential = True
        n = len(lane_starts)
        guess = np.full(n, _lane_guess(bpv), np.int64)
        guess[0] = st["a"]
        rem = np.full(n, min(st["rem"], 0), np.int64)
        rem[0] = st["rem"]
        kind = np.full(n, int(_RUNLENGTH_ROW[st["row"]]), np.int64)  # guess: non-zero run
        kind[0] = st["kind"]
        up, down = ratios[st["row"]]
        span = int(limits[-1]) - st["pos"]
        # const rows: k-table offset, ratios, payload end, lane limit, row limit, and
        # the offset from bit positions to the row's part of the record map.
        const = np.array([[1025 * st["row"], up, down, ends[t], 0, st["pos"] + span,
                           st["pos"] - span_start]] * n, np.int64).T
        const[4] = limits
        groups.append((t, sum(len(x[0]) for x in lanes), n, span_start, span))
        lanes.append((lane_starts, guess, rem, kind, const))
        span_start += span
    state = [np.concatenate([x[f] for x in lanes]) for f in range(4)]
    const = np.concatenate([x[4] for x in lanes], axis=1)
    # Every code takes at least one bit, so a lane's bits bound its steps.
    l_rec, l_final, l_status = _run_lanes(
        win, ktab, state, const,
        int((const[4] - state[0]).max()) + 1 if sequential else _LANE_STEPS)
    nlanes = len(l_status)
    # Lanes record disjoint bit ranges, so one map from bit position to record serves
    # the cursors' meeting test and, read in bit order, gives the path in order.
    recorded = np.full(span_start, -1, np.int32 if len(l_rec[0]) < 1 << 30 else np.int64)
    where = const[6, l_rec[0]]
    recorded[np.subtract(l_rec[1], where, out=where)] = np.arange(len(where),
                                                                  dtype=recorded.dtype)
    del where
    lane_cursor = np.full(nlanes, -1)
    last_lane = np.zeros(nlanes, bool)
    last_lane[[g0 + n - 1 for _, g0, n, _, _ in groups]] = True
    with_cursor = np.flatnonzero((l_status != 2) & ~last_lane)
    lane_cursor[with_cursor] = np.arange(len(with_cursor))
    c_const = const[[0, 1, 2, 3, 5, 6]][:, with_cursor]
    c_rec, c_final, c_status, c_met = _run_cursors(
        win, ktab, [f[with_cursor] for f in l_final], c_const, recorded, l_rec,
        _CURSOR_STEPS)
    entry = np.full(nlanes, np.iinfo(np.int64).max)
    on_cursor = np.zeros(len(with_cursor), bool)
    tails, resumed = [], []
    lane_cursor, l_status_list = lane_cursor.tolist(), l_status.tolist()
    c_status_list, c_met_list = c_status.tolist(), c_met.tolist()
    for t, g0, n, _, _ in groups:
        while True:
            entries, cursors, tail = _chain(g0, lane_cursor, l_status_list, c_status_list,
                                            c_met_list, l_rec[0])
            c = tail[1] if tail is not None and tail[0] == "cursor" else None
            if c is None or c_status_list[c] != 0 or len(resumed) and c in resumed[-1][0]:
                break
            # Only cursors on a path are worth running on (off the path, slow meetings
            # are common: past a row's end, lanes decode the next row's bits).
            resumed.append(([c], _one_by_one(win, ktab, np.array([c]),
                                             [f[c:c + 1] for f in c_final], c_const[:, c:c + 1],
                                             _CURSOR_RESUME_STEPS, c_final, c_status,
                                             (recorded, l_rec, c_met))))
            c_status_list[c], c_met_list[c] = int(c_status[c]), int(c_met[c])
        for j, r in entries:
            entry[j] = active[t]["pos"] if r is None else l_rec[1][r]
        on_cursor[cursors] = True
        tails.append(None if tail is None else
                     [f[tail[1]] for f in (l_final if tail[0] == "lane" else c_final)])
    if resumed:
        c_rec = [np.concatenate([c_rec[f]] + [r[1][f] for r in resumed]) for f in range(6)]
    l_rec[2] = c_rec[2] = None             # the states a were only needed for meeting
    on_path = np.concatenate([l_rec[1] >= entry[l_rec[0]], on_cursor[c_rec[0]]])
    sel = np.flatnonzero(on_path[len(l_rec[0]):])
    recorded[c_rec[1][sel] - c_const[5, c_rec[0][sel]]] = len(l_rec[0]) + sel
    paths = []
    for _, _, _, start, span in groups:
        part = recorded[start:start + span]
        part = part[part >= 0]
        paths.append(part[on_path[part]])
    del recorded, on_path
    # Fields pos, phase, out, err of each path; lanes' and cursors' records joined one
    # field at a time (memory).
    fields = []
    for f in (1, 3, 4, 5):
        joined = np.concatenate([l_rec[f], c_rec[f]])
        l_rec[f] = c_rec[f] = None
        fields.append([joined[path] for path in paths])
    del joined
    lane_records = np.bincount(l_rec[0], minlength=nlanes)
    for g, ((t, g0, n, _, _), tail) in enumerate(zip(groups, tails)):
        st = active[t]
        if st is None:                 # stopped by an earlier tile's error this round
            continue
        try:
            end_pos = _take_path(st, [f[g] for f in fields], tail, first_tile + t)
            if end_pos is None:
                # The path stopped short, through lanes that mostly did not join it: this
                # tile's rows go on one lane each.
                if n > 1 and 2 * len(paths[g]) < lane_records[g0:g0 + n].sum():
                    st["alone"] = True
                continue
            rows[t][st["row"]] = _row_values(st)
            active[t] = _start_row(win, first_tile + t, st["row"] + 1, end_pos, ends[t],
                                   counts[t])
        except Tlg8FormatError as e:
            _tile_failed(active, errors, t, e)
            continue
        if active[t] is not None and st.get("alone"):
            active[t]["alone"] = True
    for t, _, _, _, _ in groups:       # tiles left out of this round go first next time
        st = active.pop(t, None)
        if st is not None:
            active[t] = st


def _tile_failed(active, errors, t, error):
    """Note the first error of tile t; tiles after the first failed one stop (only that
    one's error is raised, as a decoder going through the tiles in order would)."""
    errors[t] = error
    first = min(errors)
    for u in [u for u in active if u >= first]:
        active[u] = None


def _golomb_rows(win, starts, ends, counts, table, first_tile):
    """Values of the Golomb rows of a run of tiles (§5.4, §7).

    win: windows of the buffer holding the payloads; starts: bit where each tile's rows
    begin; ends: bit where its payload ends; counts: (T, 8) values per row. Returns per
    tile the 8 row value arrays (int64; empty for rows without values).
    """
    ktab = _k_lookup(table)
    ratios = [(up, down) for up, down, _ in table]
    rows = [[np.zeros(0, np.int64)] * 8 for _ in starts]
    active, errors = {}, {}
    for t in range(len(starts)):
        try:
            st = _start_row(win, first_tile + t, 0, starts[t], ends[t], counts[t])
        except Tlg8FormatError as e:
            errors[t] = e
            break
        if st is not None:
            active[t] = st
    while active:
        _golomb_round(win, ktab, ratios, active, ends, counts, first_tile, rows, errors)
        active = {t: st for t, st in active.items() if st is not None}
    if errors:
        # The first broken tile's first error, whichever round found it.
        raise errors[min(errors)]
    return rows


def _chunk_values(data, records, tiles, first_tile, ncomp, table):
    """Choices (N, 5) and coded values (laid out as _value_rows says) of a run of tiles."""
    pieces, byte_starts = [], []
    size = 0
    for start, length in records:
        byte_starts.append(size)
        pieces += [data[start:start + length], bytes(WINDOW_PAD)]
        size += length + WINDOW_PAD
    win = _windows(b"".join(pieces))
    choices, layouts, starts, ends = [], [], [], []
    counts = np.zeros((len(tiles), 8), np.int64)
    for t, ((_, length), (_, _, tw, th)) in enumerate(zip(records, tiles.tolist())):
        blocks = _tile_blocks(tw, th)
        ch, rows_start = _side_information(win, byte_starts[t], length, len(blocks),
                                           first_tile + t)
        offsets, rows = _value_rows(ch[:, 4], ch[:, 3], blocks[:, 2] * blocks[:, 3], ncomp)
        counts[t] = np.bincount(rows, minlength=8)
        choices.append(ch)
        layouts.append((offsets, rows))
        starts.append(8 * byte_starts[t] + rows_start)
        ends.append(8 * (byte_starts[t] + length))
    row_values = _golomb_rows(win, starts, ends, counts.tolist(), table, first_tile)
    del win
    values = np.empty(int(counts.sum()), np.int64)
    offsets = []
    base = 0
    for t, (offs, rows) in enumerate(layouts):
        v = values[base:base + len(rows)]
        for r in range(8):
            if counts[t, r]:
                v[rows == r] = row_values[t][r]
        row_values[t] = None
        offsets.append(offs + base)
        base += len(rows)
    return np.concatenate(choices), values, np.concatenate(offsets)


# --------------------------------------------------------------------------------------
# Decoder: inverse stages and reconstruction


_BLOCK_BATCH = 4096      # blocks undone together: bounds the int64 temporaries


def _residual_canvas(blocks, choices, values, offsets, shape):
    """Predictor residuals E (int16, saturated) and predictors of a run of tiles, both in
    the layout of the zero-bordered canvas (T, th+1, tw+2, C) (predictor repeated per
    component), so that reconstruction reads them with the canvas's own indices."""
    ncomp = shape[3]
    size = (shape[0], shape[1] + 1, shape[2] + 2, ncomp)
    resid = np.zeros(size, np.int16)
    pred = np.zeros(size, np.uint8)
    for w, h, every in _size_classes(blocks):
        n = w * h
        for sel in np.array_split(every, -(-len(every) // _BLOCK_BATCH)):
            ch = choices[sel]
            seq = values[offsets[sel, None] + np.arange(ncomp * n)]
            vals = np.where(ch[:, 3, None, None] == 1, stages.deinterleave(seq, ncomp),
                            seq.reshape(len(sel), ncomp, n))
            del seq
            if w == BLOCK and h == BLOCK:
                for r, m in _groups(ch[:, 2]):
                    vals[m] = stages.undo_reorder(vals[m], r, w, h)
            for f, m in _groups(ch[:, 1]):
                vals[m] = stages.inverse_color_filter(vals[m], f)
            # |E| >= 511 always clamps to 0 or 255, so saturating to int16 changes nothing.
            vals = np.clip(vals, -32768, 32767).astype(np.int16)
            t, y, x = _block_index(blocks[sel], w, h, 0)
            resid[t, y + 1, x + 1] = np.moveaxis(vals.reshape(len(sel), ncomp, h, w), 1, -1)
            pred[t, y + 1, x + 1] = ch[:, 0, None, None, None]
    return resid, pred


# Neighbour pairs (x, y) whose rounded mean is each predictor's value, for predictors 1-7
# (§6.1: a neighbour alone is the mean of itself twice); predictor 0 (MED) is separate.
# Neighbours as offsets back from the sample in a canvas row of R values, C per pixel:
# a = C, b = R, c = R + C, d = R - C.
_MEAN_PAIRS = ((None, None), ("a", "c"), ("b", "c"), ("b", "d"), ("a", "a"), ("b", "b"),
               ("c", "c"), ("d", "d"))


def _reconstruct(resid, pred, tiles):
    """Samples of a run of tiles from residuals and predictors (§8.5), both in canvas
    layout (_residual_canvas).

    Sample (x, y) needs (x-1, y), (x-1, y-1), (x, y-1) and (x+1, y-1), all on earlier
    anti-diagonals x + 2y, so each anti-diagonal of every tile is computed at once: the
    canvas indices of all samples are put in that order once, and each anti-diagonal is
    a slice of them. Returns the int32 canvas (T, th+1, tw+2, C) with a zero border.
    """
    ntile, th_max, tw_max, ncomp = resid.shape
    th_max, tw_max = th_max - 1, tw_max - 2
    canvas = np.zeros(resid.shape, np.int32)
    row = (tw_max + 2) * ncomp
    offsets = {"a": ncomp, "b": row, "c": row + ncomp, "d": row - ncomp}
    first = np.array([0] + [offsets[x] for x, _ in _MEAN_PAIRS[1:]], np.int32)
    second = np.array([0] + [offsets[y] for _, y in _MEAN_PAIRS[1:]], np.int32)
    # Pixels of one tile in wavefront order (anti-diagonal s = x + 2y, then y).
    y, x = np.divmod(np.arange(th_max * tw_max), tw_max)
    order = np.argsort(x + 2 * y, kind="stable")
    y, x = y[order], x[order]
    bounds = np.searchsorted(x + 2 * y, np.arange(tw_max + 2 * th_max - 1)) * (ntile * ncomp)
    # Every sample: (pixel in wavefront order, tile, component).
    target = ((((y + 1) * row + (x + 1) * ncomp).astype(np.int32)[:, None, None]
               + (np.arange(ntile, dtype=np.int32) * canvas[0].size)[:, None]
               + np.arange(ncomp, dtype=np.int32))).ravel()
    ragged = bool((tiles[:, 2] != tw_max).any() or (tiles[:, 3] != th_max).any())
    if ragged:
        # Outside a smaller tile everything must stay 0 (its neighbours read 0 there).
        inside = np.repeat(((x[:, None] < tiles[:, 2]) & (y[:, None] < tiles[:, 3])).ravel(),
                           ncomp)
    flat, resid = canvas.reshape(-1), resid.reshape(-1)
    pred = pred.reshape(-1)[target]
    first_back, second_back = target - first[pred], target - second[pred]
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        t = target[lo:hi]
        value = (flat[first_back[lo:hi]] + flat[second_back[lo:hi]] + 1) >> 1
        med = pred[lo:hi] == 0
        if med.any():
            a = flat[t - ncomp]
            b = flat[t - row]
            c = flat[t - row - ncomp]
            value = np.where(med, np.minimum(np.maximum(a + b - c, np.minimum(a, b)),
                                             np.maximum(a, b)), value)
        value += resid[t]
        np.minimum(np.maximum(value, 0, out=value), 255, out=value)
        if ragged:
            value *= inside[lo:hi]
        flat[t] = value
    return canvas


def _check_sizes(hdr, max_pixels, available):
    """Tile size and count of a parsed header, after the decoder's resource limits and a
    check that the tile records can fit in the `available` bytes after the header."""
    width, height = hdr["width"], hdr["height"]
    tile_w, tile_h = min(hdr["tile_w"], width), min(hdr["tile_h"], height)
    if width * height > max_pixels:
        raise Tlg8FormatError(f"image {width} x {height} exceeds the decoder's limit of "
                              f"{max_pixels} pixels")
    if tile_w * tile_h > MAX_TILE_PIXELS or tile_w + 2 * tile_h > MAX_TILE_SPAN:
        raise Tlg8FormatError(f"tiles of {tile_w} x {tile_h} exceed the decoder's limits "
                              f"({MAX_TILE_PIXELS} pixels, width + 2 * height <= "
                              f"{MAX_TILE_SPAN})")
    ntiles = -(-width // tile_w) * -(-height // tile_h)
    if ntiles > MAX_TILES:
        raise Tlg8FormatError(f"{ntiles} tiles of {tile_w} x {tile_h} exceed the decoder's "
                              f"limit of {MAX_TILES} tiles")
    # Every tile record takes at least 5 bytes: L and one byte of Golomb rows.
    if ntiles * 5 > available:
        raise Tlg8FormatError(f"{ntiles} tiles cannot fit in the {available} bytes after "
                              f"the header (truncated or bad sizes)")
    return tile_w, tile_h, ntiles


def decode_tlg8(data, max_pixels=MAX_PIXELS, compiled=None):
    """Decode a .tlg8 file: returns (samples uint8 (H, W, C), C, choices int64 (N, 5)).

    Raises Tlg8FormatError for any invalid file, and for files beyond `max_pixels`
    (W * H), MAX_TILE_PIXELS, MAX_TILE_SPAN or MAX_TILES. compiled: decode with the
    compiled kernels of tlg8.decode_kernels (True needs numba) or with NumPy (False);
    None: compiled when tlg8.jit.available(). Both give the same results.
    """
    data = memoryview(data).cast("B")
    hdr = read_header(data)
    width, height, ncomp = hdr["width"], hdr["height"], hdr["ncomp"]
    tile_w, tile_h, ntiles = _check_sizes(hdr, max_pixels, len(data) - hdr["offset"])
    records = _records(data, hdr["offset"], ntiles)
    tiles = _tiles(width, height, tile_w, tile_h)
    out = np.empty((height, width, ncomp), np.uint8)
    if jit.available() if compiled is None else compiled:
        return _decode_compiled(data, hdr, records, tiles, out)
    all_choices = []
    for t0, t1 in _chunks(tiles):
        chunk = tiles[t0:t1]
        choices, values, offsets = _chunk_values(data, records[t0:t1], chunk, t0, ncomp,
                                                 hdr["golomb_table"])
        shape = (len(chunk), int(chunk[:, 3].max()), int(chunk[:, 2].max()), ncomp)
        resid, pred = _residual_canvas(_chunk_blocks(chunk), choices, values, offsets, shape)
        del values
        canvas = _reconstruct(resid, pred, chunk)
        del resid, pred
        for t, (ox, oy, tw, th) in enumerate(chunk.tolist()):
            out[oy:oy + th, ox:ox + tw] = canvas[t, 1:th + 1, 1:tw + 1]
        all_choices.append(choices)
    return out, ncomp, np.concatenate(all_choices)


def _decode_compiled(data, hdr, records, tiles, out):
    """decode_tlg8's work with tlg8.decode_kernels, over the same chunks of tiles as the
    NumPy path (the side information of a chunk's tiles is checked before their rows)."""
    from . import decode_kernels
    buf = np.frombuffer(data, np.uint8)
    buf.flags.writeable = False         # one compiled specialisation, whatever data was
    nbs = ((tiles[:, 2] + 7) >> 3) * ((tiles[:, 3] + 7) >> 3)
    first_block = np.cumsum(nbs) - nbs
    choices = np.empty((int(nbs.sum()), 5), np.int64)
    for t0, t1 in _chunks(tiles):
        decode_kernels.decode_tiles(buf, records[t0:t1], tiles[t0:t1], t0, hdr["ncomp"],
                                    hdr["golomb_table"], choices, int(first_block[t0]), out)
    return out, hdr["ncomp"], choices


# The longest header: the TLG0.0 wrapper, the fixed fields and the Golomb table.
LONGEST_HEADER = len(SDS_MAGIC) + 4 + HEADER_SIZE + TABLE_SIZE


def read_tlg8(path, max_pixels=MAX_PIXELS):
    """Decode the .tlg8 file at `path` (read_tlg8_bytes, then decode_tlg8).

    Returns what decode_tlg8 returns; raises Tlg8FormatError (without the file name) or
    OSError.
    """
    return decode_tlg8(read_tlg8_bytes(path, max_pixels), max_pixels)


def read_tlg8_bytes(path, max_pixels=MAX_PIXELS):
    """The bytes of the .tlg8 file at `path` up to its last tile record, reading only what
    its header says it needs.

    The header is read and checked first (magic, sizes, the decoder's limits), then the
    tile record lengths against the file's length, and only then the records: a large
    file that is not TLG8, or a header declaring a huge image, fails after a few hundred
    bytes and before any large allocation; data after the last tile record is not read.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(LONGEST_HEADER)
        hdr = read_header(head)
        _, _, ntiles = _check_sizes(hdr, max_pixels, size - hdr["offset"])
        end = hdr["offset"]
        for t in range(ntiles):
            f.seek(end)
            word = f.read(4)
            if len(word) < 4:
                raise Tlg8FormatError(f"file ends before tile {t} of {ntiles} (truncated)")
            length = int.from_bytes(word, "little")
            end += 4
            if end + length > size:
                raise Tlg8FormatError(f"tile {t}: payload of {length} bytes but only "
                                      f"{size - end} left (truncated)")
            end += length
        f.seek(len(head))
        return head[:end] + f.read(max(0, end - len(head)))
