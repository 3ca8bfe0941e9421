"""Write training records like the reference encoder's --tlg8-dump-training.

    python3 -m tlg8.dump IMAGE... --out FILE.jsonl[.gz] [--tag TAG | --tag-basename]
                         [--mode reference|exhaustive] [--jobs N] [--quiet]

One JSON line per 8x8 block, byte for byte what `tlgconv --tlg-version=8
--tlg8-dump-training=FILE --tlg8-training-tag=TAG` writes (spec tlg8_block_cost.md §8).
Records go to FILE (gzip-compressed when the name ends in .gz), written to a temporary
file and renamed, so an interrupted run leaves no truncated output.
"""
import argparse
import gzip
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext

import numpy as np

from . import Tlg8Error, cli
from .fileio import atomic_write, check_writable
from .image import MAX_PIXELS, block_batches, block_grid, block_workspaces, read_image
from .search import MODES, chunk_size, search_blocks

_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r",
            0x09: "\\t"}


def json_string(text):
    """A JSON string literal escaped like the reference: bytes >= 0x80 stay raw (UTF-8)."""
    out = []
    for ch in text:
        code = ord(ch)
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _candidate(row):
    p, f, r, i, e, bits = (int(v) for v in row)
    return (f'{{"predictor":{p},"filter":{f},"reorder":{r},"interleave":{i},'
            f'"entropy":{e},"bits":{bits}}}')


def format_records(tag, samples, grid, best, second):
    """The JSONL text (one line per block, '\\n'-terminated) of searched blocks."""
    height, width, ncomp = samples.shape
    head = f'{{"image":{json_string(tag)},"image_size":[{width},{height}],'
    lines = []
    for (ox, oy, bx, by, w, h), b, s in zip(grid.tolist(), best, second):
        pixels = ",".join(map(str, samples[by:by + h, bx:bx + w].ravel().tolist()))
        lines.append(f'{head}"tile_origin":[{ox},{oy}],"block_origin":[{bx},{by}],'
                     f'"block_size":[{w},{h}],"components":{ncomp},"pixels":[{pixels}],'
                     f'"best":{_candidate(b)},"second":{_candidate(s)}}}\n')
    return "".join(lines)


# --- parallel work units: (image, slice of blocks) so that --jobs helps one big image too

_worker_image = {}


def _search_part(path, pixel_format, mode, lo, hi, max_pixels=MAX_PIXELS):
    key = (path, pixel_format)
    if key not in _worker_image:
        _worker_image.clear()
        _worker_image[key] = read_image(path, pixel_format, max_pixels=max_pixels)[0]
    samples = _worker_image[key]
    grid = block_grid(samples.shape[1], samples.shape[0])[lo:hi]
    best = np.zeros((len(grid), 6), np.int64)
    second = np.zeros((len(grid), 6), np.int64)
    for index in block_batches(grid):
        best[index], second[index] = search_blocks(block_workspaces(samples, grid[index]), mode)
    return best, second


def _parts(n_blocks, mode):
    step = 8 * chunk_size(mode)
    return [(lo, min(n_blocks, lo + step)) for lo in range(0, n_blocks, step)]


def main(argv=None, prog="python3 -m tlg8.dump"):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write TLG8 training records (the reference encoder's "
                    "--tlg8-dump-training format) for BMP/PNG images.")
    parser.add_argument("images", nargs="+", help="24/32-bit BMP or PNG files")
    parser.add_argument("--out", required=True,
                        help="output JSONL file (gzip-compressed if it ends in .gz)")
    tags = parser.add_mutually_exclusive_group()
    tags.add_argument("--tag", help="the records' image field, like --tlg8-training-tag "
                                    "(default: the image path as given)")
    tags.add_argument("--tag-basename", action="store_true",
                      help="use each image's file name as its tag")
    parser.add_argument("--mode", choices=MODES, default="reference",
                        help="reference: the reference encoder's search with its 1.3 energy "
                             "early exit (default); exhaustive: the true minimum over all "
                             "24,576 configurations (about 10x slower)")
    parser.add_argument("--pixel-format", choices=("auto", "R8G8B8", "A8R8G8B8"),
                        default="auto", help="component count as the reference's option")
    parser.add_argument("--append", action="store_true",
                        help="append to --out (the reference opens its dump in append mode)")
    parser.add_argument("--jobs", type=cli.positive_int, default=1,
                        help="worker processes (default 1)")
    parser.add_argument("--max-pixels", type=cli.positive_int, default=MAX_PIXELS,
                        help=f"refuse larger images, checked from the header (default "
                             f"{MAX_PIXELS})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    return cli.run(lambda: _run(args))


def _run(args):
    check_writable(args.out)                 # before any work
    # Read every image once up front: a bad one is reported before any work is done.
    images = []
    failed = 0
    for path in args.images:
        try:
            samples, _ = read_image(path, args.pixel_format, max_pixels=args.max_pixels)
        except Tlg8Error as e:
            cli.error(e)
            failed += 1
            continue
        images.append((path, samples))
    if not images:
        cli.error("no image could be read; nothing written")
        return cli.EXIT_ERROR

    total = sum(s.shape[0] * s.shape[1] for _, s in images)
    n_blocks = sum(len(block_grid(s.shape[1], s.shape[0])) for _, s in images)
    written = 0

    def write(tmp):
        nonlocal written
        if args.append and os.path.exists(args.out):
            shutil.copyfile(args.out, tmp)
        with open(tmp, "ab") as raw:
            # filename="" and mtime=0: the same records always give the same .gz bytes.
            stream = (gzip.GzipFile(filename="", fileobj=raw, mode="ab", compresslevel=9,
                                    mtime=0) if args.out.endswith(".gz") else raw)
            with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else nullcontext() as pool:
                for path, samples in images:
                    tag = os.path.basename(path) if args.tag_basename else (args.tag or path)
                    grid = block_grid(samples.shape[1], samples.shape[0])
                    parts = _parts(len(grid), args.mode)
                    jobs = [(path, args.pixel_format, args.mode, lo, hi, args.max_pixels)
                            for lo, hi in parts]
                    results = (pool.map(_search_part, *zip(*jobs)) if pool
                               else (_search_part(*job) for job in jobs))
                    for (lo, hi), (best, second) in zip(parts, results):
                        stream.write(format_records(tag, samples, grid[lo:hi], best, second)
                                     .encode("utf-8", "surrogateescape"))
                        bar.update(hi - lo)
                        written += hi - lo
            stream.close()

    with cli.progress(n_blocks, args.quiet) as bar:
        atomic_write(args.out, write)
    print(f"{written} records from {len(images)} image(s) ({total} pixels) -> {args.out}"
          + (f"; {failed} image(s) failed" if failed else ""), file=sys.stderr)
    return cli.EXIT_ERROR if failed else 0


if __name__ == "__main__":
    sys.exit(main())
