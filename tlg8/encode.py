"""Encode a PNG or BMP image to a .tlg8 file.

    python3 -m tlg8.encode IMAGE OUT.tlg8 [--search reference|exhaustive|model]
                           [--model NPZ] [--max-trials 16] [--pixel-format auto]
                           [--stats] [--quiet]

The per-block choices come from one of three sources (`choose_blocks`):
* reference  - the reference encoder's search with its energy early exit (tlg8.search);
               with the reference's choices the file is byte-identical to tlgconv's;
* exhaustive - every configuration, the true minimum of the bit estimate;
* model      - the multitask model's top candidates + beam search (beam_search_runtime),
               at most --max-trials configurations per block.
The default is `model` when --model is given, else `reference`. The output appears
atomically (temporary file + rename). Errors: one line on stderr, exit status 1.
"""
import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from . import Tlg8Error, search as block_search, stages
from .image import TILE_H, block_batches, block_grid, block_workspaces, read_image
from .fileio import atomic_write
from .tlgfile import encode_tlg8

SEARCHES = ("reference", "exhaustive", "model")
OUTPUT_EXTENSIONS = (".tlg8", ".tlg")
CONFIGS_PER_PAIR = stages.N_REORDERS * stages.N_INTERLEAVES * stages.N_ENTROPIES


class EncodeError(Tlg8Error):
    """The encoder cannot do what was asked (missing model, bad option combination)."""


