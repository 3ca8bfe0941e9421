"""The .tlg8 decoder as compiled scalar loops (numba, through tlg8.jit).

Spec: ../shared/spec/tlg8_file_format.md. The NumPy decoder in tlgfile.py has to run many
sequential decodings side by side (lockstep lanes, anti-diagonal wavefronts) to be fast;
compiled, the plain loops of the spec are faster still and need no work arrays beyond one
tile: per tile, the side information (§5.2, §5.3), the Golomb rows in bit order (§7), then
one block row at a time the inverse stages (§8.3) and the raster-order reconstruction
(§8.5) straight into the output image.

tlgfile.decode_tlg8 uses this module when tlg8.jit.available(). `decode_tiles` checks
what the NumPy decoder checks, in the same order, and raises the same Tlg8FormatError
messages (the kernels fill an error record, the wrapper words it): per chunk of tiles the
side information of every tile first, then tile by tile the Golomb rows, so the first
broken tile is the one named. test_decode_kernels.py compares the two decoders.

Reads never leave the buffer: a bit past a payload's end reads 0 (§8.6, as the NumPy
decoder's zero padding), which is what makes the error of a code that runs off the end
the same in both decoders (a gamma prefix of zeros there is "past the end" if it starts at
or after the end, "more than 31 zeros" before it).
"""
import numpy as np

from . import jit, stages
from .tlgfile import (K_INDEX_LIMIT, MAX_GAMMA_ZEROS, STREAM_BITS, STREAM_COLUMNS,
                      STREAM_LIMITS, STREAM_NAMES, Tlg8FormatError, _k_lookup)

# Error records: err[0] is one of these, err[1] the tile (in the chunk), err[2] the
# stream or Golomb row, err[3] and err[4] the values the message names.
SIDE_MODE3, SIDE_PAST_END, SIDE_VARUINT, SIDE_RUN_PAST, SIDE_RANGE = 1, 2, 3, 4, 5
ROW_PAST_END, ROW_BAD_GAMMA, ROW_RUN_PAST = 6, 7, 8

ESCAPE_Q = stages.ESCAPE_Q
# Trailing zero bits of a byte (8 for 0): Rice quotients and gamma prefixes, a byte at a
# time (a 256-byte table stays in the L1 cache).
_TZ8 = np.array([8] + [(i & -i).bit_length() - 1 for i in range(1, 256)], np.int8)

_STREAM_BITS = np.array(STREAM_BITS, np.int64)
_STREAM_LIMITS = np.array(STREAM_LIMITS, np.int64)
_STREAM_COLUMNS = np.array(STREAM_COLUMNS, np.int64)
# Golomb row of a value (§5.4): [entropy, component] for i = 0; 6 + entropy for i = 1.
_COMPONENT_ROWS = np.array([stages.PLAIN_ROWS, stages.RUNLENGTH_ROWS], np.int64)
_RUNLENGTH_ROWS = np.array([r in stages.RUNLENGTH_ROWS or r == stages.INTERLEAVED_ROWS[1]
                            for r in range(8)], np.bool_)
_PERMUTATIONS = np.array(stages.PERMUTATIONS, np.int64)
_REORDER_TABLES = stages.REORDER_TABLES.astype(np.int64)


# --------------------------------------------------------------------------------------
# Bits (§4)


@jit.kernel(inline=True, allocates=False)
def _load(buf, start, length, i):
    """Payload bytes i .. i + 6 of buf[start:start + length] as one int64, LSB first;
    bytes past the payload read as 0."""
    w = np.int64(0)
    if i + 7 <= length:
        for b in range(7):
            w |= np.int64(buf[start + i + b]) << (8 * b)
    else:
        for b in range(7):
            if i + b < length:
                w |= np.int64(buf[start + i + b]) << (8 * b)
    return w


@jit.kernel(inline=True, allocates=False)
def _window(buf, start, length, pos):
    """At least 49 bits of the payload from bit pos."""
    return _load(buf, start, length, pos >> 3) >> (pos & 7)


@jit.kernel(inline=True, allocates=False)
def _peek(buf, start, length, pos, cache_pos, cache):
    """At least 32 bits from bit pos, through a cache of 56 bits loaded at the byte-aligned
    bit cache_pos <= pos: (bits, cache_pos, cache), reloaded when pos is too far on. The
    Golomb rows read every code through it, which keeps memory loads off the chain of
    dependent reads most of the time."""
    if pos - cache_pos > 24:
        cache_pos = pos & ~7
        cache = _load(buf, start, length, pos >> 3)
    return cache >> (pos - cache_pos), cache_pos, cache


