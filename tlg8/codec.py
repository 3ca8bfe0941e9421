"""Images to .tlg8 bytes and back: the library behind `tlg8 encode|decode`, `tlg8.read`,
`tlg8.write` and the Pillow plugin.

    rgba = tlg8.read("photo.tlg8")                  # (H, W, 3 or 4) uint8, RGB(A) order
    tlg8.write("copy.tlg8", rgba)                   # the shipped model, <= 16 trials/block

Arrays in RGB(A) order (Pillow's) are what users hold; the codec's own order is TLG8's
(R, G, B or A, R, G, B: `to_tlg8_order`, `from_tlg8_order`).

Searches (`choose_blocks`):
* model      - a model's choices with at most max_trials trials per block: the shipped pair
               selector (tlg8.selector.default_model) unless a loaded model is given; at
               effort >= 2 the configurations it tried are then chosen among for file
               bytes (tlg8.filecost.choose_for_file: choice streams and tile-carried
               Golomb rows, no new trials), coded with a Golomb table fitted to the
               model's first choices (tlg8.golombfit);
* reference  - the reference encoder's search (tlg8.search): tlgconv's bytes;
* exhaustive - every configuration, the true minimum of the bit estimate.
Every search but the reference stores the Golomb table fitted to its final choices
(`encode_choices`).
"""
import os

import numpy as np

from . import Tlg8Error, golombfit, stages, trials
from .fileio import atomic_write
from .image import BLOCK, TILE_H, TILE_W, block_grid
from .tlgfile import (MAX_PIXELS, check_golomb_table, decode_tlg8, encode_tlg8,
                      golomb_row_costs, read_tlg8_bytes)

SEARCHES = ("model", "reference", "exhaustive")
# Effort levels of the model search: trials per block, and the settings of the file-bytes
# pass over the tried configurations (None: the model's per-block best, no pass). Measured
# on the shared photos (docs/file_bytes_notes.md, bench/bench_effort.py); 3 is the default:
# the smallest files at >= 10x the reference search's speed.
EFFORTS = {
    1: (4, None),
    2: (8, {}),
    3: (16, {}),
    4: (16, {"passes": 3, "margin": 48, "max_configs": 16}),
    5: (32, {"passes": 3, "margin": 48, "max_configs": 16}),
}
DEFAULT_EFFORT = 3
# Tiles of the model search (tile_height): rows aimed at, and the largest area, the
# reference's own 8192 x 80.
TALL_TILE_ROWS = 256
MAX_TILE_PIXELS = TILE_W * TILE_H
DEFAULT_TABLE = check_golomb_table(stages.DEFAULT_GOLOMB_TABLE)


class EncodeError(Tlg8Error):
    """The encoder cannot do what was asked (bad array, bad option)."""