def choose_blocks(samples, search="reference", model=None, max_trials=16, progress=None,
                  jobs=1):
    """Per-block configurations of an image, in block_grid order.

    Returns (choices int64 (N, 5) with columns predictor, filter, reorder, interleave,
    entropy; estimated bits int64 (N,); trials per block int64 (N,) or None if unknown).
    progress: optional callable(number of blocks just finished). jobs > 1 splits the image
    into bands of whole tile rows, one task each: tiles are coded independently, so the
    choices are the same as with one process.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, not {search!r}")
    if search == "model":
        _check_model(model)
    if jobs <= 1:
        return _choose(samples, search, model, max_trials, progress)
    height = samples.shape[0]
    rows = max(TILE_H, -(-height // (4 * jobs)) // TILE_H * TILE_H)
    bands = [(y, min(height, y + rows)) for y in range(0, height, rows)]
    results = []
    with ProcessPoolExecutor(jobs) as pool:
        futures = [pool.submit(_choose, samples[y0:y1], search, model, max_trials)
                   for y0, y1 in bands]
        for (y0, y1), future in zip(bands, futures):
            results.append(future.result())
            if progress is not None:
                progress(len(block_grid(samples.shape[1], y1 - y0)))
    choices, bits, trials = zip(*results)
    return (np.concatenate(choices), np.concatenate(bits),
            None if trials[0] is None else np.concatenate(trials))


def _choose(samples, search, model, max_trials, progress=None):
    if search == "model":
        return _model_choices(samples, model, max_trials, progress)
    _, best, _ = block_search.search_image(samples, search, progress=progress)
    return best[:, :5], best[:, 5], None


def _check_model(model):
    if model is None:
        raise EncodeError("--search model needs --model NPZ")
    if not os.path.isfile(model):
        raise EncodeError(f"{model}: model file not found")


def _model_choices(samples, model, max_trials, progress):
    """Choices from the multitask model and beam search (beam_search_runtime).

    The ML modules live beside the package (the package itself never imports them), so
    they are imported here, only for --search model.
    """
    try:
        import beam_search_runtime
        import multitask_model
    except ImportError as e:
        raise EncodeError(f"--search model needs beam_search_runtime and multitask_model "
                          f"(run from the repository root or install the project): {e}") from None
    try:
        loaded = multitask_model.MultiTaskModel.load(model)      # exists: _check_model
    except multitask_model.ModelFormatError as e:
        raise EncodeError(str(e)) from None
    choices, bits, trials = beam_search_runtime.encode_choices(
        samples, loaded, max_trials=max_trials, progress=progress)
    return (np.asarray(choices, np.int64), np.asarray(bits, np.int64),
            np.asarray(trials, np.int64))


def reference_trials(samples, chunk=1024):
    """Configurations the reference search evaluates per block: (predictor, filter) pairs
    left by its 1.3 energy rule x 32 (reorder x interleave x entropy)."""
    grid = block_grid(samples.shape[1], samples.shape[0])
    out = np.empty(len(grid), np.int64)
    for part in block_batches(grid, chunk):
        res = stages.all_residuals(block_workspaces(samples, grid[part]))
        cand = block_search.filter_candidates(res)
        kept = block_search.early_exit_mask(*block_search.pair_energies(res, cand))
        out[part] = kept.sum(axis=(1, 2)) * CONFIGS_PER_PAIR
    return out


def _trials(samples, search, trials):
    if trials is not None:
        return trials
    if search == "exhaustive":
        return np.full(len(block_grid(samples.shape[1], samples.shape[0])),
                       block_search.N_CONFIGS, np.int64)
    return reference_trials(samples)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m tlg8.encode", description="Encode a PNG or BMP image to .tlg8.")
    parser.add_argument("image", help="input image (.png or .bmp)")
    parser.add_argument("output", help="output file (.tlg8)")
    parser.add_argument("--search", choices=SEARCHES,
                        help="choice source (default: model with --model, else reference)")
    parser.add_argument("--model", metavar="NPZ", help="multitask model for --search model")
    parser.add_argument("--max-trials", type=int, default=16,
                        help="configurations tried per block by the model search (default 16)")
    parser.add_argument("--pixel-format", choices=("auto", "R8G8B8", "A8R8G8B8"),
                        default="auto", help="component count as tlgconv's option (default auto)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for the search, over bands of tile rows "
                             "(default 1; the file is the same for any value)")
    parser.add_argument("--stats", action="store_true",
                        help="print blocks, trials per block, estimated bits, file bytes, times")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    args = parser.parse_args(argv)
    search = args.search or ("model" if args.model else "reference")
    if args.model and search != "model":
        parser.error(f"--model is only used with --search model, not {search}")
    if args.max_trials < 1:
        parser.error("--max-trials must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if os.path.splitext(args.output)[1].lower() not in OUTPUT_EXTENSIONS:
        parser.error(f"{args.output}: output must end in .tlg8")
    try:
        return _run(args, search)
    except Tlg8Error as e:                # the messages name the file themselves
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(args, search):
    from tqdm import tqdm

    times = {}
    start = time.perf_counter()
    samples, ncomp = read_image(args.image, args.pixel_format)
    height, width = samples.shape[:2]
    nblocks = len(block_grid(width, height))
    times["read"] = time.perf_counter() - start

    start = time.perf_counter()
    with tqdm(total=nblocks, unit="block", desc=f"{search} search", disable=args.quiet or None,
              file=sys.stderr) as bar:
        choices, bits, trials = choose_blocks(samples, search, args.model, args.max_trials,
                                              progress=bar.update, jobs=args.jobs)
    times["search"] = time.perf_counter() - start

    start = time.perf_counter()
    data = encode_tlg8(samples, choices)
    times["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    try:
        atomic_write(args.output, lambda tmp: _write_bytes(tmp, data))
    except OSError as e:
        raise EncodeError(f"{args.output}: cannot write ({e.strerror or e})") from None
    times["write"] = time.perf_counter() - start

    if args.stats:
        trials = _trials(samples, search, trials)
        total = sum(times.values())
        print(f"image          {args.image}: {width} x {height}, {ncomp} components")
        print(f"search         {search}")
        print(f"blocks         {nblocks}")
        print(f"trials/block   mean {trials.mean():.1f}, max {int(trials.max())}")
        print(f"estimated bits {int(bits.sum())} ({bits.sum() / 8:.0f} bytes)")
        print(f"file bytes     {len(data)}")
        print(f"time           {total:.2f} s: " + ", ".join(
            f"{k} {v:.2f}" for k, v in times.items())
              + f"; {1000 * times['search'] / nblocks:.3f} ms/block search")
    elif not args.quiet:
        print(f"{args.output}: {width} x {height}, {ncomp} components, {nblocks} blocks, "
              f"{len(data)} bytes ({search} search, {sum(times.values()):.2f} s)")
    return 0


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    sys.exit(main())
