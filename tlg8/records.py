"""Reading the reference encoder's training dumps into compact arrays.

A dump is JSONL (spec ../shared/spec/tlg8_block_cost.md §8), plain or gzip-compressed, one
block per line. `load_dumps` turns files and directories of them into one dataset: a dict
of NumPy arrays with one row per valid record (layout in `DATASET_KEYS`), about 290 bytes
per block. Bad records are skipped and reported as problems `(path, line, kind, detail)`.

Speed. `json.loads` costs ~30 us per record, so the parser checks each line against the
byte template the reference writes (keys in order, no whitespace) with array operations over
whole chunks of the file; a line that differs from the template in any byte goes to the
`json.loads` path, which is the definition of what is valid and which writes the messages.
Both paths accept exactly the same records (the tests compare them on mutated lines).
Decompression runs in a background thread, overlapping the parsing. Parsed files are cached
as .npz keyed by (absolute path, size, mtime, limits) so a second run does not parse again.

Hostile input (docs/robustness.md). Memory stays bounded whatever the file holds: text is
decompressed and parsed in pieces, a line longer than `max_record` is dropped while it is read
(a RECORD_TOO_LONG problem), names are at most MAX_NAME bytes, and after `max_problems`
problems the rest of a file is not read (TOO_MANY_PROBLEMS). A damaged cache entry is
reported once and rebuilt.
"""
import hashlib
import json
import os
import queue
import threading
import zipfile
import zlib

import numpy as np

from . import Tlg8Error, cli
from .fileio import write_file
from .image import BLOCK
from .stages import (MAX_COMPONENTS, N_ENTROPIES, N_FILTERS, N_INTERLEAVES, N_PREDICTORS,
                     N_REORDERS)

CANDIDATE_KEYS = ("predictor", "filter", "reorder", "interleave", "entropy")
CANDIDATE_LIMITS = (N_PREDICTORS, N_FILTERS, N_REORDERS, N_INTERLEAVES, N_ENTROPIES)
MAX_BITS = 2 ** 32 - 1       # bits are stored as uint32
MAX_COORD = 2 ** 31 - 1      # image sizes and origins are stored as int32
# Longest line (bytes, without the newline) read as a record; a real one is ~1-2 KB. Longer
# lines are dropped as they are read, so a file without newlines costs no more memory.
MAX_RECORD = 1 << 20
# Longest `image` tag (bytes, a path). The names array has a fixed width of 4 bytes per
# character of the longest name, for every distinct name, so one huge name must not pass.
MAX_NAME = 4096
# Problems listed per file; a file with more is not read further (damaged beyond use, and
# each bad line costs a json.loads and a message).
MAX_PROBLEMS = 1000

# Dataset layout (N = number of records; all arrays have N rows except `names`):
#   pixels (N, 8, 8, 4) uint8  block samples in (y, x, c) order, zero outside w x h x C
#   size   (N, 3) uint8        w, h, C
#   best   (N, 5) int8         predictor, filter, reorder, interleave, entropy
#   second (N, 5) int8         the same; all -1 when the record's `second` is null
#   bits   (N, 2) uint32       best.bits, second.bits (0 when second is null)
#   origin (N, 2) int32        block_origin x, y
#   image  (N,) int32          index into `names`, the records' `image` strings
DATASET_KEYS = ("pixels", "size", "best", "second", "bits", "origin", "image")

# Kinds of problems (the summary counts problems by kind).
INVALID_JSON = "invalid JSON"
MISSING_KEY = "missing key"
WRONG_TYPE = "wrong type"
NON_INTEGER = "non-integer value"
PIXEL_COUNT = "wrong pixel count"
OUT_OF_RANGE = "value out of range"
LABEL_RANGE = "label out of range"
TRUNCATED_LINE = "truncated last line"
EMPTY_FILE = "empty file"
NO_DATA_FILES = "directory without dumps"
BAD_COMPRESSION = "corrupt compressed data"
UNREADABLE = "unreadable file"
RECORD_TOO_LONG = "line too long"
TOO_MANY_PROBLEMS = "too many problems"
CACHE_WARNING = "cache"      # the cache could not be written: reported, never fatal

CACHE_VERSION = 2
DATA_SUFFIXES = (".jsonl", ".jsonl.gz")
# Parse unit. The temporaries of a chunk (about 4x its size) then stay in the CPU caches:
# 2 MiB chunks parse about 30 % faster than 8 MiB ones, and smaller ones pay overhead.
_CHUNK = 2 << 20
# Lines parsed together. Parsing allocates ~300 bytes of row arrays per line, so a chunk of
# 2 MiB of short (e.g. blank) lines is split: 16384 lines -> 5 MB (real records: ~1900 lines).
_CHUNK_LINES = 1 << 14


class DataError(Tlg8Error):
    """Input data cannot be used: missing path, no records at all, or a bad record with
    strict checking. The message names the file (and line) and the reason."""


class BadRecord(Exception):
    """A record fails validation; args = (kind, detail), kind one of the constants above."""