def to_tlg8_order(rgb):
    """(H, W, 3|4) uint8 RGB(A) -> TLG8 samples (R, G, B or A, R, G, B); RGBA that is fully
    opaque stays 4 components (the caller asked for alpha)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or \
            0 in rgb.shape[:2]:
        raise EncodeError(f"an image array is uint8 (H, W, 3 or 4) with H, W >= 1, not "
                          f"{rgb.dtype} {rgb.shape}")
    if rgb.shape[2] == 3:
        return np.ascontiguousarray(rgb)
    return np.ascontiguousarray(rgb[..., [3, 0, 1, 2]])


def from_tlg8_order(samples, ncomp, keep_alpha=True):
    """TLG8 samples -> RGB(A) uint8. keep_alpha=False drops an alpha that is all 255 (what
    the reference's BMP writer does)."""
    if ncomp == 4 and (keep_alpha or (samples[..., 0] != 255).any()):
        return np.ascontiguousarray(samples[..., [1, 2, 3, 0]])
    return np.ascontiguousarray(samples[..., -3:])


def choose_blocks(samples, search="model", model=None, max_trials=None, progress=None,
                  jobs=1, effort=DEFAULT_EFFORT):
    """Per-block configurations of an image, in block_grid order.

    model: a loaded model (any kind of the model interface) for search "model"; None is the
    shipped one. effort: a key of EFFORTS; max_trials (default: the effort's) overrides its
    trials per block. Returns (choices int64 (N, 5) = predictor, filter, reorder, interleave,
    entropy; estimated bits int64 (N,); trials per block int64 (N,) or None if unknown).
    progress: optional callable(number of blocks just finished). jobs > 1 splits the image
    into bands of whole tile rows, one task each: tiles are coded independently, so the
    choices are the same as with one process.
    """
    if search not in SEARCHES:
        raise EncodeError(f"search must be one of {', '.join(SEARCHES)}, not {search!r}")
    if effort not in EFFORTS:
        raise EncodeError(f"effort must be one of {', '.join(map(str, EFFORTS))}, not {effort!r}")
    max_trials = trials.check_max_trials(EFFORTS[effort][0] if max_trials is None
                                         else max_trials)
    file_pass = EFFORTS[effort][1] if search == "model" else None
    if search == "model" and model is None:
        from .selector import default_model      # the model side of the codec, when used
        model = default_model()
    # Tiles are coded independently, so bands of whole tile rows can be chosen apart. The
    # Golomb table the file pass chooses with is fitted to the whole image's first choices
    # (row costs add up over bands), so the choices do not depend on `jobs`.
    height, width = samples.shape[:2]
    tile_h = tile_height(width, height, search)
    rows = max(tile_h, -(-height // (4 * jobs)) // tile_h * tile_h)
    bands = [(y, min(height, y + rows)) for y in range(0, height, rows)] if jobs > 1 \
        else [(0, height)]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor      # only when used: start-up
    pool = ProcessPoolExecutor(jobs) if jobs > 1 else None
    try:
        firsts = []
        for (y0, y1), first in zip(bands, _run(pool, _first_choices, [
                (samples[y0:y1], search, model, max_trials, file_pass is not None, tile_h,
                 progress if pool is None else None) for y0, y1 in bands])):
            firsts.append(first)
            if pool is not None and progress is not None:
                progress(len(block_grid(width, y1 - y0)))
        if file_pass is not None:
            table = golombfit.fit(DEFAULT_TABLE, sum(first[3] for first in firsts))
            passed = _run(pool, _file_pass, [(samples[y0:y1], first[4], file_pass, table)
                                             for (y0, y1), first in zip(bands, firsts)])
            firsts = [choices_bits + first[2:] for choices_bits, first in zip(passed, firsts)]
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    choices, bits, counts = zip(*(first[:3] for first in firsts))
    return (np.concatenate(choices), np.concatenate(bits),
            None if counts[0] is None else np.concatenate(counts))


def _run(pool, fn, calls):
    """fn(*args) for each args of `calls`, in a pool's processes or (None) here; results in
    order."""
    if pool is None:
        return (fn(*args) for args in calls)
    return (task.result() for task in [pool.submit(fn, *args) for args in calls])


def _first_choices(samples, search, model, max_trials, details, tile_h, progress=None):
    """One band's choices by its search, in tiles tile_h rows high: (choices, estimated
    bits, trials or None, and with `details` the row costs of the choices (for fitting a
    Golomb table) and what the model tried (for the file pass))."""
    if search != "model":
        from . import search as block_search
        _, best, _ = block_search.search_image(samples, search, progress=progress)
        return best[:, :5], best[:, 5], None
    grid = block_grid(samples.shape[1], samples.shape[0], tile_h)
    sel = model.choose_image(samples, max_trials, progress=progress,
                             details="trials" if details else False, grid=grid)
    if not details:
        return sel["choices"], sel["bits"], sel["trials"]
    return (sel["choices"], sel["bits"], sel["trials"],
            golomb_row_costs(samples, sel["choices"], tile_size=(TILE_W, tile_h)), sel)


def _file_pass(samples, sel, file_pass, table):
    """(choices, estimated bits) for file bytes among the configurations the model tried
    (tlg8.filecost), coded with `table`. The estimate of each chosen configuration comes
    from its trial: the pass only picks configurations that were tried."""
    from . import filecost
    choices = filecost.choose_for_file(samples, sel["grid"], sel["tried"], sel["tried_bits"],
                                       sel["tried_entropy"], golomb_table=table, **file_pass)
    hit = (sel["tried"] == choices[:, None, :4]).all(axis=2)
    return choices, sel["tried_bits"][np.arange(len(choices)), hit.argmax(axis=1)]


def encode_samples(samples, search="model", model=None, max_trials=None, progress=None, jobs=1,
                   effort=DEFAULT_EFFORT):
    """TLG8 samples (H, W, C) -> .tlg8 file bytes (see choose_blocks)."""
    choices, _, _ = choose_blocks(samples, search, model, max_trials, progress, jobs, effort)
    return encode_choices(samples, choices, search)


def encode_choices(samples, choices, search):
    """The .tlg8 bytes of choices made by `search`, in its tiles (tile_height). tlgconv's
    bytes need its default Golomb table; every other search stores the table fitted to
    its own rows (tlg8.golombfit), which is never larger."""
    tile_h = tile_height(samples.shape[1], samples.shape[0], search)
    return encode_tlg8(samples, choices, tile_size=(TILE_W, tile_h),
                       fit_table=search != "reference")


def tile_height(width, height, search="model"):
    """Rows per tile of the files `search` writes (file spec §3.4 allows any tile size).

    The reference and exhaustive searches keep the reference's 80 rows: tlgconv's bytes,
    and the estimate's true minimum on its tiles. The model search uses tiles of about
    TALL_TILE_ROWS rows, of equal height (a multiple of 8, the last one less), within the
    reference's largest tile area: fewer blocks whose upper neighbours lie outside their
    tile, and longer choice streams and Golomb rows, for 0.2-0.8 % smaller files on the
    shared photos; several tile rows on large images keep --jobs parallel.
    """
    if search != "model":
        return TILE_H
    per_tile = -(-height // -(-height // TALL_TILE_ROWS))
    rows = -(-per_tile // BLOCK) * BLOCK
    widest = MAX_TILE_PIXELS // min(width, TILE_W) // BLOCK * BLOCK
    return max(TILE_H, min(rows, widest))


def write(path, array, search="model", max_trials=None, model=None, effort=DEFAULT_EFFORT):
    """Write an RGB or RGBA uint8 array (H, W, 3|4) as a .tlg8 file, atomically."""
    data = encode_samples(to_tlg8_order(array), search, model, max_trials, effort=effort)
    atomic_write(path, lambda tmp: _write_bytes(tmp, data))


def read(path, max_pixels=MAX_PIXELS):
    """A .tlg8 file as an RGB or RGBA uint8 array (H, W, 3|4); Tlg8FormatError (naming the
    file) for anything that is not a valid .tlg8 file."""
    samples, ncomp, _ = read_file(path, max_pixels)
    return from_tlg8_order(samples, ncomp)


def read_file(path, max_pixels=MAX_PIXELS, keep_bytes=False):
    """decode_tlg8 of a file: (samples in TLG8 order, C, choices), and with keep_bytes the
    file's bytes too; the header and sizes are checked before the rest is read (errors
    name the file)."""
    path = os.fspath(path)
    try:
        data = read_tlg8_bytes(path, max_pixels)
        decoded = decode_tlg8(data, max_pixels)
    except OSError as e:
        raise Tlg8Error(f"{path}: cannot read ({e.strerror or e})") from None
    except Tlg8Error as e:
        raise type(e)(f"{path}: {e}") from None
    return decoded + (data,) if keep_bytes else decoded


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