@jit.kernel(inline=True, allocates=False)
def _trailing_zeros(w, nbytes, tz8):
    """Trailing zero bits of the low nbytes bytes of w (8 * nbytes if they are all 0)."""
    z = np.int64(0)
    for _ in range(nbytes):
        t = np.int64(tz8[w & 0xFF])
        z += t
        if t < 8:
            break
        w >>= 8
    return z


@jit.kernel(inline=True, allocates=False)
def _gamma(buf, start, length, gpos, end, tz8):
    """gamma(g) at bit gpos (§7.3): (g, bit length, error). More than 31 zeros is
    ROW_PAST_END when the code starts at or past the payload's end, else ROW_BAD_GAMMA;
    g = 1 and length 1 then (the NumPy decoder's placeholders, which a run length's check
    against the row's count still sees)."""
    low = _window(buf, start, length, gpos) & 0xFFFFFFFF
    if low == 0:
        return np.int64(1), np.int64(1), ROW_PAST_END if gpos >= end else ROW_BAD_GAMMA
    z = _trailing_zeros(low, 4, tz8)
    t = _window(buf, start, length, gpos + z + 1) & ((np.int64(1) << z) - 1)
    return (np.int64(1) << z) | t, 2 * z + 1, 0


# --------------------------------------------------------------------------------------
# Side information (§5.2, §5.3)


@jit.kernel(allocates=False)
def _side_information(buf, start, length, nb, choices, first, err, tile):
    """Choices of one tile's nb blocks into choices[first:first + nb] (JSONL columns);
    returns the bit where its Golomb rows start, or -1 after filling err.

    Like tlgfile._read_stream: bits past the end read 0, but a stream that reads on at or
    past the end stops there with an error (the file would fail later anyway)."""
    end = 8 * length
    modes = _window(buf, start, length, 0)
    pos = np.int64(10)
    for s in range(5):
        mode = (modes >> (2 * s)) & 3
        width = _STREAM_BITS[s]
        mask = (np.int64(1) << width) - 1
        col = _STREAM_COLUMNS[s]
        err[1], err[2] = tile, s
        if mode == 3:
            err[0] = SIDE_MODE3
            return -1
        vmax = np.int64(0)
        if mode == 0:
            if pos + nb * width > end:
                err[0] = SIDE_PAST_END
                return -1
            for b in range(nb):
                v = _window(buf, start, length, pos) & mask
                pos += width
                choices[first + b, col] = v
                vmax = max(vmax, v)
        elif mode == 1:
            v = _window(buf, start, length, pos) & mask
            pos += width
            choices[first, col] = v
            vmax = v
            for b in range(1, nb):
                if pos >= end:
                    err[0] = SIDE_PAST_END
                    return -1
                w = _window(buf, start, length, pos)
                if w & 1:
                    pos += 1
                else:
                    v = (w >> 1) & mask
                    pos += 1 + width
                    vmax = max(vmax, v)
                choices[first + b, col] = v
        else:
            filled = 0
            while filled < nb:
                if pos >= end:
                    err[0] = SIDE_PAST_END
                    return -1
                v = _window(buf, start, length, pos) & mask
                pos += width
                vmax = max(vmax, v)
                x = np.int64(0)
                for g in range(6):
                    if g == 5:
                        err[0] = SIDE_VARUINT
                        return -1
                    byte = _window(buf, start, length, pos) & 0xFF
                    pos += 8
                    x |= (byte & 127) << (7 * g)
                    if not byte & 128:
                        break
                if filled + x + 1 > nb:
                    err[0], err[3], err[4] = SIDE_RUN_PAST, x + 1, nb
                    return -1
                for b in range(filled, filled + x + 1):
                    choices[first + b, col] = v
                filled += x + 1
        if vmax >= _STREAM_LIMITS[s]:
            err[0], err[3], err[4] = SIDE_RANGE, vmax, _STREAM_LIMITS[s] - 1
            return -1
    err[1] = err[2] = 0
    return (pos + 7) & ~7


# --------------------------------------------------------------------------------------
# Golomb rows (§7)


@jit.kernel(inline=True, allocates=False)
def _golomb_value(buf, start, length, end, pos, k, tz8, cache_pos, cache):
    """One Golomb-Rice code with escape (§7.3): (m, new pos, error: 0, ROW_PAST_END or
    ROW_BAD_GAMMA, cache_pos, cache) (the cache of _peek)."""
    w, cache_pos, cache = _peek(buf, start, length, pos, cache_pos, cache)
    q = np.int64(tz8[w & 0xFF])         # the quotient, 16 for an escape (_trailing_zeros
    if q == 8:                          # unrolled: a loop costs 2 ns of a 9 ns code)
        q += tz8[(w >> 8) & 0xFF]
    if q < ESCAPE_Q:
        m = (q << k) | ((w >> (q + 1)) & ((np.int64(1) << k) - 1))
        pos += q + 1 + k
        return m, pos, ROW_PAST_END if pos > end else 0, cache_pos, cache
    g, bits, error = _gamma(buf, start, length, pos + ESCAPE_Q, end, tz8)
    pos += ESCAPE_Q + bits
    if not error and pos > end:
        error = ROW_PAST_END
    return g + 15, pos, error, cache_pos, cache