def _empty_arrays(n):
    return {
        "pixels": np.zeros((n, BLOCK, BLOCK, MAX_COMPONENTS), np.uint8),
        "size": np.zeros((n, 3), np.uint8),
        "best": np.zeros((n, 5), np.int8),
        "second": np.full((n, 5), -1, np.int8),
        "bits": np.zeros((n, 2), np.uint32),
        "origin": np.zeros((n, 2), np.int32),
        "image": np.zeros(n, np.int32),
    }


def dataset_size(data):
    return len(data["image"])


def dataset_nbytes(data):
    """Resident bytes of the per-record arrays (the names list is per image, not per block)."""
    return sum(data[k].nbytes for k in DATASET_KEYS)


def _join(parts, names):
    """One dataset from row arrays whose image ids already index `names` (a list)."""
    out = {k: np.concatenate([p[k] for p in parts]) if parts else _empty_arrays(0)[k]
           for k in DATASET_KEYS}
    out["names"] = np.array(names, dtype=str) if names else np.zeros(0, "U1")
    return out


def subset(data, index):
    """The records `index` (indices or a bool mask) of a dataset; names are kept whole, so
    image ids stay valid."""
    return dict({k: data[k][index] for k in DATASET_KEYS}, names=data["names"])


def concat_datasets(parts):
    """One dataset from several; image indices are remapped onto the union of the names."""
    names = {}
    remapped = []
    for part in parts:
        ids = np.array([names.setdefault(n, len(names)) for n in part["names"].tolist()], np.int32)
        remapped.append(dict(part, image=ids[part["image"]] if len(ids) else part["image"]))
    return _join(remapped, list(names))


# ---------------------------------------------------------------------------------------
# Slow path: json.loads and explicit checks. This is the definition of a valid record.

def _show(value):
    try:
        text = json.dumps(value)
    except RecursionError:       # json.loads took it, but we are a few frames deeper here
        text = f"a {type(value).__name__} nested too deeply to show"
    return text if len(text) <= 40 else text[:37] + "..."


def _get(obj, key, where):
    if key not in obj:
        raise BadRecord(MISSING_KEY, f"missing key '{where}{key}'")
    return obj[key]


def _int(value, where, lo, hi, kind=OUT_OF_RANGE):
    # bool is a subclass of int in Python; JSON true/false are not integers here.
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRecord(NON_INTEGER, f"'{where}' is {_show(value)}, not an integer")
    if not lo <= value <= hi:
        raise BadRecord(kind, f"'{where}' = {value} is outside {lo}..{hi}")
    return value


def _pair(obj, key, lo, hi):
    value = _get(obj, key, "")
    if not isinstance(value, list) or len(value) != 2:
        raise BadRecord(WRONG_TYPE, f"'{key}' is {_show(value)}, not a list of two integers")
    return [_int(v, f"{key}[{i}]", lo, hi) for i, v in enumerate(value)]


def _candidate(obj, key):
    value = _get(obj, key, "")
    if value is None and key == "second":
        return None
    if not isinstance(value, dict):
        raise BadRecord(WRONG_TYPE, f"'{key}' is {_show(value)}, not an object")
    labels = [_int(_get(value, k, key + "."), f"{key}.{k}", 0, n - 1, LABEL_RANGE)
              for k, n in zip(CANDIDATE_KEYS, CANDIDATE_LIMITS)]
    bits = _int(_get(value, "bits", key + "."), f"{key}.bits", 0, MAX_BITS)
    return labels, bits


def decode_record(line):
    """Validate one JSONL line (bytes or str). Returns a dict of plain values:
    image, size (w, h, C), origin, pixels (list, y/x/c order), best, second (or None),
    best_bits, second_bits. Raises BadRecord(kind, detail) when the record is not valid."""
    if isinstance(line, bytes):
        # surrogateescape: bytes >= 0x80 in the image tag need not be UTF-8 (spec §8).
        line = line.decode("utf-8", "surrogateescape")
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise BadRecord(INVALID_JSON, str(e)) from None
    except RecursionError:
        raise BadRecord(INVALID_JSON, "arrays or objects nested too deeply") from None
    return check_record(obj)


def check_record(obj):
    """Validate a decoded JSON record (see decode_record)."""
    if not isinstance(obj, dict):
        raise BadRecord(WRONG_TYPE, f"the line is {_show(obj)}, not a JSON object")
    name = _get(obj, "image", "")
    if not isinstance(name, str):
        raise BadRecord(WRONG_TYPE, f"'image' is {_show(name)}, not a string")
    # Bytes as in the file for a name without escapes (the fast path counts those).
    nbytes = len(name.encode("utf-8", "surrogateescape"))
    if nbytes > MAX_NAME:
        raise BadRecord(OUT_OF_RANGE, f"'image' has {nbytes} bytes, more than {MAX_NAME}")
    width, height = _pair(obj, "image_size", 1, MAX_COORD)
    _pair(obj, "tile_origin", 0, MAX_COORD)
    bx, by = _pair(obj, "block_origin", 0, MAX_COORD)
    w, h = _pair(obj, "block_size", 1, BLOCK)
    ncomp = _int(_get(obj, "components", ""), "components", 3, MAX_COMPONENTS)
    if bx + w > width or by + h > height:
        raise BadRecord(OUT_OF_RANGE, f"block {w}x{h} at ({bx},{by}) lies outside the "
                                 f"{width}x{height} image")
    pixels = _get(obj, "pixels", "")
    if not isinstance(pixels, list):
        raise BadRecord(WRONG_TYPE, f"'pixels' is {_show(pixels)}, not a list")
    if len(pixels) != w * h * ncomp:
        raise BadRecord(PIXEL_COUNT, f"'pixels' has {len(pixels)} values; a {w}x{h} block with "
                                f"{ncomp} components has {w * h * ncomp}")
    for i, v in enumerate(pixels):
        _int(v, f"pixels[{i}]", 0, 255)
    best, best_bits = _candidate(obj, "best")
    second = _candidate(obj, "second")
    # Surrogates (undecodable bytes) become \xNN text so names print and compare safely.
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return {"image": name, "size": (w, h, ncomp), "origin": (bx, by), "pixels": pixels,
            "best": best, "best_bits": best_bits,
            "second": None if second is None else second[0],
            "second_bits": 0 if second is None else second[1]}


