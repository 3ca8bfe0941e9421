"""Decoder speed and memory on the shared reference files, against the C++ decoder.

    python3 bench/bench_decode.py [NAME...] [--repeat 3] [--skip-process]

For each NAME (default img1, img3, dko_s, dko_t; ../shared/data/tlgconv/NAME.tlg8):
tlgfile.read_tlg8 wall time (best of --repeat; CPU time beside it, since other jobs on the
machine inflate wall times), the peak of memory allocated during one decode (tracemalloc,
a separate run) minus the decoded image, and the ratio to the C++ reference decoder's
whole-process 0.26 s for a 1024 x 1024 photo (../shared/README.md), scaled by pixel count.
Then the whole process `python3 -m tlg8.decode .../img1.tlg8 OUT` for a .bmp and a .png
output, under /usr/bin/time -v when it exists (wall time and maximum resident set size).
The target is at most 4 times the C++ time.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8.tlgfile import read_tlg8  # noqa: E402

TLGCONV = os.path.join(os.path.dirname(ROOT), "shared", "data", "tlgconv")
CPP_SECONDS_1M = 0.26           # C++ decoder, whole process, 1024 x 1024 photo
MIB = 1 << 20


def decode_figures(path, repeat):
    """(width, height, best wall s, its CPU s, peak MiB above the decoded image)."""
    best = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        samples, _, _ = read_tlg8(path)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best[0]:
            best = (wall, cpu)
    tracemalloc.start()
    samples, _, _ = read_tlg8(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    height, width = samples.shape[:2]
    return width, height, best[0], best[1], (peak - samples.nbytes) / MIB


def whole_process(path, out):
    """(wall s, max RSS MiB or None) of `python3 -m tlg8.decode path out`."""
    command = [sys.executable, "-m", "tlg8.decode", path, out, "--quiet"]
    if os.path.exists("/usr/bin/time"):
        command = ["/usr/bin/time", "-v"] + command
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"decode failed: {result.stderr.strip()}")
    rss = None
    for line in result.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split()[-1]) / 1024
    return wall, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=["img1", "img3", "dko_s", "dko_t"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-process", action="store_true",
                        help="only the in-process figures")
    args = parser.parse_args()
    if not os.path.isdir(TLGCONV):
        print(f"skipped: reference files not found at {TLGCONV} (the shared/ folder beside "
              f"the repository)")
        return 0
    print(f"{'file':10s} {'size':>11s} {'wall s':>7s} {'cpu s':>6s} {'peak MiB':>9s} "
          f"{'C++ s':>6s} {'ratio':>6s}")
    for name in args.names:
        path = os.path.join(TLGCONV, name + ".tlg8")
        if not os.path.exists(path):
            print(f"{name:10s} skipped: {path} not found")
            continue
        width, height, wall, cpu, peak = decode_figures(path, args.repeat)
        cpp = CPP_SECONDS_1M * width * height / (1024 * 1024)
        print(f"{name:10s} {width:5d}x{height:<5d} {wall:7.2f} {cpu:6.2f} {peak:9.1f} "
              f"{cpp:6.2f} {wall / cpp:5.1f}x", flush=True)
    path = os.path.join(TLGCONV, "img1.tlg8")
    if args.skip_process or not os.path.exists(path):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for ext in (".bmp", ".png"):
            wall, rss = whole_process(path, os.path.join(tmp, "x" + ext))
            rss = f"{rss:.0f} MiB max RSS" if rss is not None else "max RSS not measured"
            print(f"python3 -m tlg8.decode img1.tlg8 x{ext}: {wall:.2f} s whole process, "
                  f"{rss}; {wall / CPP_SECONDS_1M:.1f}x the C++ decoder's "
                  f"{CPP_SECONDS_1M} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