@jit.kernel(inline=True, allocates=False)
def _row_value(buf, start, length, end, pos, ktab, krow, a, up, down, tz8, cache_pos, cache):
    """One mapped magnitude of a Golomb row at the row's state a, and the state after it
    (§7.2-§7.3): (m, a, pos, error, cache_pos, cache); a is unchanged on an error."""
    k = np.int64(ktab[krow + min((a + 8) >> 4, K_INDEX_LIMIT)])
    m, pos, error, cache_pos, cache = _golomb_value(
        buf, start, length, end, pos, k, tz8, cache_pos, cache)
    if not error:
        a += ((up if a < m else down) * ((m << 4) - a) + 8) >> 4
    return m, a, pos, error, cache_pos, cache


@jit.kernel(allocates=False)
def _golomb_rows(buf, start, length, pos, counts, ktab, ratios, values, tz8, err, tile):
    """The values of one tile's Golomb rows (§7.4, §7.5), row after row from bit pos, into
    values (row R's after those of the rows before it). Returns False after filling err;
    the checks and their order are those of tlgfile._start_row and _take_path."""
    end = 8 * length
    base = 0
    for row in range(8):
        n = counts[row]
        if n == 0:
            continue
        err[1], err[2] = tile, row
        if pos >= end:
            err[0] = ROW_PAST_END
            return False
        krow = (K_INDEX_LIMIT + 1) * row
        up, down = ratios[row, 0], ratios[row, 1]
        a = np.int64(0)
        cache_pos, cache = np.int64(-64), np.int64(0)
        if not _RUNLENGTH_ROWS[row]:
            for i in range(base, base + n):
                m, a, pos, error, cache_pos, cache = _row_value(
                    buf, start, length, end, pos, ktab, krow, a, up, down, tz8, cache_pos,
                    cache)
                if error:
                    err[0] = error
                    return False
                values[i] = -((m + 1) >> 1) if m & 1 else m >> 1
        else:
            nonzero = _window(buf, start, length, pos) & 1     # the row's flag
            pos += 1
            filled = 0
            while filled < n:
                # A run length: `0` -> 1, `1 0` -> 2, `1 1` + gamma -> gamma + 2.
                w, cache_pos, cache = _peek(buf, start, length, pos, cache_pos, cache)
                error = 0
                if w & 3 == 3:
                    g, bits, error = _gamma(buf, start, length, pos + 2, end, tz8)
                    run = g + 2
                    pos += 2 + bits
                else:
                    run = 1 + (w & 1)
                    pos += run
                if not error and pos > end:
                    error = ROW_PAST_END
                # A run past the row's count is reported before a bad code (_take_path).
                if filled + run > n:
                    err[0], err[3], err[4] = ROW_RUN_PAST, run, n
                    return False
                if error:
                    err[0] = error
                    return False
                if nonzero:
                    for i in range(base + filled, base + filled + run):
                        m, a, pos, error, cache_pos, cache = _row_value(
                            buf, start, length, end, pos, ktab, krow, a, up, down, tz8,
                            cache_pos, cache)
                        if error:
                            err[0] = error
                            return False
                        values[i] = (m + 1) >> 1 if m & 1 else -(m >> 1) - 1
                else:
                    values[base + filled:base + filled + run] = 0
                filled += run
                nonzero ^= 1
        base += n
    err[1] = err[2] = 0
    return True