def _store(arrays, row, rec):
    w, h, ncomp = rec["size"]
    arrays["pixels"][row, :h, :w, :ncomp] = np.array(rec["pixels"], np.uint8).reshape(h, w, ncomp)
    arrays["size"][row] = rec["size"]
    arrays["best"][row] = rec["best"]
    if rec["second"] is not None:
        arrays["second"][row] = rec["second"]
    arrays["bits"][row] = (rec["best_bits"], rec["second_bits"])
    arrays["origin"][row] = rec["origin"]


# ---------------------------------------------------------------------------------------
# Fast path: the reference's exact byte layout, checked with array operations.
#
# A canonical line is  {"image":"NAME","image_size":[W,H],...,"second":{...}}\n .  After the
# name's closing quote every comma starts a "slot": literal prefix, one unsigned decimal,
# literal suffix (e.g. `"image_size":[` W, or H `]`). Slot j of a line lies between its
# comma j and comma j+1 (the last slot ends at the newline). A line is accepted only if
# every slot matches exactly, so the numbers and their positions are unambiguous.

_HEADER = ((b'"image_size":[', b""), (b"", b"]"), (b'"tile_origin":[', b""), (b"", b"]"),
           (b'"block_origin":[', b""), (b"", b"]"), (b'"block_size":[', b""), (b"", b"]"),
           (b'"components":', b""))
_PIXELS_PREFIX = b'"pixels":['
_BEST = ((b'"best":{"predictor":', b""), (b'"filter":', b""), (b'"reorder":', b""),
         (b'"interleave":', b""), (b'"entropy":', b""), (b'"bits":', b"}"))
_SECOND = ((b'"second":{"predictor":', b""), (b'"filter":', b""), (b'"reorder":', b""),
           (b'"interleave":', b""), (b'"entropy":', b""), (b'"bits":', b"}}"))
_SECOND_NULL = b'"second":null}'
_NAME_PREFIX = b'{"image":"'
_MAXLEN = 8                  # digits of a number on the fast path (one 8-byte word)
_LIMIT_MAX = np.array([MAX_COORD, MAX_COORD, MAX_COORD, MAX_COORD, MAX_COORD, MAX_COORD,
                       BLOCK, BLOCK, MAX_COMPONENTS])
_LIMIT_MIN = np.array([1, 1, 0, 0, 0, 0, 1, 1, 3])


def _word(literal):
    return int.from_bytes(literal.ljust(8, b"\0"), "little")


def _slot_table(slots):
    """Precompute the checks of a group of slots (each prefix + decimal + suffix).

    A literal is covered by 8-byte words, the last one overlapping the previous one, or
    one masked word when it is shorter than 8 bytes. Returns prefix/suffix lengths and a
    list of checks (slot, is_suffix, offset, expected word, mask).
    """
    checks = []
    for j, (prefix, suffix) in enumerate(slots):
        for is_suffix, literal in ((False, prefix), (True, suffix)):
            n = len(literal)
            if n >= 8:
                for off in sorted(set(range(0, n - 7, 8)) | {n - 8}):
                    checks.append((j, is_suffix, off, np.uint64(_word(literal[off:off + 8])),
                                   np.uint64(2 ** 64 - 1)))
            elif n:
                checks.append((j, is_suffix, 0, np.uint64(_word(literal)),
                               np.uint64(2 ** (8 * n) - 1)))
    return {"prefix_len": np.array([len(p) for p, _ in slots], np.int64)[:, None],
            "suffix_len": np.array([len(s) for _, s in slots], np.int64)[:, None],
            "checks": checks}


