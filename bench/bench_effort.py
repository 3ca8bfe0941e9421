"""File bytes against encode time for every effort level, the reference and exhaustive searches.

    python3 bench/bench_effort.py [IMAGE...] [--model M.npz] [--exhaustive] [--plot FILE.png]

For each image (default: img3 and dko_sss, which the selector of the README's held-out
split never saw; pass --model out/selector/pair_selector.npz trained on dko_s, dko_t, img1,
img2), in one process and one run: the encoder's model search at each `--effort` level
(tlg8.codec.EFFORTS), our reference search (tlgconv's choices and bytes) and, with
--exhaustive, the exhaustive search (about 10x slower than the reference). Times are CPU
seconds of choosing the configurations and writing the file (image reading excluded).
Every file is decoded and compared with the pixels. Prints the table that goes into the
README; --plot draws the Pareto plot (needs matplotlib, an optional extra).
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8 import codec, selector  # noqa: E402
from tlg8.image import read_image  # noqa: E402
from tlg8.tlgfile import decode_tlg8  # noqa: E402

IMAGES = os.path.join(os.path.dirname(ROOT), "shared", "data", "images")


def measure(samples, search, model, effort):
    start = time.process_time()
    data = codec.encode_samples(samples, search, model, effort=effort)
    seconds = time.process_time() - start
    if not np.array_equal(decode_tlg8(data)[0], samples):
        sys.exit(f"{search} effort {effort}: the file does not decode to the pixels")
    return len(data), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*",
                        default=[os.path.join(IMAGES, n + ".bmp") for n in ("img3", "dko_sss")])
    parser.add_argument("--model", help="a pair selector NPZ (default: the shipped one)")
    parser.add_argument("--exhaustive", action="store_true", help="also the exhaustive search")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the Pareto plot")
    args = parser.parse_args()
    model = selector.load(args.model) if args.model else selector.default_model()
    points = [(f"effort {e}", "model", e) for e in codec.EFFORTS]
    points.append(("reference", "reference", codec.DEFAULT_EFFORT))
    if args.exhaustive:
        points.append(("exhaustive", "exhaustive", codec.DEFAULT_EFFORT))
    totals = {name: np.zeros(2) for name, _, _ in points}
    blocks = 0
    warm = read_image(args.images[0])[0][:40, :40]      # first calls build tables: not timed
    for _, search, effort in points:
        measure(warm, search, model, effort)
    for path in args.images:
        samples, _ = read_image(path)
        blocks += -(-samples.shape[0] // 8) * -(-samples.shape[1] // 8)
        for name, search, effort in points:
            totals[name] += measure(samples, search, model, effort)
        print(f"{os.path.basename(path)}: done", file=sys.stderr, flush=True)
    ref_bytes, ref_seconds = totals["reference"]
    print(f"{len(args.images)} images, {blocks} blocks; model "
          f"{model.metadata.get('images') or [d['file'] for d in model.metadata.get('data', [])]}")
    print("| search | trials/block | bytes | vs reference | CPU s | ms/block | x reference speed |")
    print("|---|---|---|---|---|---|---|")
    for name, search, effort in points:
        nbytes, seconds = totals[name]
        trials = codec.EFFORTS[effort][0] if search == "model" else "-"
        print(f"| {name} | {trials} | {int(nbytes)} | {100 * nbytes / ref_bytes:.2f} % | "
              f"{seconds:.1f} | {1e3 * seconds / blocks:.3f} | {ref_seconds / seconds:.1f} |")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, _, _ in points:
            nbytes, seconds = totals[name]
            ax.scatter(seconds, 100 * nbytes / ref_bytes)
            ax.annotate(name, (seconds, 100 * nbytes / ref_bytes), textcoords="offset points",
                        xytext=(4, 4))
        ax.set_xscale("log")
        ax.set_xlabel("CPU seconds (log)")
        ax.set_ylabel("file bytes, % of the reference search")
        ax.set_title(f"{', '.join(os.path.splitext(os.path.basename(p))[0] for p in args.images)}")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
