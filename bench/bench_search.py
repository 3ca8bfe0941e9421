"""Speed and memory of the reference search (the dump's work) on a photo.

    python3 bench/bench_search.py [IMAGE] [--blocks N] [--mode reference|exhaustive]

Prints blocks/s, ms per 8x8 block (the C++ reference: about 2.8 ms per block on this
machine class, whole process) and the peak resident memory of the process.
Default image: ../shared/data/images/img1.bmp (1024 x 1024).
"""
import argparse
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8.image import read_image  # noqa: E402
from tlg8.search import search_image  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", nargs="?",
                        default=os.path.join(os.path.dirname(ROOT), "shared", "data", "images",
                                             "img1.bmp"))
    parser.add_argument("--rows", type=int, default=0,
                        help="only the first N pixel rows (default: the whole image)")
    parser.add_argument("--mode", default="reference", choices=("reference", "exhaustive"))
    args = parser.parse_args()
    samples, _ = read_image(args.image)
    if args.rows:
        samples = samples[:args.rows]
    start = time.perf_counter()
    grid, _, _ = search_image(samples, args.mode)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{os.path.basename(args.image)} {samples.shape[1]}x{samples.shape[0]} "
          f"mode={args.mode}: {len(grid)} blocks in {seconds:.1f} s = "
          f"{len(grid) / seconds:.0f} blocks/s, {1e3 * seconds / len(grid):.2f} ms/block "
          f"(C++ reference ~2.8 ms/block); peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