@jit.kernel(allocates=False)
def _row_counts(choices, first, tw, th, ncomp, counts):
    """Values of each Golomb row of a tile, from its choices (§5.4)."""
    counts[:] = 0
    nbx = (tw + 7) >> 3
    nb = nbx * ((th + 7) >> 3)
    for i in range(nb):
        n = min(8, tw - (i % nbx) * 8) * min(8, th - (i // nbx) * 8)
        e = choices[first + i, 4]
        if choices[first + i, 3]:
            counts[6 + e] += ncomp * n
        else:
            for c in range(ncomp):
                counts[_COMPONENT_ROWS[e, c]] += n


# --------------------------------------------------------------------------------------
# Inverse stages (§8.3) and reconstruction (§8.5)


@jit.kernel(inline=True, allocates=False)
def _tdiv2(x):
    """x / 2 truncated toward zero."""
    return (x + (x < 0)) >> 1


@jit.kernel(allocates=False)
def _block_row_residuals(values, cursor, choices, first, nbx, tw, h, ncomp, strip, block):
    """Predictor residuals E of one row of blocks into strip (component, y, x): each
    block takes its next values from its rows (cursor: the next value of each row in
    values), de-interleaved, un-reordered and inverse-filtered."""
    for i in range(nbx):
        b = first + i
        bx = 8 * i
        w = min(8, tw - bx)
        n = w * h
        f, r, interleaved, e = choices[b, 1], choices[b, 2], choices[b, 3], choices[b, 4]
        if interleaved:
            at = cursor[6 + e]
            cursor[6 + e] += ncomp * n
            for j in range(n):
                for c in range(ncomp):
                    block[c, j] = values[at + j * ncomp + c]
        else:
            for c in range(ncomp):
                row = _COMPONENT_ROWS[e, c]
                at = cursor[row]
                cursor[row] += n
                for j in range(n):
                    block[c, j] = values[at + j]
        full = w == 8 and h == 8            # edge blocks are never reordered (§6.3)
        p0, p1, p2 = _PERMUTATIONS[f >> 4, 0], _PERMUTATIONS[f >> 4, 1], \
            _PERMUTATIONS[f >> 4, 2]
        primary, secondary = (f >> 2) & 3, f & 3
        for j in range(n):
            if full:                        # raster position of scan position j
                k = _REORDER_TABLES[r, j]
                y, x = k >> 3, bx + (k & 7)
            else:
                y, x = j // w, bx + j % w
            r0 = block[0, j]
            if primary == 0:
                r1 = block[1, j]
            elif primary == 1:
                r1 = block[1, j] + r0
            elif primary == 2:
                r1 = block[1, j] + _tdiv2(r0)
            else:
                r1 = block[1, j] + _tdiv2(3 * r0)
            if secondary == 0:
                r2 = block[2, j]
            elif secondary == 1:
                r2 = block[2, j] + r0
            elif secondary == 2:
                r2 = block[2, j] + r1
            else:
                r2 = block[2, j] + _tdiv2(r0 + r1)
            strip[p0, y, x] = r0
            strip[p1, y, x] = r1
            strip[p2, y, x] = r2
            if ncomp == 4:
                strip[3, y, x] = block[3, j]


@jit.kernel(allocates=False)
def _tile_pixels(values, counts, choices, first, tw, th, ncomp, out, ox, oy, strip, above,
                 block, cursor):
    """Reconstruct one tile into out[oy:oy + th, ox:ox + tw] (§8.5), block row by block
    row. above (C, tw + 2): the row above of each component, between a zero column on
    each side so that neighbours outside the tile read 0 (§2.4); it becomes the current
    row sample by sample, the above-left neighbour and the left one kept aside."""
    at = 0
    for row in range(8):
        cursor[row] = at
        at += counts[row]
    nbx = (tw + 7) >> 3
    above[:, :tw + 2] = 0
    for by in range(0, th, 8):
        h = min(8, th - by)
        row_first = first + (by >> 3) * nbx
        _block_row_residuals(values, cursor, choices, row_first, nbx, tw, h, ncomp, strip,
                             block)
        for y in range(h):
            image_row = out[oy + by + y]
            for c in range(ncomp):
                line, resid = above[c], strip[c, y]
                a = cc = np.int64(0)            # left, above-left
                for i in range(nbx):
                    p = choices[row_first + i, 0]
                    for x in range(8 * i, min(8 * i + 8, tw)):
                        b, d = line[x + 1], line[x + 2]
                        if p == 0:              # MED
                            pred = min(max(a + b - cc, min(a, b)), max(a, b))
                        elif p == 1:
                            pred = (a + cc + 1) >> 1
                        elif p == 2:
                            pred = (b + cc + 1) >> 1
                        elif p == 3:
                            pred = (b + d + 1) >> 1
                        elif p == 4:
                            pred = a
                        elif p == 5:
                            pred = b
                        elif p == 6:
                            pred = cc
                        else:
                            pred = d
                        # A wrong residual clamps (§11); |E| may be ~2^31 in a bad file.
                        v = min(max(pred + resid[x], 0), 255)
                        line[x + 1] = v
                        image_row[ox + x, c] = v
                        a, cc = v, b


# Exported (compiled ahead of time, tlg8.jit.export): a decode command then loads the
# library in milliseconds instead of starting numba (about 0.5 s and 110 MB).
@jit.export("void(uint8[::1], int64[::1], int64[::1], int64[:, ::1], int64[::1], int64, "
            "int8[::1], int64[:, ::1], int8[::1], int64[:, ::1], uint8[:, :, ::1], "
            "int64[::1], int64[::1], int64[::1], int64[:, :, ::1], int64[:, ::1], "
            "int64[:, ::1], int64[::1], int64[::1])")
def _decode_tiles(buf, starts, lengths, tiles, firsts, ncomp, ktab, ratios, tz8, choices,
                  out, err, rows_start, values, strip, above, block, counts, cursor):
    """Decode a run of tiles: first the side information of all of them (as the NumPy
    decoder, so that the first error found is the same), then tile by tile the Golomb
    rows and the pixels. Stops at the first error, with err filled. The arrays after err
    are work space (decode_tiles)."""
    for t in range(len(starts)):
        tw, th = tiles[t, 2], tiles[t, 3]
        nb = ((tw + 7) >> 3) * ((th + 7) >> 3)
        rows_start[t] = _side_information(buf, starts[t], lengths[t], nb, choices, firsts[t],
                                          err, t)
        if rows_start[t] < 0:
            return
    for t in range(len(starts)):
        ox, oy, tw, th = tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3]
        _row_counts(choices, firsts[t], tw, th, ncomp, counts)
        if not _golomb_rows(buf, starts[t], lengths[t], rows_start[t], counts, ktab, ratios,
                            values, tz8, err, t):
            return
        _tile_pixels(values, counts, choices, firsts[t], tw, th, ncomp, out, ox, oy, strip,
                     above, block, cursor)


# --------------------------------------------------------------------------------------
# The caller's side


def _message(err, first_tile):
    """The Tlg8FormatError message of an error record, worded as the NumPy decoder's."""
    code, tile, which, x, y = (int(v) for v in err)
    tile += first_tile
    if code <= SIDE_RANGE:
        name = f"tile {tile}: {STREAM_NAMES[which]}"
        return {SIDE_MODE3: f"{name} stream has mode 3",
                SIDE_PAST_END: f"{name} stream runs past the end of the payload",
                SIDE_VARUINT: f"{name} stream: varuint longer than 5 groups",
                SIDE_RUN_PAST: f"{name} stream: run of {x} goes past {y} blocks",
                SIDE_RANGE: f"{name} value {x} out of range (0..{y})"}[code]
    where = f"tile {tile}: Golomb row {which}"
    return {ROW_PAST_END: f"{where} runs past the end of the payload",
            ROW_BAD_GAMMA: f"{where}: gamma code with more than {MAX_GAMMA_ZEROS} zeros",
            ROW_RUN_PAST: f"{where}: run of {x} goes past the row's {y} values"}[code]


def decode_tiles(buf, records, tiles, first_tile, ncomp, table, choices, first_block, out):
    """Decode the tiles `tiles` (int64 (T, 4) ox, oy, tw, th; the first is tile number
    first_tile) whose payloads are buf[start:start + length] for (start, length) in
    records: their choices into choices[first_block:] (JSONL columns), their pixels into
    out (H, W, C). buf: the file as a uint8 array. Raises Tlg8FormatError."""
    starts = np.array([r[0] for r in records], np.int64)
    lengths = np.array([r[1] for r in records], np.int64)
    nbs = ((tiles[:, 2] + 7) >> 3) * ((tiles[:, 3] + 7) >> 3)
    firsts = first_block + np.cumsum(nbs) - nbs
    ratios = np.array([[up, down] for up, down, _ in table], np.int64)
    err = np.zeros(5, np.int64)
    ktab = _k_lookup(table).astype(np.int8)     # 8 kB: stays in the L1 cache
    # Work space: the kernels allocate nothing (jit.kernel's allocates=False).
    max_w = int(tiles[:, 2].max())
    work = (np.empty(len(tiles), np.int64),                                   # rows_start
            np.empty(ncomp * int((tiles[:, 2] * tiles[:, 3]).max()), np.int64),  # values
            np.empty((ncomp, 8, max_w), np.int64),                            # strip
            np.empty((ncomp, max_w + 2), np.int64),                           # above
            np.empty((ncomp, 64), np.int64),                                  # block
            np.empty(8, np.int64), np.empty(8, np.int64))                     # counts, cursor
    _decode_tiles(buf, starts, lengths, np.ascontiguousarray(tiles, np.int64), firsts,
                  ncomp, ktab, ratios, _TZ8, choices, out, err, *work)
    if err[0]:
        raise Tlg8FormatError(_message(err, first_tile))
