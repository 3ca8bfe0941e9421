"""Images to .tlg8 bytes and back: the library behind `tlg8 encode|decode`, `tlg8.read`,
`tlg8.write` and the Pillow plugin.

    rgba = tlg8.read("photo.tlg8")                  # (H, W, 3 or 4) uint8, RGB(A) order
    tlg8.write("copy.tlg8", rgba)                   # the shipped model, <= 16 trials/block

Arrays in RGB(A) order (Pillow's) are what users hold; the codec's own order is TLG8's
(R, G, B or A, R, G, B: `to_tlg8_order`, `from_tlg8_order`).

Searches (`encode_blocks`, `choose_blocks`):
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
import contextlib
import os
import signal

import numpy as np

from . import Tlg8Error, golombfit, stages, trials
from .fileio import atomic_write
from .image import BLOCK, TILE_H, TILE_W, block_grid
from .tlgfile import (MAX_PIXELS, check_golomb_table, decode_tlg8, encode_tlg8,
                      golomb_row_costs, join_bands, read_tlg8_bytes)

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
SELECT_CHUNK = 512      # blocks a process of --jobs takes at a time (_select)
# Pixels of the bands that the stages after the model's choices take one at a time, so
# that their temporaries stay those of a 512 x 512 image whatever the image's size (the
# file pass alone holds about 28 MB per million pixels, the NumPy file writer 230 MB).
# Measured on img1: peak 95 -> 70 MB (NumPy path 289 -> 171 MB), the same time.
BAND_PIXELS = 1 << 18


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
    """Per-block configurations of an image, in block_grid order: encode_blocks without
    the file's bytes, (choices, estimated bits, trials per block or None)."""
    return encode_blocks(samples, search, model, max_trials, progress, jobs, effort,
                         write=False)[1:]


def encode_samples(samples, search="model", model=None, max_trials=None, progress=None, jobs=1,
                   effort=DEFAULT_EFFORT):
    """TLG8 samples (H, W, C) -> .tlg8 file bytes (see encode_blocks)."""
    return encode_blocks(samples, search, model, max_trials, progress, jobs, effort)[0]


