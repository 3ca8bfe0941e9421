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
import numpy as np

from . import Tlg8Error, stages
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


def _row_params(table):
    """Per row: (k list for idx 0..1023, raise ratio, fall ratio)."""
    ktab = stages.k_table(table)
    return [(ktab[r].tolist(), table[r][0], table[r][1]) for r in range(8)]


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
    for key in np.unique(sizes).tolist():
        yield key >> 4, key & 15, np.flatnonzero(sizes == key)


def _groups(values):
    """(value, mask) for each distinct value of an int array."""
    for v in np.unique(values).tolist():
        yield v, values == v


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
    ktab = np.zeros((8, K_INDEX_LIMIT + 1), np.int64)     # idx >= 1024: k = 0 (§11)
    ktab[:, :K_INDEX_LIMIT] = stages.k_table(table)
    return [ktab[r, np.minimum((a + 8) >> 4, K_INDEX_LIMIT)] for a, r in zip(states, row_ids)]


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


def _tile_payload(choices, rows):
    """Payload of one tile (§5): side information, Golomb rows, padding.

    rows: (row, values, mapped magnitudes, k) of each non-empty Golomb row, in row order.
    """
    modes, fields = [], []
    for col, width in zip(STREAM_COLUMNS, STREAM_BITS):
        mode, vals, bits = _stream_fields(choices[:, col], width)
        modes.append(mode)
        fields.append((vals, bits))
    side = [(np.array(modes), np.full(5, 2))] + fields
    payload = _pack(np.concatenate([f[0] for f in side]), np.concatenate([f[1] for f in side]))
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


