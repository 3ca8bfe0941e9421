"""File size and whole-command encode time: the default encoder against the reference search.

    python3 bench/bench_encode.py [IMAGE...] [--model M.npz] [--max-trials 16] [--jobs N]
                                  [--skip-reference]

For each image (default: the shared photos img3 and dko_sss), in the same run and as whole
processes: `python3 -m tlg8.encode IMAGE OUT` (the shipped model, or --model) and
`python3 -m tlg8.encode IMAGE OUT --search reference` (our reference search: tlgconv's
bytes; compiled, 3-4x faster than the C++ encoder). Prints both sizes, the default's extra bytes (%),
both times, the speed-up over the reference search and over the C++ encoder's time on this
machine class where ../shared/README.md gives it, and checks that both files decode to the
image's pixels.

Photos that no shipped model has seen (the shipped model trains on every shared photo):
the ones scikit-image bundles, e.g.

    pip download --no-deps -d /tmp/skim scikit-image && unzip -j /tmp/skim/*.whl \
        'skimage/data/astronaut.png' 'skimage/data/coffee.png' 'skimage/data/chelsea.png' \
        'skimage/data/logo.png' -d /tmp/skim
    python3 bench/bench_encode.py /tmp/skim/*.png
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8.codec import read_file  # noqa: E402
from tlg8.image import block_grid, read_image  # noqa: E402

IMAGES = os.path.join(os.path.dirname(ROOT), "shared", "data", "images")
# Whole-process time of the C++ reference encoder per image (../shared/README.md).
CPP_SECONDS = {"dko_sss": 1.1, "dko_t": 8.7, "dko_s": 21.8, "img3": 24.1, "img1": 46.3,
               "img2": 63.6}


def encode(image, out, options):
    """(bytes, seconds) of one whole `python3 -m tlg8.encode` process."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tlg8.encode", image, out, "--quiet"]
                            + options, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"encode failed for {image}: {result.stderr.strip()}")
    return os.path.getsize(out), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*",
                        default=[os.path.join(IMAGES, n + ".bmp") for n in ("img3", "dko_sss")])
    parser.add_argument("--model", help="a trained model (default: the shipped one)")
    parser.add_argument("--max-trials", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=1, help="tlg8.encode --jobs (default 1)")
    parser.add_argument("--skip-reference", action="store_true",
                        help="only the default encode (no reference search, no ratios)")
    args = parser.parse_args()
    options = (["--model", args.model] if args.model else []) + [
        "--max-trials", str(args.max_trials), "--jobs", str(args.jobs)]
    print(f"{'image':14s} {'blocks':>7s} {'reference B':>12s} {'default B':>10s} {'extra':>8s} "
          f"{'ref s':>7s} {'default s':>9s} {'x ref':>6s} {'C++ s':>6s} {'x C++':>6s}")
    total = np.zeros(5)
    with tempfile.TemporaryDirectory() as tmp:
        for image in args.images:
            name = os.path.splitext(os.path.basename(image))[0]
            samples, _ = read_image(image)
            blocks = len(block_grid(samples.shape[1], samples.shape[0]))
            out = os.path.join(tmp, name + ".tlg8")
            model_bytes, seconds = encode(image, out, options)
            ok = np.array_equal(read_file(out)[0], samples)
            ref_bytes, ref_seconds = 0, 0.0
            if not args.skip_reference:
                ref = os.path.join(tmp, name + ".ref.tlg8")
                ref_bytes, ref_seconds = encode(image, ref, ["--search", "reference"])
                ok &= np.array_equal(read_file(ref)[0], samples)
            if not ok:
                sys.exit(f"{image}: a file does not decode to the image's pixels")
            cpp = CPP_SECONDS.get(name)
            extra = f"{100 * (model_bytes / ref_bytes - 1):+7.2f}%" if ref_bytes else "-"
            print(f"{name:14s} {blocks:7d} {ref_bytes:12d} {model_bytes:10d} {extra:>8s} "
                  f"{ref_seconds:7.1f} {seconds:9.2f} "
                  f"{ref_seconds / seconds if ref_bytes else 0:6.1f} {cpp or '-':>6} "
                  f"{cpp / seconds if cpp else 0:6.1f}", flush=True)
            total += (blocks, ref_bytes, model_bytes, ref_seconds, seconds)
    blocks, ref_bytes, model_bytes, ref_seconds, seconds = total
    if ref_bytes:
        print(f"{'TOTAL':14s} {int(blocks):7d} {int(ref_bytes):12d} {int(model_bytes):10d} "
              f"{100 * (model_bytes / ref_bytes - 1):+7.2f}% {ref_seconds:7.1f} {seconds:9.2f} "
              f"{ref_seconds / seconds:6.1f}")
    print("every file decodes to the image's pixels")


if __name__ == "__main__":
    main()
