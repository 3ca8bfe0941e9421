"""Decoder speed and memory on the shared reference files, against the C++ decoder.

    python3 bench/bench_decode.py [NAME...] [--repeat 5] [--runs 5] [--skip-process]
                                  [--compile]

For each NAME (default img1, img3, dko_s, dko_t, dko_sss; ../shared/data/tlgconv/NAME.tlg8):

* in-process, both decoders in the same run: tlgfile.decode_tlg8 with the compiled kernels
  (tlg8.decode_kernels; only if numba is installed) and with NumPy, median wall time of
  --repeat decodes (CPU time beside it), their ratio, and the peak of memory allocated
  during one decode (tracemalloc) minus the decoded image;
* the whole process `python3 -m tlg8 decode NAME.tlg8 OUT.bmp --quiet`, median wall time
  of --runs runs (the files taking turns) and the largest maximum resident set size
  (/usr/bin/time -v), against
  the C++ reference decoder's whole-process 0.26 s for a 1024 x 1024 photo
  (../shared/README.md) scaled by pixel count (its 11 MiB peak is not scaled); for img1
  also to .png, and with TLG8_NO_JIT=1 (the NumPy decoder);
* --compile: the first run after an install, which compiles the kernels (numba's cache
  in an empty NUMBA_CACHE_DIR), then a run from that cache.

The target is at most 4 times the C++ time. The development machine is shared: compare
figures of one run (ratios), not across runs.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8 import jit  # noqa: E402
from tlg8.tlgfile import decode_tlg8, read_tlg8_bytes  # noqa: E402

TLGCONV = os.path.join(os.path.dirname(ROOT), "shared", "data", "tlgconv")
CPP_SECONDS_1M = 0.26           # C++ decoder, whole process, 1024 x 1024 photo
MIB = 1 << 20


def in_process(data, compiled, repeat):
    """(median wall s, median CPU s, peak MiB above the decoded image) of decode_tlg8."""
    decode_tlg8(data, compiled=compiled)            # compile or load the kernels first
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        decode_tlg8(data, compiled=compiled)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    tracemalloc.start()
    samples, _, _ = decode_tlg8(data, compiled=compiled)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(walls), statistics.median(cpus), (peak - samples.nbytes) / MIB


def whole_process(path, out, env=None):
    """(wall s, max RSS MiB or None) of `python3 -m tlg8 decode path out --quiet`."""
    command = [sys.executable, "-m", "tlg8", "decode", path, out, "--quiet"]
    if os.path.exists("/usr/bin/time"):
        command = ["/usr/bin/time", "-v"] + command
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env=None if env is None else {**os.environ, **env})
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"decode failed: {result.stderr.strip()}")
    rss = None
    for line in result.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split()[-1]) / 1024
    return wall, rss


def process_figures(cases, runs):
    """(median wall s, largest max RSS MiB or None) of `runs` whole processes of each
    case (path, out, env). The cases take turns, so that a change of the machine's load
    shows in all of them rather than in one."""
    results = [[] for _ in cases]
    for _ in range(runs):
        for case, result in zip(cases, results):
            result.append(whole_process(*case))
    figures = []
    for result in results:
        rss = [r for _, r in result if r is not None]
        figures.append((statistics.median(w for w, _ in result), max(rss) if rss else None))
    return figures


def megapixels(data):
    from tlg8.tlgfile import read_header
    header = read_header(data)
    return header["width"], header["height"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=["img1", "img3", "dko_s", "dko_t",
                                                     "dko_sss"])
    parser.add_argument("--repeat", type=int, default=5, help="in-process decodes")
    parser.add_argument("--runs", type=int, default=5, help="whole processes per file")
    parser.add_argument("--skip-process", action="store_true",
                        help="only the in-process figures")
    parser.add_argument("--compile", action="store_true",
                        help="also time the first run, which compiles the kernels")
    args = parser.parse_args()
    if not os.path.isdir(TLGCONV):
        print(f"skipped: reference files not found at {TLGCONV} (the shared/ folder beside "
              f"the repository)")
        return 0
    kernels = jit.available()
    if not kernels:
        print("compiled kernels not in use (numba not installed or TLG8_NO_JIT set): "
              "NumPy figures only")
    paths = {}
    for name in args.names:
        path = os.path.join(TLGCONV, name + ".tlg8")
        if os.path.exists(path):
            paths[name] = path
        else:
            print(f"{name}: skipped, {path} not found")

    print(f"\nin-process decode_tlg8, median of {args.repeat} (wall s / CPU s / peak MiB "
          f"above the image)")
    print(f"{'file':8s} {'size':>10s} {'kernels':>24s} {'NumPy':>24s} {'NumPy/kernels':>14s}")
    for name, path in paths.items():
        data = read_tlg8_bytes(path)
        width, height = megapixels(data)
        numpy = in_process(data, False, args.repeat)
        fast = in_process(data, True, args.repeat) if kernels else None
        cols = [f"{x[0]:7.3f} {x[1]:7.3f} {x[2]:7.1f}" if x else f"{'-':>23s}"
                for x in (fast, numpy)]
        ratio = f"{numpy[0] / fast[0]:13.1f}x" if fast else ""
        print(f"{name:8s} {f'{width}x{height}':>10s} {cols[0]:>24s} {cols[1]:>24s} {ratio}",
              flush=True)

    if args.compile and kernels:
        path = paths.get("img1") or next(iter(paths.values()))
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "x.bmp")
            env = {"NUMBA_CACHE_DIR": os.path.join(tmp, "cache")}
            first, _ = whole_process(path, out, env)
            cached, _ = whole_process(path, out, env)
        print(f"\nfirst run after an install (compiles the kernels): {first:.2f} s whole "
              f"process; the next run, from the cache: {cached:.2f} s")

    if args.skip_process:
        return 0
    print(f"\nwhole process `python3 -m tlg8 decode NAME.tlg8 OUT --quiet`, median of "
          f"{args.runs} runs; C++: {CPP_SECONDS_1M} s per 1024 x 1024, scaled by pixels")
    print(f"{'file':8s} {'output':12s} {'wall s':>7s} {'max RSS MiB':>12s} {'C++ s':>6s} "
          f"{'x C++':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(name, ".bmp", None) for name in paths]
        if "img1" in paths:
            cases += [("img1", ".png", None)]
            if kernels:
                cases += [("img1", ".bmp", {"TLG8_NO_JIT": "1"})]
        figures = process_figures([(paths[name], os.path.join(tmp, "x" + ext), env)
                                   for name, ext, env in cases], args.runs)
        for (name, ext, env), (wall, rss) in zip(cases, figures):
            width, height = megapixels(read_tlg8_bytes(paths[name]))
            cpp = CPP_SECONDS_1M * width * height / (1024 * 1024)
            what = ext[1:] + (" NumPy" if env else "")
            rss = f"{rss:12.0f}" if rss is not None else f"{'-':>12s}"
            print(f"{name:8s} {what:12s} {wall:7.2f} {rss} {cpp:6.3f} {wall / cpp:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