def _slots(words, starts, ends, table, maxlen=_MAXLEN):
    """Check slots text[starts:ends] against prefix + decimal + suffix.

    starts, ends: (slots, lines) arrays; slot-major so that every operation below is a
    long elementwise one (reductions over short axes are slow in NumPy). Returns
    (ok, value), both (slots, lines); value is int32. words[p + 8] is the little-endian
    8-byte word of text bytes p..p+7 (see _fast_parse).
    """
    n0 = starts + table["prefix_len"]
    suffix_at = ends - table["suffix_len"]
    length = suffix_at - n0
    ok = (length >= 1) & (length <= maxlen)
    for j, is_suffix, off, word, mask in table["checks"]:
        base = suffix_at[j] if is_suffix else starts[j]
        ok[j] &= (words[base + (off + 8)] & mask) == word
    # One word holds up to 8 digits; look only at as many columns as the longest needs.
    digits = words[n0 + 8].view(np.uint8).reshape(n0.shape + (8,))
    value = np.zeros(n0.shape, np.int32)                 # up to 8 digits fit
    ok &= (length == 1) | (digits[..., 0] != 48)          # JSON has no leading zeros
    for col in range(int(np.clip(length, 1, maxlen).max(initial=1))):
        d = digits[..., col] - np.uint8(48)
        inside = col < length
        ok &= (d < 10) | ~inside
        value = np.where(inside, value * 10 + d, value)
    return ok, value


def _has_literal(words, pos, table):
    """Where the text at positions `pos` starts with the prefix of a one-slot table."""
    ok = np.ones(len(pos), bool)
    for _, _, off, word, mask in table["checks"]:
        ok &= (words[pos + (off + 8)] & mask) == word
    return ok


_HEADER_T = _slot_table(_HEADER)
# The label slots without and with the bits: the bits are the only long numbers, so
# parsing them apart keeps the digit loop of the other ten slots short.
_LABEL_ROWS = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
_BITS_ROWS = [5, 11]
_LABEL_T = _slot_table([(_BEST + _SECOND)[j] for j in _LABEL_ROWS])
_BITS_T = _slot_table([(_BEST + _SECOND)[j] for j in _BITS_ROWS])
_PIXEL_T = _slot_table(((_PIXELS_PREFIX, b""), (b"", b"]")))   # first and last pixel
_NAME_T = _slot_table(((_NAME_PREFIX, b""),))
_NULL_T = _slot_table(((_SECOND_NULL, b""),))


def _comma_values(pad, delims):
    """For every delimiter: is the text since the previous one a bare 1-3 digit decimal
    (a middle pixel), and its value. Returns (ok bool, value uint8) per delimiter."""
    # pad[p + 8] is text byte p, so pad[8 - j:] indexed by the delimiter positions reads the
    # byte j before each delimiter without building index arrays (~4M delimiters / 16 MB).
    x1 = np.take(pad[7:], delims)
    x1 -= 48
    x2 = np.take(pad[6:], delims)
    x2 -= 48
    x3 = np.take(pad[5:], delims)
    x3 -= 48
    x4 = np.take(pad[4:], delims)
    comma = np.uint8(256 + 44 - 48)           # a comma after subtracting "0"
    two = x2 < 10                             # at least two digits
    three = x3 < 10
    three &= two                              # three digits
    # The byte before the number is a comma, and a 2-3 digit number has no leading zero;
    # at most one of the three cases holds.
    ok = x2 == comma
    ok |= two & (x3 == comma) & (x2 != 0)
    ok |= three & (x4 == 44) & (x3 != 0)
    ok &= x1 < 10
    x2 *= two                                 # zero unless it is a digit of this number
    x3 *= three
    value = np.multiply(x3, 100, dtype=np.uint16)
    value += np.multiply(x2, 10, dtype=np.uint16)
    value += x1
    ok &= value <= 255
    return ok, value.astype(np.uint8)