def encode_tlg8(samples, choices, golomb_table=None, tile_size=(TILE_W, TILE_H)):
    """Bytes of the .tlg8 file for `samples` coded with the per-block `choices` (§3-§7).

    golomb_table: 8 rows of (raise, fall, 9 counts), default stages.DEFAULT_GOLOMB_TABLE;
    it is stored in the header. tile_size: the reference always uses 8192 x 80 (other
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
    tile_first = np.concatenate([[0], np.cumsum(per_tile)])
    out = [_header(ncomp, width, height, tile_w, tile_h, table)]
    for t0, t1 in _chunks(tiles):
        blocks = _chunk_blocks(tiles[t0:t1])
        ch = choices[tile_first[t0]:tile_first[t1]]
        flat, offsets, rows = _coded_values(_canvas(samples, tiles[t0:t1]), blocks, ch)
        ends = np.append(offsets, len(flat))
        first = tile_first[t0:t1 + 1] - tile_first[t0]
        # The Golomb rows of all tiles of the chunk: (tile, row, values, magnitudes).
        seqs = []
        for t in range(t1 - t0):
            v0, v1 = ends[first[t]], ends[first[t + 1]]
            for r in range(8):
                v = flat[v0:v1][rows[v0:v1] == r]
                if len(v):
                    seqs.append((t, r, v, _magnitudes(v, _RUNLENGTH_ROW[r])))
        ks = _adaptive_k([s[3] for s in seqs], [s[1] for s in seqs], table)
        tile_rows = [[] for _ in range(t1 - t0)]
        for (t, r, v, m), k in zip(seqs, ks):
            tile_rows[t].append((r, v, m, k))
        for t in range(t1 - t0):
            payload = _tile_payload(ch[first[t]:first[t + 1]], tile_rows[t])
            out.append(len(payload).to_bytes(4, "little"))
            out.append(payload)
    return b"".join(out)


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


def tile_records(data):
    """(start, length) of every tile payload of a file, after read_header (§3.3)."""
    hdr = read_header(data)
    width, height = hdr["width"], hdr["height"]
    ntiles = -(-width // min(hdr["tile_w"], width)) * -(-height // min(hdr["tile_h"], height))
    if ntiles * 5 > len(data) - hdr["offset"]:
        raise Tlg8FormatError(f"{ntiles} tiles cannot fit in the {len(data) - hdr['offset']} "
                              f"bytes after the header (truncated or bad sizes)")
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


def _windows(payload):
    """64-bit little-endian windows starting at every payload byte, plus zero padding.

    After `>> (pos & 7)` a window holds at least 57 valid bits, enough for any code except
    long gamma codes, which re-read.
    """
    buf = np.frombuffer(bytes(payload) + bytes(24), np.uint8).astype(np.uint64)
    n = len(buf) - 7
    win = buf[:n].copy()
    for j in range(1, 8):
        win |= buf[j:j + n] << np.uint64(8 * j)
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
        words = win_array[bitpos >> 3]
        vals = (words >> (bitpos & 7).astype(np.uint64)) & np.uint64(mask)
        return vals.astype(np.int64), pos + nb * width
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


def _gamma(win, pos, end, where):
    """Read gamma (§7.3) at pos; return (g, new pos)."""
    w = win[pos >> 3] >> (pos & 7)
    if not w & 0xFFFFFFFF:
        if pos >= end:
            raise Tlg8FormatError(f"{where} runs past the end of the payload")
        raise Tlg8FormatError(f"{where}: gamma code with more than {MAX_GAMMA_ZEROS} zeros")
    z = (w & -w).bit_length() - 1
    pos += z + 1
    t = (win[pos >> 3] >> (pos & 7)) & ((1 << z) - 1)
    return (1 << z) | t, pos + z


# Trailing zero count of every non-zero 16-bit value: the Golomb-Rice quotient.
_TRAILING_ZEROS = [0] + [(i & -i).bit_length() - 1 for i in range(1, 1 << ESCAPE_Q)]
_MASKS = [(1 << k) - 1 for k in range(9)]


def _read_magnitudes(win, pos, end, count, state, where, out):
    """Append `count` Golomb-Rice coded mapped magnitudes (§7.2, §7.3) to out; return pos.

    state = [krow, up, down, a] of the row; a is updated. The end is checked once at the
    end: past it the windows hold zero padding, and zeros always stop in _gamma within
    one value.
    """
    krow, up, down, a = state
    up16, up_keep, down16, down_keep = 16 * up, 16 - up, 16 * down, 16 - down
    append = out.append
    zeros = _TRAILING_ZEROS
    masks = _MASKS
    for _ in range(count):
        idx = (a + 8) >> 4
        k = krow[idx] if idx < K_INDEX_LIMIT else 0
        w = win[pos >> 3] >> (pos & 7)
        low = w & 0xFFFF
        if low:
            q = zeros[low]
            m = (q << k) | ((w >> (q + 1)) & masks[k])
            pos += q + 1 + k
        else:
            g, pos = _gamma(win, pos + ESCAPE_Q, end, where)
            m = g + 15
        append(m)
        if a < m:
            a = (m * up16 + a * up_keep + 8) >> 4
        else:
            a = (m * down16 + a * down_keep + 8) >> 4
    if pos > end:
        raise Tlg8FormatError(f"{where} runs past the end of the payload")
    state[3] = a
    return pos


def _read_row(win, pos, end, count, params, runlength, where):
    """Decode one Golomb row of `count` values (§7.4, §7.5); return (int64 array, pos)."""
    state = list(params) + [0]
    if not runlength:
        ms = []
        pos = _read_magnitudes(win, pos, end, count, state, where, ms)
        m = np.array(ms, np.int64)
        return np.where(m & 1, -((m + 1) >> 1), m >> 1), pos
    if pos >= end:
        raise Tlg8FormatError(f"{where} runs past the end of the payload")
    nonzero = (win[pos >> 3] >> (pos & 7)) & 1
    pos += 1
    ms, run_starts, run_lengths = [], [], []
    filled = 0
    while filled < count:
        w = win[pos >> 3] >> (pos & 7)
        if not w & 1:
            length, pos = 1, pos + 1
        elif not w & 2:
            length, pos = 2, pos + 2
        else:
            g, pos = _gamma(win, pos + 2, end, where)
            length = g + 2
        if pos > end:
            raise Tlg8FormatError(f"{where} runs past the end of the payload")
        if filled + length > count:
            raise Tlg8FormatError(f"{where}: run of {length} goes past the row's "
                                  f"{count} values")
        if nonzero:
            run_starts.append(filled)
            run_lengths.append(length)
            pos = _read_magnitudes(win, pos, end, length, state, where, ms)
        filled += length
        nonzero ^= 1
    values = np.zeros(count, np.int64)
    if ms:
        m = np.array(ms, np.int64)
        first = np.repeat(np.array(run_starts, np.int64), run_lengths)
        inside = np.arange(len(m)) - np.repeat(np.cumsum(run_lengths) - run_lengths,
                                               run_lengths)
        values[first + inside] = np.where(m & 1, (m + 1) >> 1, -(m >> 1) - 1)
    return values, pos


def _decode_payload(payload, tw, th, ncomp, row_params, tile):
    """Choices (NB, 5) and coded values (laid out as _value_rows says) of one tile."""
    blocks = _tile_blocks(tw, th)
    nb = len(blocks)
    win_array = _windows(payload)
    win = win_array.tolist()
    end = 8 * len(payload)
    pos = 10
    modes = [(win[0] >> (2 * s)) & 3 for s in range(5)]     # past the end reads 0 (§8.6)
    choices = np.empty((nb, 5), np.int64)
    for s, (mode, col, width, limit) in enumerate(zip(modes, STREAM_COLUMNS, STREAM_BITS,
                                                      STREAM_LIMITS)):
        name = f"tile {tile}: {STREAM_NAMES[s]}"
        if mode == 3:
            raise Tlg8FormatError(f"{name} stream has mode 3")
        vals, pos = _read_stream(win, win_array, pos, end, mode, nb, width, name)
        if (vals >= limit).any():
            raise Tlg8FormatError(f"{name} value {int(vals.max())} out of range (0..{limit - 1})")
        choices[:, col] = vals
    pos = (pos + 7) & ~7
    n = blocks[:, 2] * blocks[:, 3]
    offsets, rows = _value_rows(choices[:, 4], choices[:, 3], n, ncomp)
    values = np.empty(len(rows), np.int64)
    for r in range(8):
        where = rows == r
        count = int(np.count_nonzero(where))
        if count:
            if pos >= end:
                raise Tlg8FormatError(f"tile {tile}: Golomb row {r} runs past the end "
                                      f"of the payload")
            values[where], pos = _read_row(win, pos, end, count, row_params[r],
                                           _RUNLENGTH_ROW[r], f"tile {tile}: Golomb row {r}")
    return choices, values, offsets


# --------------------------------------------------------------------------------------
# Decoder: inverse stages and reconstruction


def _residual_canvas(blocks, choices, values, offsets, shape):
    """Predictor residuals E (int16, saturated) and predictor map P of a run of tiles."""
    ncomp = shape[3]
    resid = np.zeros(shape, np.int16)
    pred = np.zeros(shape[:3], np.uint8)
    for w, h, sel in _size_classes(blocks):
        ch = choices[sel]
        n = w * h
        seq = values[offsets[sel, None] + np.arange(ncomp * n)]
        vals = np.where(ch[:, 3, None, None] == 1, stages.deinterleave(seq, ncomp),
                        seq.reshape(len(sel), ncomp, n))
        if w == BLOCK and h == BLOCK:
            for r, m in _groups(ch[:, 2]):
                vals[m] = stages.undo_reorder(vals[m], r, w, h)
        for f, m in _groups(ch[:, 1]):
            vals[m] = stages.inverse_color_filter(vals[m], f)
        # |E| >= 511 always clamps to 0 or 255, so saturating to int16 changes nothing.
        vals = np.clip(vals, -32768, 32767).astype(np.int16)
        index = _block_index(blocks[sel], w, h, 0)
        resid[index] = np.moveaxis(vals.reshape(len(sel), ncomp, h, w), 1, -1)
        pred[index] = ch[:, 0, None, None]
    return resid, pred


def _reconstruct(resid, pred, tiles):
    """Samples of a run of tiles from residuals and predictors (§8.5).

    Sample (x, y) needs (x-1, y), (x-1, y-1), (x, y-1) and (x+1, y-1), all on earlier
    anti-diagonals x + 2y, so each anti-diagonal of every tile is computed at once.
    Returns the int32 canvas (T, th+1, tw+2, C) with a zero border.
    """
    ntile, th_max, tw_max, ncomp = resid.shape
    canvas = np.zeros((ntile, th_max + 1, tw_max + 2, ncomp), np.int32)
    ragged = bool((tiles[:, 2] != tw_max).any() or (tiles[:, 3] != th_max).any())
    tw = tiles[:, 2, None]
    th = tiles[:, 3, None]
    for step in range(tw_max + 2 * (th_max - 1)):
        ys = np.arange(max(0, (step - tw_max + 2) // 2), min(th_max - 1, step // 2) + 1)
        xs = step - 2 * ys
        a = canvas[:, ys + 1, xs]
        b = canvas[:, ys, xs + 1]
        c = canvas[:, ys, xs]
        d = canvas[:, ys, xs + 2]
        p = pred[:, ys, xs]
        present = np.unique(p)
        if len(present) == 1:
            value = stages.predict_neighbours(a, b, c, d, int(present[0]))
        else:
            value = np.choose(p[..., None], [stages.predict_neighbours(a, b, c, d, q)
                                             for q in range(stages.N_PREDICTORS)])
        value = np.clip(value + resid[:, ys, xs], 0, 255)
        if ragged:
            # Outside a smaller tile everything must stay 0 (its neighbours read 0 there).
            value *= ((xs < tw) & (ys < th))[..., None]
        canvas[:, ys + 1, xs + 1] = value
    return canvas


def decode_tlg8(data, max_pixels=MAX_PIXELS):
    """Decode a .tlg8 file: returns (samples uint8 (H, W, C), C, choices int64 (N, 5)).

    Raises Tlg8FormatError for any invalid file, and for files beyond `max_pixels`
    (W * H), MAX_TILE_PIXELS, MAX_TILE_SPAN or MAX_TILES.
    """
    data = memoryview(data).cast("B")
    hdr = read_header(data)
    width, height, ncomp = hdr["width"], hdr["height"], hdr["ncomp"]
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
    if ntiles * 5 > len(data) - hdr["offset"]:
        raise Tlg8FormatError(f"{ntiles} tiles cannot fit in the {len(data) - hdr['offset']} "
                              f"bytes after the header (truncated or bad sizes)")
    records = _records(data, hdr["offset"], ntiles)
    row_params = _row_params(hdr["golomb_table"])
    tiles = _tiles(width, height, tile_w, tile_h)
    out = np.empty((height, width, ncomp), np.uint8)
    all_choices = []
    for t0, t1 in _chunks(tiles):
        chunk = tiles[t0:t1]
        parts = [_decode_payload(data[start:start + length], tw, th, ncomp, row_params, t)
                 for t, ((start, length), (_, _, tw, th))
                 in enumerate(zip(records[t0:t1], chunk.tolist()), t0)]
        choices = np.concatenate([p[0] for p in parts])
        sizes = np.array([len(p[1]) for p in parts])
        values = np.concatenate([p[1] for p in parts])
        offsets = np.concatenate([p[2] + base for p, base in zip(parts, np.cumsum(sizes) - sizes)])
        shape = (len(chunk), int(chunk[:, 3].max()), int(chunk[:, 2].max()), ncomp)
        resid, pred = _residual_canvas(_chunk_blocks(chunk), choices, values, offsets, shape)
        canvas = _reconstruct(resid, pred, chunk)
        for t, (ox, oy, tw, th) in enumerate(chunk.tolist()):
            out[oy:oy + th, ox:ox + tw] = canvas[t, 1:th + 1, 1:tw + 1]
        all_choices.append(choices)
    return out, ncomp, np.concatenate(all_choices)

