"""File size and encode time of the model path against the reference search.

    python3 bench/bench_encode.py [--model M.npz] [IMAGE...] [--max-trials 16] [--jobs N]
                                  [--skip-reference]

For each image (default: the shared photos img3 and dko_sss, held out by the shipped
evaluation split): the .tlg8 file from the reference search (what tlgconv writes) and
the file from `python3 -m tlg8.encode` (the shipped model, or --model) as a whole process. Prints both sizes, the
model's extra bytes (%), the model command's wall time and its speed-up over the C++
reference encoder's whole-process time on this machine class (../shared/README.md).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8.image import block_grid, read_image  # noqa: E402
from tlg8.search import search_image  # noqa: E402
from tlg8.tlgfile import encode_tlg8  # noqa: E402

IMAGES = os.path.join(os.path.dirname(ROOT), "shared", "data", "images")
# Whole-process time of the C++ reference encoder per image (../shared/README.md).
CPP_SECONDS = {"dko_sss": 1.1, "dko_t": 8.7, "dko_s": 21.8, "img3": 24.1, "img1": 46.3,
               "img2": 63.6}


def encode_with_model(image, model, max_trials, out, jobs):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tlg8.encode", image, out]
                            + (["--model", model] if model else [])
                            + ["--max-trials", str(max_trials), "--jobs", str(jobs), "--quiet"],
                            cwd=ROOT,
                            capture_output=True, text=True)
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
                        help="only the model encode (no reference search, no size ratio)")
    args = parser.parse_args()
    print(f"{'image':10s} {'blocks':>7s} {'reference B':>12s} {'model B':>10s} {'extra':>8s} "
          f"{'model s':>8s} {'ms/block':>8s} {'C++ s':>6s} {'speed-up':>8s}")
    totals = [0, 0, 0, 0.0, 0.0]
    with tempfile.TemporaryDirectory() as tmp:
        for image in args.images:
            name = os.path.splitext(os.path.basename(image))[0]
            samples, _ = read_image(image)
            blocks = len(block_grid(samples.shape[1], samples.shape[0]))
            model_bytes, seconds = encode_with_model(image, args.model, args.max_trials,
                                                     os.path.join(tmp, name + ".tlg8"), args.jobs)
            ref_bytes = 0
            if not args.skip_reference:
                _, best, _ = search_image(samples)
                ref_bytes = len(encode_tlg8(samples, best[:, :5]))
            cpp = CPP_SECONDS.get(name)
            extra = f"{100 * (model_bytes / ref_bytes - 1):+7.2f}%" if ref_bytes else "-"
            speed = f"{cpp / seconds:7.1f}x" if cpp else "-"
            print(f"{name:10s} {blocks:7d} {ref_bytes:12d} {model_bytes:10d} {extra:>8s} "
                  f"{seconds:8.2f} {1e3 * seconds / blocks:8.3f} {cpp or '-':>6} {speed:>8s}",
                  flush=True)
            totals = [totals[0] + blocks, totals[1] + ref_bytes, totals[2] + model_bytes,
                      totals[3] + seconds, totals[4] + (cpp or 0)]
    blocks, ref_bytes, model_bytes, seconds, cpp = totals
    if ref_bytes:
        print(f"{'TOTAL':10s} {blocks:7d} {ref_bytes:12d} {model_bytes:10d} "
              f"{100 * (model_bytes / ref_bytes - 1):+7.2f}% {seconds:8.2f} "
              f"{1e3 * seconds / blocks:8.3f} {cpp:6.1f} {cpp / seconds:7.1f}x")


if __name__ == "__main__":
    main()