def _fast_parse(data, names, extra_rows, max_record=MAX_RECORD):
    """Parse the canonical lines of `data` (complete lines, each ending in a newline) of at
    most `max_record` bytes.

    Returns (arrays, ids, done): arrays and ids have a row per line plus `extra_rows`,
    filled for the accepted lines; `names` (name -> id) is extended. done marks the accepted
    lines and the blank ones (id -1: not records); the others need the slow path.
    """
    size = len(data)
    # pad[p + 8] = text byte p. The zero margin after the text lets literal and digit
    # checks read up to 40 bytes past a position without bounds checks (they then fail).
    pad = np.zeros(size + 8 + 48, np.uint8)
    pad[8:8 + size] = np.frombuffer(data, np.uint8)
    text = pad[8:8 + size]
    words = np.ndarray((size + 48 + 1,), "<u8", pad, 0, (1,))
    # Commas and newlines delimit the slots; a line's newline closes its last slot.
    delims = np.flatnonzero((text == 44) | (text == 10))
    newline = np.flatnonzero(text[delims] == 10)         # delimiter index of each newline
    n = len(newline)
    arrays = _empty_arrays(n + extra_rows)
    ids = np.full(n + extra_rows, -1, np.int32)
    ends = delims[newline]
    starts = np.zeros(n, np.int64)
    starts[1:] = ends[:-1] + 1
    first = np.zeros(n, np.int64)                        # first delimiter of each line
    first[1:] = newline[:-1] + 1
    count = newline - first                              # commas in the line = its slots
    # The first comma must follow the name's closing quote. A name with a quote, backslash
    # or control byte goes to the slow path, so this finds the name's end exactly.
    quote = delims[first] - 1
    ok = (count >= len(_HEADER) + 3 + len(_BEST) + 1) & (quote >= starts + len(_NAME_PREFIX))
    ok &= (ends - starts <= max_record) & (quote - starts - len(_NAME_PREFIX) <= MAX_NAME)
    ok &= (text[np.maximum(quote, 0)] == 34) & _has_literal(words, starts, _NAME_T)
    lines = np.flatnonzero(ok)
    raw = [data[a:b] for a, b in zip((starts[lines] + len(_NAME_PREFIX)).tolist(),
                                     quote[lines].tolist())]
    local = {}
    local_ids = np.array([local.setdefault(r, len(local)) for r in raw], np.int64)
    plain = np.array([not (b'"' in r or b"\\" in r or min(r, default=32) < 32) for r in local],
                     bool)
    good = plain[local_ids] if len(lines) else np.zeros(0, bool)

    f = first[lines]
    bounds = delims[f + np.arange(len(_HEADER) + 1)[:, None]]
    g, header = _slots(words, bounds[:-1] + 1, bounds[1:], _HEADER_T)
    header = header.astype(np.int64)                     # sums below may exceed int32
    good &= g.all(axis=0)
    good &= ((header >= _LIMIT_MIN[:, None]) & (header <= _LIMIT_MAX[:, None])).all(axis=0)
    w, h, ncomp = header[6], header[7], header[8]
    good &= (header[4] + w <= header[0]) & (header[5] + h <= header[1])
    npix = np.where(good, w * h * ncomp, 3)
    nslots = count[lines]
    has_second = nslots == len(_HEADER) + npix + len(_BEST) + len(_SECOND)
    good &= has_second | (nslots == len(_HEADER) + npix + len(_BEST) + 1)

    # Labels: the slots after the pixels. Indices are clipped so that rejected lines
    # cannot index past the delimiter array.
    last = len(delims) - 1
    tail = f + len(_HEADER) + npix
    bounds = delims[np.minimum(tail + np.arange(len(_BEST) + len(_SECOND) + 1)[:, None], last)]
    g = np.empty((len(_BEST) + len(_SECOND), len(lines)), bool)
    labels = np.empty(g.shape, np.int64)
    for rows, table in ((_LABEL_ROWS, _LABEL_T), (_BITS_ROWS, _BITS_T)):
        g[rows], labels[rows] = _slots(words, bounds[rows] + 1, bounds[[r + 1 for r in rows]], table)
    nb = len(_BEST)
    null_ok = (bounds[nb + 1] - bounds[nb] - 1 == len(_SECOND_NULL))
    null_ok &= _has_literal(words, bounds[nb] + 1, _NULL_T)
    limits = np.array(CANDIDATE_LIMITS)[:, None]
    g[:5] &= labels[:5] < limits
    g[6:11] &= labels[6:11] < limits
    g[[5, 11]] &= labels[[5, 11]] <= MAX_BITS
    good &= g[:nb].all(axis=0) & np.where(has_second, g[nb:].all(axis=0), null_ok)

    # Pixels. Pixel 0 carries the `"pixels":[` prefix and the last one the `]` suffix; the
    # middle ones are bare decimals between commas, checked once for all delimiters.
    k = np.stack([f + len(_HEADER), np.minimum(tail - 1, last - 1)])
    g, ends_px = _slots(words, delims[k] + 1, delims[k + 1], _PIXEL_T, 3)
    good &= (g & (ends_px <= 255)).all(axis=0)
    mid_ok, mid_value = _comma_values(pad, delims)
    bad = np.flatnonzero(~mid_ok)
    lo = f + len(_HEADER) + 2              # delimiter after pixel 1, the first middle one
    good &= np.searchsorted(bad, tail) == np.searchsorted(bad, lo)
    shape_key = np.where(good, w * 100 + h * 10 + ncomp, 0)
    for key in np.unique(shape_key[good]).tolist():
        bw, bh, bc = key // 100, key // 10 % 10, key % 10
        sel = np.flatnonzero(shape_key == key)
        flat = np.empty((len(sel), bh * bw * bc), np.uint8)
        flat[:, 0] = ends_px[0, sel]
        flat[:, 1:-1] = np.lib.stride_tricks.sliding_window_view(mid_value, bh * bw * bc - 2)[lo[sel]]
        flat[:, -1] = ends_px[1, sel]
        arrays["pixels"][lines[sel], :bh, :bw, :bc] = flat.reshape(-1, bh, bw, bc)

    rows = lines[good]
    sec = has_second[good]
    # Names are registered only for accepted lines, in line order.
    raw_names = list(local)
    used = np.unique(local_ids[good], return_index=True)
    to_global = np.full(len(raw_names), -1, np.int32)
    for lid in used[0][np.argsort(used[1])].tolist():
        to_global[lid] = names.setdefault(raw_names[lid].decode("utf-8", "backslashreplace"),
                                          len(names))
    ids[rows] = to_global[local_ids[good]]
    arrays["size"][rows] = header[6:9, good].T
    arrays["origin"][rows] = header[4:6, good].T
    arrays["best"][rows] = labels[:5, good].T
    arrays["bits"][rows, 0] = labels[5, good]
    arrays["second"][rows[sec]] = labels[6:11, good][:, sec].T
    arrays["bits"][rows[sec], 1] = labels[11, good][sec]
    # Blank lines (bytes.strip() whitespace only) are found here, so that a flood of them
    # costs no Python loop. Every line's span includes its newline, so none is empty. A
    # blank line longer than max_record is still a problem, as on the slow path.
    space = (text == 32) | ((text >= 9) & (text <= 13))
    done = ~np.logical_or.reduceat(~space, starts) if n else np.zeros(0, bool)
    done &= ends - starts <= max_record
    done[rows] = True
    return arrays, ids, done


