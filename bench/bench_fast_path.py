"""Speed of the whole fast path: image -> blocks -> features -> model -> <= 16 trials.

    python3 bench/bench_fast_path.py [IMAGE] --model SELECTOR.npz [--max-trials 16]
                                     [--repeat 3] [--chunk 2048]

For every block of the image (default ../shared/data/images/img1.bmp, 1024 x 1024):
cut the padded workspaces (tlg8.image), compute the cost-model statistics and the two
models' features (tlg8.features), run the pair ranker and the scan model (one batched call
each per chunk of blocks of one size), then at most --max-trials exact trials per block in
two batched rounds (tlg8.cost.block_configs_bits) and take the best: the chosen
configurations and their bits. Prints ms per block (best of --repeat runs, wall clock and
process CPU time) and its split; the target is <= 0.28 ms per 8x8 block, against ~2.8 ms
for the C++ reference encoder and ~4 ms for tlg8.search (reference mode) here.
Reading the file is reported apart. A busy machine (other jobs) inflates wall times.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8 import selector  # noqa: E402
from tlg8.image import read_image  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", nargs="?",
                        default=os.path.join(os.path.dirname(ROOT), "shared", "data", "images",
                                             "img1.bmp"))
    parser.add_argument("--model", help="pair selector NPZ (default: the shipped one)")
    parser.add_argument("--max-trials", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=2048, help="blocks per batch")
    parser.add_argument("--profile", action="store_true", help="cProfile one run (stderr)")
    args = parser.parse_args()
    start = time.perf_counter()
    samples, _ = read_image(args.image)
    read_s = time.perf_counter() - start
    model = selector.load(args.model) if args.model else selector.default_model()
    runs = []
    for _ in range(args.repeat):
        timings = {}
        wall = time.perf_counter()
        cpu = time.process_time()
        sel = model.choose_image(samples, args.max_trials, timings=timings, chunk=args.chunk)
        grid, bits, trials = sel["grid"], sel["bits"], sel["trials"]
        runs.append((time.perf_counter() - wall, time.process_time() - cpu, timings))
    wall, cpu, timings = min(runs, key=lambda r: r[0])
    n = len(grid)
    print(f"{os.path.basename(args.image)} {samples.shape[1]}x{samples.shape[0]}: {n} blocks, "
          f"max {trials.max()} trials/block (mean {trials.mean():.2f}), "
          f"{bits.sum()} bits chosen")
    print(f"fast path: {1e3 * wall / n:.3f} ms/block wall (best of {args.repeat}), "
          f"{1e3 * cpu / n:.3f} ms/block CPU, {n / wall:.0f} blocks/s; "
          f"target <= 0.28 ms/block; C++ reference ~2.8 ms/block")
    print("split (ms/block): " + ", ".join(f"{k} {1e3 * v / n:.3f}" for k, v in timings.items())
          + f"; reading the file {1e3 * read_s / n:.3f} (not included)")
    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.runcall(model.choose_image, samples, args.max_trials, chunk=args.chunk)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