def encode_blocks(samples, search="model", model=None, max_trials=None, progress=None, jobs=1,
                  effort=DEFAULT_EFFORT, write=True):
    """An image's per-block configurations and, with `write`, its .tlg8 file.

    model: a loaded model (any kind of the model interface) for search "model"; None is the
    shipped one. effort: a key of EFFORTS; max_trials (default: the effort's) overrides its
    trials per block. Returns (the file's bytes or None; choices int64 (N, 5) = predictor,
    filter, reorder, interleave, entropy; estimated bits int64 (N,); trials per block int64
    (N,) or None if unknown), in block_grid order. progress: optional callable(number of
    blocks just finished).

    jobs > 1 runs every stage but two Golomb-table fits in that many processes: the
    model's choices, SELECT_CHUNK blocks at a time by whichever process is free; then, in
    bands of whole tile rows (tiles are coded independently), the row costs, the file pass
    and each band's own file, whose tile records make the image's (tlgfile.join_bands).
    An image of more than BAND_PIXELS has more bands than processes, each process taking
    its bands one after another. The tables are fitted to row costs summed over the bands,
    so choices and bytes are the same for any `jobs` and any bands.
    """
    if search not in SEARCHES:
        raise EncodeError(f"search must be one of {', '.join(SEARCHES)}, not {search!r}")
    if effort not in EFFORTS:
        raise EncodeError(f"effort must be one of {', '.join(map(str, EFFORTS))}, not {effort!r}")
    max_trials = trials.check_max_trials(EFFORTS[effort][0] if max_trials is None
                                         else max_trials)
    if search == "model" and model is None:
        from .selector import default_model      # the model side of the codec, when used
        model = default_model()
    height, width = samples.shape[:2]
    tile_h = tile_height(width, height, search)
    grid = block_grid(width, height, tile_h)
    file_pass = EFFORTS[effort][1] if search == "model" else None
    bands = _bands(width, height, tile_h, max(jobs, -(-height * width // BAND_PIXELS)))
    job = {"samples": samples, "search": search, "model": model, "max_trials": max_trials,
           "file_pass": file_pass, "tile_h": tile_h, "grid": grid,
           "selection": None, "taken": None}
    if len(bands) > 1:
        import multiprocessing
        job["selection"] = _selection(len(grid), search, max_trials, file_pass)
        job["taken"] = multiprocessing.Value("q", 0)    # blocks handed out (_taken)
    # The file's table is fitted to the final choices' row costs: summed over the bands,
    # or by a single band as it writes its file. The file pass chooses with a table fitted
    # likewise to the first choices.
    fit = write and search != "reference"
    with _band_processes(job, _parts(grid, bands), min(jobs, len(bands)), progress) as run:
        run(_select)
        if file_pass is not None:
            run(_pass, golombfit.fit(DEFAULT_TABLE, sum(run(_row_costs))))
        files = None
        if write and fit and len(bands) > 1:
            files = run(_finish, golombfit.fit(DEFAULT_TABLE, sum(run(_row_costs))))
        elif write:
            files = run(_finish, None if fit else DEFAULT_TABLE)
    sel = job["selection"]
    return (join_bands(files) if write else None, np.array(sel["choices"]),
            np.array(sel["bits"]), np.array(sel["trials"]) if "trials" in sel else None)


def _bands(width, height, tile_h, jobs):
    """At most `jobs` bands (y0, y1) of whole tile rows, of about equal numbers of blocks."""
    rows = -(-height // tile_h)
    jobs = min(jobs, rows)
    cuts = [round(k * rows / jobs) * tile_h for k in range(jobs)] + [height]
    return [(y0, min(y1, height)) for y0, y1 in zip(cuts, cuts[1:])]


def _parts(grid, bands):
    """Each process's band: its "rows" (y0, y1) and their blocks (c, d) in `grid`."""
    first = np.searchsorted(grid[:, 1], [y0 for y0, _ in bands] + [grid[-1, 1] + 1]).tolist()
    return [{"rows": rows, "band": (first[k], first[k + 1])} for k, rows in enumerate(bands)]


# What the model tried, kept for the file pass in int16 rather than int64 (configuration
# fields < 96, entropy 0 or 1, -1 for an unused trial): 4 MiB rather than 16 per million
# pixels at 16 trials. _select refuses a model's values out of range (_check_tried).
SMALL_FIELDS = ("tried", "tried_entropy")
CONFIG_LIMITS = np.array([stages.N_PREDICTORS, stages.N_FILTERS, stages.N_REORDERS,
                          stages.N_INTERLEAVES])


def _selection(n, search, max_trials, file_pass):
    """The arrays the stages of several processes fill, for n blocks, in memory shared with
    processes forked later: the selection's choices, bits, trials and (for the file pass)
    what was tried. (One process keeps the search's own arrays instead.)"""
    import mmap
    if search == "model":
        rows = trials.empty_selection(1, max_trials,
                                      "trials" if file_pass is not None else False)
    else:
        rows = {"choices": np.zeros((1, 5), np.int64), "bits": np.zeros(1, np.int64)}
    out = {}
    for key, row in rows.items():               # each block's row is the same
        if key in SMALL_FIELDS:
            row = row.astype(np.int16)
        memory = mmap.mmap(-1, max(1, n * row.nbytes))     # anonymous: MAP_SHARED
        out[key] = np.frombuffer(memory, row.dtype, n * row.size).reshape((n,) + row.shape[1:])
        out[key][...] = row
    return out


# The stages of encode_blocks, each run by every process on its part (_parts):
# fn(job, part, *args). They fill job["selection"] and return what the parent gathers.

def _select(job, part, progress=None):
    """Choices by the search (and what the model tried) into job["selection"]; returns
    how many blocks this process chose. The model chooses each block apart from the
    others: with several processes, each takes SELECT_CHUNK blocks at a time while any are
    left, so that all end together. The other searches choose the band's whole tiles."""
    out = job["selection"]
    if job["search"] != "model":
        from . import search as block_search
        (y0, y1), (c, d) = part["rows"], part["band"]
        _, best, _ = block_search.search_image(job["samples"][y0:y1], job["search"],
                                               progress=progress)
        pieces = [((c, d), {"choices": best[:, :5], "bits": best[:, 5]})]
    else:
        pieces = ((blocks, job["model"].choose_image(
            job["samples"], job["max_trials"], progress=progress,
            details="trials" if job["file_pass"] is not None else False,
            grid=job["grid"][blocks[0]:blocks[1]])) for blocks in _taken(job))
    done = 0
    for (a, b), sel in pieces:
        if "tried" in sel:
            _check_tried(sel["tried"], sel["tried_entropy"])
        if out is None:         # one process: the whole image's own arrays
            job["selection"] = sel
        else:
            trials.store_selection(out, slice(a, b), sel)
        done += b - a
    return done


def _check_tried(tried, entropy):
    """A model's tried configurations (N, T, 4) and their entropy estimators (N, T): each
    a configuration (or all -1: no trial), estimator 0 or 1, else an EncodeError. The file
    pass indexes the compiled kernels' tables with them, which check no bounds."""
    unused = (tried == -1).all(axis=-1)
    good = ((tried >= 0) & (tried < CONFIG_LIMITS)).all(axis=-1) | unused
    if not (good.all() and ((entropy == 0) | (entropy == 1)).all()):
        raise EncodeError("the model tried configurations out of range (fields: predictor "
                          "< 8, filter < 96, reorder < 8, interleave < 2; entropy 0 or 1; "
                          "-1 for no trial)")


def _taken(job):
    """The ranges of blocks this process takes (all of them when it is the only one)."""
    n, taken = len(job["grid"]), job["taken"]
    if taken is None:
        yield 0, n
        return
    while True:
        with taken.get_lock():
            a = taken.value
            taken.value = a + SELECT_CHUNK
        if a >= n:
            return
        yield a, min(n, a + SELECT_CHUNK)


def _row_costs(job, part):
    """The row costs of the band's choices (for fitting a Golomb table)."""
    (y0, y1), (c, d) = part["rows"], part["band"]
    return golomb_row_costs(job["samples"][y0:y1], job["selection"]["choices"][c:d],
                            tile_size=(TILE_W, job["tile_h"]))


def _pass(job, part, table):
    """The band's choices for file bytes among the configurations the model tried
    (tlg8.filecost), coded with `table`; the estimate of each comes from its trial (the
    pass only picks configurations that were tried)."""
    from . import filecost
    (y0, y1), (c, d) = part["rows"], part["band"]
    sel = {key: value[c:d] for key, value in job["selection"].items()}
    samples = job["samples"][y0:y1]
    choices = filecost.choose_for_file(
        samples, block_grid(samples.shape[1], y1 - y0, job["tile_h"]), sel["tried"],
        sel["tried_bits"], sel["tried_entropy"], golomb_table=table, **job["file_pass"])
    hit = (sel["tried"] == choices[:, None, :4]).all(axis=2)
    sel["choices"][...] = choices
    sel["bits"][...] = sel["tried_bits"][np.arange(len(choices)), hit.argmax(axis=1)]


def _finish(job, part, table):
    """The band's own .tlg8 file, coded with `table` (None: a fitted one)."""
    (y0, y1), (c, d) = part["rows"], part["band"]
    return encode_tlg8(job["samples"][y0:y1], job["selection"]["choices"][c:d],
                       golomb_table=table, tile_size=(TILE_W, job["tile_h"]),
                       fit_table=table is None)


@contextlib.contextmanager
def _band_processes(job, parts, processes, progress):
    """run(stage, *args) -> [stage(job, part, *args) for each part], in `processes`
    processes: this one and others forked now, which inherit `job` (no copies are sent;
    they fill its shared arrays). Process k takes parts k, k + processes, ... one after
    another. Without fork (Windows) every part runs here. progress gets the blocks each
    part selects: this process's as they are chosen, the others' as they arrive."""
    import multiprocessing
    forks = processes > 1 and "fork" in multiprocessing.get_all_start_methods()
    groups = [parts[k::processes] for k in range(processes)] if forks else [parts]
    children = []

    def run(stage, *args):
        for _, conn in children:
            conn.send((stage, args))
        out = [_run_parts(stage, job, groups[0], args,
                          {"progress": progress} if stage is _select else {})]
        for _, conn in children:
            try:
                ok, value = conn.recv()
            except (EOFError, OSError):
                raise EncodeError("an encoder process ended before its band was done") \
                    from None
            if not ok:
                raise value
            if stage is _select and progress is not None:
                progress(sum(value))
            out.append(value)
        # back in the parts' order: group k holds parts k, k + processes, ...
        return [out[i % len(groups)][i // len(groups)] for i in range(len(parts))]

    try:
        if forks:
            from . import jit
            if jit.available():
                jit.load("tlg8.encode_kernels")     # once, before forking
            context = multiprocessing.get_context("fork")
            for group in groups[1:]:
                conn, child_end = context.Pipe()
                # The child closes its copies of the parent's ends, so that it sees the end
                # of its pipe whenever the parent goes.
                ends = [c for _, c in children] + [conn]
                proc = context.Process(target=_serve, args=(child_end, ends, job, group),
                                       daemon=True)
                proc.start()
                child_end.close()
                children.append((proc, conn))
        yield run
    except BaseException:
        for proc, _ in children:        # a failed or interrupted encode ends now
            proc.kill()
        raise
    finally:
        for proc, conn in children:
            conn.close()                # ends an idle child's wait for its next stage
            proc.join()


def _run_parts(stage, job, parts, args, options):
    """A process's share of a stage: stage(job, part, *args) of each of its parts."""
    return [stage(job, part, *args, **options) for part in parts]


def _serve(conn, parent_ends, job, parts):
    """A band process: runs the stages the parent sends, on its parts, until it closes
    the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the parent stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for end in parent_ends:
        end.close()
    while True:
        try:
            stage, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = (True, _run_parts(stage, job, parts, args, {}))
        except Exception as e:          # the parent raises it
            reply = (False, e)
        try:
            conn.send(reply)
        except OSError:                 # the parent has gone
            return
        except Exception:               # an exception that does not pickle
            conn.send((False, EncodeError(f"{type(reply[1]).__name__}: {reply[1]}")))


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


def write(path, array, search="model", max_trials=None, model=None, effort=DEFAULT_EFFORT,
          jobs=1):
    """Write an RGB or RGBA uint8 array (H, W, 3|4) as a .tlg8 file, atomically (jobs:
    processes, as encode_blocks; the file is the same for any)."""
    data = encode_samples(to_tlg8_order(array), search, model, max_trials, jobs=jobs,
                          effort=effort)
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