def parse_chunk(data, line0, names, fast=True, max_record=MAX_RECORD):
    """Parse lines of a dump. Returns (arrays, problems, number of newlines).

    arrays["image"] holds ids into `names` (dict name -> id, extended in place); problems
    are (line, kind, detail) with line numbers counted from line0 (1-based). Text after
    the last newline is the file's last line without its newline: a truncated line unless
    it is a complete record (then it is accepted). Lines longer than `max_record` bytes are
    problems. fast=False sends every line through the json.loads path (the tests compare the
    two). Memory is ~300 bytes per line: parse_file passes at most _CHUNK_LINES lines.
    """
    cut = data.rfind(b"\n") + 1
    body, rest = data[:cut], data[cut:]
    has_rest = bool(rest.strip())
    if fast and cut:
        arrays, ids, done = _fast_parse(body, names, has_rest, max_record)
    else:
        done = np.zeros(body.count(b"\n"), bool)
        arrays = _empty_arrays(len(done) + has_rest)
        ids = np.full(len(done) + has_rest, -1, np.int32)
    n = len(done)
    slow = np.flatnonzero(~done).tolist()
    lines = body.split(b"\n") if slow else ()
    if has_rest:
        slow.append(n)
    problems = []
    for i in slow:
        line = lines[i] if i < n else rest
        if len(line) > max_record:
            ids[i] = -1
            problems.append((line0 + i, RECORD_TOO_LONG, _too_long(len(line), max_record)))
            continue
        if not line.strip():
            ids[i] = -1
            continue                                    # blank lines are not records
        try:
            rec = decode_record(line)
        except BadRecord as e:
            kind, detail = e.args
            ids[i] = -1
            if i == n and kind == INVALID_JSON:
                kind, detail = TRUNCATED_LINE, f"no newline at the end of the file; {detail}"
            problems.append((line0 + i, kind, detail))
            continue
        _store(arrays, i, rec)
        ids[i] = names.setdefault(rec["image"], len(names))
    keep = ids >= 0
    if not keep.all():
        arrays = {k: v[keep] for k, v in arrays.items()}
    arrays["image"] = ids[keep]
    return arrays, problems, n


# ---------------------------------------------------------------------------------------
# Files: decompression in a background thread (overlapping the parsing), chunking, caching.

def _too_long(length, max_record):
    return f"the line has {length} bytes, more than the limit of {max_record} (max_record); skipped"


