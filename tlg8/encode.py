"""Encode PNG or BMP images to .tlg8 files.

    tlg8 encode IMAGE... [-o OUT.tlg8 | --out-dir DIR] [--search model|reference|exhaustive]
                [--model NPZ] [--max-trials 16] [--pixel-format auto] [--jobs N]
                [--stats] [--quiet]
    python3 -m tlg8.encode IMAGE OUT.tlg8 ...          (the same command)

Searches (tlg8.codec.encode_blocks): `model` (the default) uses the pair selector shipped
with the package, or the model file given with --model, at most --max-trials trials per
block; `reference` is the reference encoder's search (tlgconv's bytes); `exhaustive` tries
every configuration. Outputs default to the input's name with .tlg8 (in --out-dir when
given); .tlg is accepted too. Inputs are recognised by their header, not their name. Each
output appears atomically; a bad input gets one error line and the others are still
encoded; the exit status is then 1.
"""
import argparse
import os
import sys
import time

if __name__ == "__main__":
    from .cli import one_blas_thread
    one_blas_thread()                   # before NumPy starts its threads

import numpy as np

from . import Tlg8Error, cli, stages
from .codec import DEFAULT_EFFORT, EFFORTS, SEARCHES, EncodeError, encode_blocks
from .fileio import atomic_write
from .image import MAX_PIXELS, block_batches, block_grid, block_workspaces, read_image

OUTPUT_EXTENSIONS = (".tlg8", ".tlg")
CONFIGS_PER_PAIR = stages.N_REORDERS * stages.N_INTERLEAVES * stages.N_ENTROPIES


def reference_trials(samples, chunk=1024):
    """Configurations the reference search evaluates per block: (predictor, filter) pairs
    left by its 1.3 energy rule x 32 (reorder x interleave x entropy)."""
    from . import search as block_search
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
        from .search import N_CONFIGS
        return np.full(len(block_grid(samples.shape[1], samples.shape[0])), N_CONFIGS,
                       np.int64)
    return reference_trials(samples)


def build_parser(prog="tlg8 encode"):
    parser = argparse.ArgumentParser(
        prog=prog, description="Encode PNG or BMP images to .tlg8 files (lossless).")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE",
                        help="input images (PNG or BMP); with exactly two arguments, a second "
                             "one ending in .tlg8 or .tlg is the output")
    parser.add_argument("-o", "--output", metavar="OUT", help="output file (one input only)")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="write each output here, named after its input")
    parser.add_argument("--search", choices=SEARCHES, default="model",
                        help="model (default: the shipped pair selector, or --model), "
                             "reference (tlgconv's search and bytes), exhaustive")
    parser.add_argument("--model", metavar="NPZ",
                        help="a trained model (train_multitask.py) instead of the shipped one")
    parser.add_argument("--effort", type=int, choices=sorted(EFFORTS), default=DEFAULT_EFFORT,
                        help="model search: 1 (4 trials per block), 2 (8 + file-bytes pass), "
                             "3 (16 + pass, the default), 4 (16 + a longer pass), 5 (32 + the "
                             "longer pass)")
    parser.add_argument("--max-trials", type=cli.positive_int,
                        help="configurations tried per block by the model search (default: "
                             "the effort's)")
    parser.add_argument("--pixel-format", choices=("auto", "R8G8B8", "A8R8G8B8"),
                        default="auto", help="component count as tlgconv's option (default auto)")
    parser.add_argument("--max-pixels", type=cli.positive_int, default=MAX_PIXELS,
                        help=f"refuse larger images, checked from the header (default "
                             f"{MAX_PIXELS})")
    parser.add_argument("--jobs", type=cli.positive_int, default=1,
                        help="worker processes for the search, over bands of tile rows "
                             "(default 1; the file is the same for any value)")
    parser.add_argument("--stats", action="store_true",
                        help="print blocks, trials per block, estimated bits, file bytes, times")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    return parser


def main(argv=None, prog="python3 -m tlg8.encode"):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.model and args.search != "model":
        parser.error(f"--model is used by --search model, not {args.search}")
    jobs = cli.output_pairs(args, parser, OUTPUT_EXTENSIONS, ".tlg8")
    return cli.run(lambda: _run(args, jobs))


def _run(args, jobs):
    cli.prepare_outputs(args.out_dir, jobs)
    model = cli.load_model(args.model) if args.model else None
    failed = 0
    files = cli.progress(len(jobs), args.quiet or len(jobs) == 1, unit="file")
    for path, out in jobs:
        files.set_description(os.path.basename(path))
        try:
            _encode_one(path, out, args, model)
        except Tlg8Error as e:
            cli.error(e)
            failed += 1
        files.update(1)
    files.close()
    return cli.EXIT_ERROR if failed else 0


def _encode_one(path, out, args, model):
    times = {}
    start = time.perf_counter()
    samples, ncomp = read_image(path, args.pixel_format, max_pixels=args.max_pixels)
    height, width = samples.shape[:2]
    nblocks = len(block_grid(width, height))
    times["read"] = time.perf_counter() - start

    start = time.perf_counter()
    with cli.progress(nblocks, args.quiet, desc=f"{args.search} search", leave=False) as bar:
        data, choices, bits, trials = encode_blocks(samples, args.search, model,
                                                    args.max_trials, progress=bar.update,
                                                    jobs=args.jobs, effort=args.effort)
    times["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    try:
        atomic_write(out, lambda tmp: _write_bytes(tmp, data))
    except OSError as e:
        raise EncodeError(f"{out}: cannot write ({e.strerror or e})") from None
    times["write"] = time.perf_counter() - start

    if args.stats:
        trials = _trials(samples, args.search, trials)
        total = sum(times.values())
        print(f"image          {path}: {width} x {height}, {ncomp} components")
        print(f"search         {args.search}"
              + (f", effort {args.effort}" if args.search == "model" else ""))
        print(f"blocks         {nblocks}")
        print(f"trials/block   mean {trials.mean():.1f}, max {int(trials.max())}")
        print(f"estimated bits {int(bits.sum())} ({bits.sum() / 8:.0f} bytes)")
        print(f"file bytes     {len(data)}")
        print(f"time           {total:.2f} s: " + ", ".join(
            f"{k} {v:.2f}" for k, v in times.items())
              + f"; {1000 * times['encode'] / nblocks:.3f} ms/block")
    elif not args.quiet:
        print(f"{out}: {width} x {height}, {ncomp} components, {nblocks} blocks, "
              f"{len(data)} bytes ({args.search} search"
              + (f", effort {args.effort}" if args.search == "model" else "")
              + f", {sum(times.values()):.2f} s)")


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    sys.exit(main())
