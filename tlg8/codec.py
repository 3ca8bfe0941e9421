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
               Golomb rows, no new trials);
* reference  - the reference encoder's search (tlg8.search): tlgconv's bytes;
* exhaustive - every configuration, the true minimum of the bit estimate.
"""
import os

import numpy as np

from . import Tlg8Error, filecost, trials
from .fileio import atomic_write
from .image import TILE_H, block_grid
from .selector import default_model
from .tlgfile import MAX_PIXELS, decode_tlg8, encode_tlg8, read_tlg8_bytes

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
    plan = (search, max_trials, EFFORTS[effort][1])
    if search == "model" and model is None:
        model = default_model()
    if jobs <= 1:
        return _choose(samples, model, plan, progress)
    height = samples.shape[0]
    from concurrent.futures import ProcessPoolExecutor
    rows = max(TILE_H, -(-height // (4 * jobs)) // TILE_H * TILE_H)
    bands = [(y, min(height, y + rows)) for y in range(0, height, rows)]
    results = []
    with ProcessPoolExecutor(jobs) as pool:
        futures = [pool.submit(_choose, samples[y0:y1], model, plan) for y0, y1 in bands]
        for (y0, y1), future in zip(bands, futures):
            results.append(future.result())
            if progress is not None:
                progress(len(block_grid(samples.shape[1], y1 - y0)))
    choices, bits, counts = zip(*results)
    return (np.concatenate(choices), np.concatenate(bits),
            None if counts[0] is None else np.concatenate(counts))


def _choose(samples, model, plan, progress=None):
    search, max_trials, file_pass = plan
    if search != "model":
        from . import search as block_search
        _, best, _ = block_search.search_image(samples, search, progress=progress)
        return best[:, :5], best[:, 5], None
    sel = model.choose_image(samples, max_trials, progress=progress,
                             details="trials" if file_pass is not None else False)
    if file_pass is None:
        return sel["choices"], sel["bits"], sel["trials"]
    choices = filecost.choose_for_file(samples, sel["grid"], sel["tried"], sel["tried_bits"],
                                       sel["tried_entropy"], **file_pass)
    # The estimate of each chosen configuration, from its trial (the pass only picks
    # configurations that were tried).
    hit = (sel["tried"] == choices[:, None, :4]).all(axis=2)
    bits = sel["tried_bits"][np.arange(len(choices)), hit.argmax(axis=1)]
    return choices, bits, sel["trials"]


def encode_samples(samples, search="model", model=None, max_trials=None, progress=None, jobs=1,
                   effort=DEFAULT_EFFORT):
    """TLG8 samples (H, W, C) -> .tlg8 file bytes (see choose_blocks)."""
    choices, _, _ = choose_blocks(samples, search, model, max_trials, progress, jobs, effort)
    return encode_choices(samples, choices, search)


def encode_choices(samples, choices, search):
    """The .tlg8 bytes of choices made by `search`. tlgconv's bytes need its default Golomb
    table; every other search stores the table fitted to its own rows (tlg8.golombfit),
    which is never larger."""
    return encode_tlg8(samples, choices, fit_table=search != "reference")


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