def _text_pieces(f, gz):
    """The text of an open dump in pieces of at most _CHUNK bytes. A .gz is decompressed a
    piece at a time (a gzip bomb never exists in memory as a whole); it may hold several
    gzip members (dumps compressed one by one and concatenated). Raises zlib.error for a
    damaged stream and EOFError for one that ends early."""
    if not gz:
        while True:
            raw = f.read(_CHUNK)
            if not raw:
                return
            yield raw
    dec = zlib.decompressobj(31)
    while True:
        raw = f.read(_CHUNK // 4)
        if not raw:
            break
        while raw:
            if dec.eof:
                dec = zlib.decompressobj(31)
            piece = dec.decompress(raw, _CHUNK)
            raw = dec.unused_data if dec.eof else dec.unconsumed_tail
            if piece:
                yield piece
    if f.tell() and not dec.eof:
        raise EOFError("the compressed stream ends early (truncated .gz file)")


def _read_chunks(path, out, stop, max_record):
    """Feed queue `out`, in file order, with
        ("data", text, compressed bytes read)  whole lines (the last item may lack the newline)
        ("long", length)                       one line longer than max_record, dropped
        ("error", kind, reason)                the file is damaged or unreadable; nothing follows
        ("raise", exception)                   a bug here, raised again by the consumer
    then None. Holds at most about _CHUNK + max_record bytes of text. Returns early once
    `stop` is set (the consumer gave up)."""
    def put(item):
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    pending = b""
    dropped = None               # bytes so far of a too-long line being dropped
    done = 0
    try:
        with open(path, "rb") as f:
            for piece in _text_pieces(f, path.endswith(".gz")):
                done = f.tell()
                if dropped is not None:
                    end = piece.find(b"\n")
                    if end < 0:
                        dropped += len(piece)
                        continue
                    if not put(("long", dropped + end)):
                        return
                    dropped = None
                    piece = piece[end + 1:]
                pending += piece
                cut = pending.rfind(b"\n") + 1
                if len(pending) - cut > max_record:
                    # The last line is already too long: pass on the lines before it and
                    # drop the rest of it up to its newline.
                    if not put(("data", pending[:cut], done)):
                        return
                    dropped = len(pending) - cut
                    pending = b""
                elif len(pending) >= _CHUNK and cut:
                    if not put(("data", pending[:cut], done)):
                        return
                    pending = pending[cut:]
            error = None
    except (zlib.error, EOFError) as e:
        error = (BAD_COMPRESSION, str(e) if isinstance(e, EOFError)
                 else f"not a valid gzip stream ({e})")
    except OSError as e:
        error = (UNREADABLE, f"cannot read the file ({e.strerror or e})")
    except Exception as e:       # noqa: BLE001 - a bug: the consumer raises it, never hangs
        put(("raise", e))
        return
    # The text before the damage is still passed on (its last line is reported as truncated).
    items = [("long", dropped)] if dropped is not None else []
    items.append(("data", pending, done))
    if error:
        items.append(("error",) + error)
    for item in items + [None]:
        if not put(item):
            return


def parse_file(path, fast=True, progress=None, max_record=MAX_RECORD,
               max_problems=MAX_PROBLEMS):
    """Parse one dump file, without the cache. Returns (dataset, problems).

    problems: list of (path, line or None, kind, detail); at most max_problems of them and
    then a TOO_MANY_PROBLEMS one, after which the file is not read further. Lines longer
    than max_record bytes are RECORD_TOO_LONG problems.
    progress: optional callable(compressed bytes read so far).
    """
    path = os.fspath(path)
    pieces = queue.Queue(maxsize=2)
    stop = threading.Event()
    reader = threading.Thread(target=_read_chunks, args=(path, pieces, stop, max_record),
                              daemon=True)
    reader.start()
    names = {}
    parts, problems = [], []
    line0 = 1
    try:
        while True:
            item = pieces.get()
            if item is None:
                break
            if item[0] == "raise":
                raise item[1]
            if item[0] == "error":
                problems.append((path, None, item[1], item[2]))
            elif item[0] == "long":
                problems.append((path, line0, RECORD_TOO_LONG, _too_long(item[1], max_record)))
                line0 += 1
            else:
                _, data, done = item
                newlines = data.count(b"\n")
                # Whitespace only and no line too long (a flood of blank lines): nothing to
                # parse, and parse_chunk would spend ~150 ns per line on it.
                blank = len(data) - newlines <= max_record and data.isspace()
                line0 += newlines if blank else 0
                for batch in () if blank else _line_batches(data, newlines):
                    arrays, probs, lines = parse_chunk(batch, line0, names, fast, max_record)
                    parts.append(arrays)
                    problems += [(path,) + p for p in probs]
                    line0 += lines
                    if len(problems) > max_problems:
                        break
                if progress:
                    progress(done)
            if len(problems) > max_problems:
                del problems[max_problems:]
                problems.append((path, None, TOO_MANY_PROBLEMS,
                                 f"more than {max_problems} problems (max_problems); the file "
                                 f"is not read after line {line0 - 1}"))
                break
    finally:
        stop.set()                  # an exception here must not leave the reader blocked
        reader.join()
    if not any(len(p["image"]) for p in parts) and not problems:
        problems.append((path, None, EMPTY_FILE, "the file holds no records"))
    return _join(parts, list(names)), problems


def _line_batches(data, newlines):
    """`data` (holding `newlines` newlines) cut after newlines into pieces of at most
    _CHUNK_LINES lines."""
    if newlines <= _CHUNK_LINES:
        if data:
            yield data
        return
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)[_CHUNK_LINES - 1::_CHUNK_LINES]
    start = 0
    for end in (ends + 1).tolist():
        yield data[start:end]
        start = end
    if start < len(data):
        yield data[start:]


def find_dump_files(paths):
    """Expand files and directories (recursively: *.jsonl, *.jsonl.gz) into a sorted list
    of files per argument. Returns (files, problems); a directory without dumps is a
    problem, a path that does not exist is a DataError."""
    files, problems = [], []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            found = sorted(os.path.join(root, name)
                           for root, dirs, names in os.walk(path)
                           for name in names if name.endswith(DATA_SUFFIXES))
            if not found:
                problems.append((path, None, NO_DATA_FILES,
                                 "the directory holds no *.jsonl or *.jsonl.gz files"))
            files += found
        elif os.path.exists(path):
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or directory")
    return files, problems


def default_cache_dir():
    """$TLG8_CACHE_DIR, else $XDG_CACHE_HOME/tlg8-multitask, else ~/.cache/tlg8-multitask."""
    if os.environ.get("TLG8_CACHE_DIR"):
        return os.environ["TLG8_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tlg8-multitask")


def _cache_path(cache_dir, path):
    key = hashlib.sha1(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(cache_dir, f"{key}.npz")


def _file_key(path, max_record, max_problems):
    """What a cache entry is valid for: the file's identity and the limits it was read with."""
    st = os.stat(path)
    return {"version": CACHE_VERSION, "path": os.path.abspath(path),
            "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "max_record": max_record, "max_problems": max_problems}


def _check_dataset(data):
    """Raise ValueError unless `data` has the layout of DATASET_KEYS (a damaged or foreign
    cache entry must not become a wrong dataset)."""
    template = _empty_arrays(0)
    n = len(data["image"])
    for k in DATASET_KEYS:
        if data[k].dtype != template[k].dtype or data[k].shape[1:] != template[k].shape[1:] \
                or len(data[k]) != n:
            raise ValueError(f"array '{k}' has shape {data[k].shape} and type {data[k].dtype}")
    names = data["names"]
    if names.dtype.kind != "U" or names.ndim != 1 or \
            (n and not 0 <= data["image"].min() <= data["image"].max() < len(names)):
        raise ValueError("the image names do not match the records")


def _cache_load(cache_dir, path, key):
    """(hit, warning). hit: the cached (dataset, problems) of `path`, or None when there is
    no entry, it is stale, or it is damaged; warning: why an existing entry could not be
    used (it is then rebuilt), else None."""
    entry = _cache_path(cache_dir, path)
    if not os.path.exists(entry):
        return None, None
    try:
        with np.load(entry, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta["key"] != key:
                return None, None
            data = {k: npz[k] for k in DATASET_KEYS + ("names",)}
        _check_dataset(data)
        problems = [(path, line, kind, detail) for line, kind, detail in meta["problems"]]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        return None, f"the cache entry {entry} is damaged ({e}); it is rebuilt"
    return (data, problems), None


def _cache_store(cache_dir, path, key, data, problems):
    """Write the cache entry atomically; a cache that cannot be written is only a warning."""
    meta = {"key": key, "problems": [p[1:] for p in problems]}
    target = _cache_path(cache_dir, path)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        write_file(target, "wb", lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **data))
    except OSError as e:
        return f"cannot write the cache {target} ({e.strerror or e})"
    return None


def load_file(path, cache_dir=None, progress=None, max_record=MAX_RECORD,
              max_problems=MAX_PROBLEMS):
    """(dataset, problems, from_cache) of one dump, through the cache when cache_dir is set.

    The cache entry is keyed by the absolute path, size and modification time (and the
    limits), so an edited or replaced file is parsed again. Problems are cached too, so a
    second run reports the same warnings (and --strict fails the same way). A damaged entry
    gives one CACHE_WARNING and is rebuilt.
    """
    path = os.fspath(path)
    key = _file_key(path, max_record, max_problems) if cache_dir else None
    warnings = []
    if cache_dir:
        hit, warning = _cache_load(cache_dir, path, key)
        if hit is not None:
            if progress:
                progress(key["size"])
            return hit[0], hit[1], True
        warnings.append(warning)
    data, problems = parse_file(path, progress=progress, max_record=max_record,
                                max_problems=max_problems)
    if cache_dir:
        warnings.append(_cache_store(cache_dir, path, key, data, problems))
    problems = problems + [(path, None, CACHE_WARNING, w) for w in warnings if w]
    return data, problems, False


def format_problem(problem):
    path, line, kind, detail = problem
    where = f"{path}:{line}" if line is not None else path
    return f"{where}: {kind}: {detail}"


def load_dumps(paths, cache_dir=None, strict=False, warn=None, progress=False,
               max_record=MAX_RECORD, max_problems=MAX_PROBLEMS):
    """Read dumps (files and directories) into one dataset.

    Returns (dataset, report). report: files, records, problems (list), problem counts by
    kind, cached (files read from the cache). Bad records are skipped; with strict=True the
    first problem raises DataError instead. warn(problem) is called for each problem as it
    is found (cache-write failures are warnings, never fatal). progress: show a tqdm bar
    (it stays silent when stderr is not a terminal). No records at all raise DataError.
    max_record, max_problems: the limits of parse_file (bytes per line, problems per file).
    """
    files, problems = find_dump_files(paths)
    report = {"files": files, "problems": [], "cached": 0}

    def note(items):
        for p in items:
            if strict and p[2] != CACHE_WARNING:
                raise DataError(format_problem(p))
            report["problems"].append(p)
            if warn:
                warn(p)

    note(problems)
    sizes = [os.path.getsize(f) for f in files]
    bar = None
    if progress:
        bar = cli.progress(sum(sizes), unit="B", unit_scale=True, desc="reading dumps",
                           leave=False)
    parts = []
    done = 0
    for path, size in zip(files, sizes):
        def advance(n, base=done):
            if bar is not None:
                bar.update(base + n - bar.n)
        data, probs, cached = load_file(path, cache_dir, advance, max_record, max_problems)
        report["cached"] += cached
        note(probs)
        parts.append(data)
        done += size
    if bar is not None:
        bar.close()
    data = concat_datasets(parts)
    report["records"] = dataset_size(data)
    counts = {}
    for p in report["problems"]:
        if p[2] != CACHE_WARNING:
            counts[p[2]] = counts.get(p[2], 0) + 1
    report["problem_counts"] = counts
    if not report["records"]:
        where = ", ".join(os.fspath(p) for p in paths)
        raise DataError(f"no valid records in {where}"
                        + (f" ({sum(counts.values())} problems, see the warnings)" if counts else ""))
    return data, report
