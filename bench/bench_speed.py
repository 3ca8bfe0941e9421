"""Speed against the reference encoder and decoder, whole processes, one run.

    python3 bench/bench_speed.py [--photos img1,img3,...] [--repeat 3] [--skip-reference]
                                 [--compile-cost]

Per shared photo, each command run --repeat times (medians printed; the machine is shared,
so single runs vary by +-30 %), all in one run:
* decode: `python3 -m tlg8 decode NAME.tlg8 OUT.png` (the reference encoder's file), wall
  time and peak memory, against the C++ decoder's 0.26 s for a 1024x1024 photo (scaled by
  pixels; ../shared/README.md);
* default encode: `python3 -m tlg8 encode IMAGE OUT.tlg8` with --jobs 1 and --jobs 2,
  taking turns, and the serial fraction implied by the two (Amdahl: s = 2 t2 / t1 - 1,
  start-up included);
  "after start": the same fraction of what follows the start-up t0 (the whole command on
  an image of one block, flat.bmp: interpreter, NumPy, package, model and kernels),
  2 (t2 - t0) / (t1 - t0) - 1; "top serial": the largest serial stage of the --jobs 2
  encode (bench_timeline.py: the moments when one process works, by what it does then)
  as a share of that encode's time, and which stage it is; peak memory of the --jobs 1
  process;
* our reference search, `--search reference`;
and every ratio against the C++ figures of ../shared/README.md (whole-process times of
the reference encoder, exhaustive search included): "x C++" is how many times faster
than the C++ program (below 1: slower).
--compile-cost: before the table, the first default encode of dko_sss with an empty
kernel cache (TLG8_CACHE_DIR, a temporary directory), which builds the compiled kernels
(tlg8.jit), against a second run that loads them.
Peak memory is the child's maximum resident set (getrusage), so it includes the
interpreter and NumPy (~35 MB).
Children run with Python's bytecode caches (compiled modules kept in a temporary
PYTHONPYCACHEPREFIX, after one warm-up run), as an installed package has them;
--no-bytecode-cache keeps the environment as it is (with PYTHONDONTWRITEBYTECODE=1 every
command first compiles the package's modules, about 0.12 s here).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import bench_timeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
CPP_ENCODE = {"dko_sss": 1.1, "dko_t": 8.7, "dko_s": 21.8, "img3": 24.1, "img1": 46.3,
              "img2": 63.6}
CPP_DECODE_1M = 0.26          # seconds for a 1024 x 1024 photo


ENV = None                    # the children's environment (main sets it)


def run(args, env=None):
    """(wall seconds, peak RSS MB) of one child process (os.wait4: that child's own)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m"] + args, cwd=ROOT, env=env or ENV,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            sys.exit(f"failed: {' '.join(args)}: {err.read().decode().strip()}")
    return seconds, usage.ru_maxrss / 1024


def median_run(args, repeat, env=None):
    """(median wall seconds, largest peak MB) of `repeat` runs."""
    return median_runs([args], repeat, env)[0]


def median_runs(commands, repeat, env=None):
    """median_run of each command, the commands taking turns (a slow spell of the shared
    machine then falls on all of them, not on one)."""
    runs = [[] for _ in commands]
    for _ in range(repeat):
        for args, out in zip(commands, runs):
            out.append(run(args, env))
    return [(statistics.median(r[0] for r in out), max(r[1] for r in out)) for out in runs]


def compile_cost(tmp):
    """First run with an empty kernel cache, then a run that loads the built kernels."""
    image = os.path.join(SHARED, "images", "dko_sss.bmp")
    env = dict(ENV or os.environ, TLG8_CACHE_DIR=os.path.join(tmp, "kernels"))
    args = ["tlg8", "encode", image, os.path.join(tmp, "c.tlg8"), "--quiet"]
    first, _ = run(args, env)
    second, _ = run(args, env)
    print(f"compiled kernels: first run with an empty cache {first:.1f} s, then {second:.2f} s"
          f" (the build: {first - second:.1f} s, once per install and kernel version)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="dko_sss,dko_t,dko_s,img3,img1,img2")
    parser.add_argument("--repeat", type=int, default=1, help="runs per command (medians)")
    parser.add_argument("--skip-reference", action="store_true",
                        help="no reference search (the slow part)")
    parser.add_argument("--compile-cost", action="store_true",
                        help="also measure the first run's build of the compiled kernels")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run the children in this environment as it is")
    args = parser.parse_args()
    global ENV
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_bytecode_cache:
            ENV = dict(os.environ, PYTHONPYCACHEPREFIX=os.path.join(tmp, "pycache"))
            ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        # Warm-up: writes the bytecode caches and, on a new install, builds the compiled
        # kernels of both commands (--compile-cost measures that build).
        run(["tlg8", "encode", os.path.join(SHARED, "images", "flat.bmp"),
             os.path.join(tmp, "w.tlg8"), "--quiet"])
        run(["tlg8", "decode", os.path.join(tmp, "w.tlg8"), os.path.join(tmp, "w.png"),
             "--quiet"])
        if args.compile_cost:
            compile_cost(tmp)
        start, _ = median_run(["tlg8", "encode", os.path.join(SHARED, "images", "flat.bmp"),
                               os.path.join(tmp, "w.tlg8"), "--quiet"], args.repeat)
        print(f"start-up (encode of a one-block image): {start:.3f} s")
        print(f"{'photo':8s} {'pixels':>8s} | {'decode s':>8s} {'/C++':>5s} {'MB':>4s} | "
              f"{'enc j1 s':>8s} {'MB':>4s} {'x C++':>6s} | {'enc j2 s':>8s} {'x C++':>6s} "
              f"{'serial':>6s} {'after':>5s} {'top serial':>19s} | {'ref s':>6s} {'x C++':>6s} | {'C++ s':>5s} {'j1 x ref':>8s}")
        for name in args.photos.split(","):
            image = os.path.join(SHARED, "images", name + ".bmp")
            reference_file = os.path.join(SHARED, "tlgconv", name + ".tlg8")
            from PIL import Image
            with Image.open(image) as im:
                pixels = im.size[0] * im.size[1]
            dec_s, dec_mb = median_run(["tlg8", "decode", reference_file,
                                        os.path.join(tmp, "d.png"), "--quiet"], args.repeat)
            cpp_dec = CPP_DECODE_1M * pixels / (1024 * 1024)
            out = os.path.join(tmp, "e.tlg8")
            (enc1, enc_mb), (enc2, _) = median_runs(
                [["tlg8", "encode", image, out, "--quiet"],
                 ["tlg8", "encode", image, out, "--quiet", "--jobs", "2"]], args.repeat)
            serial = max(0.0, min(1.0, 2 * enc2 / enc1 - 1))
            after = max(0.0, min(1.0, 2 * (enc2 - start) / (enc1 - start) - 1))
            wall, stages, _ = bench_timeline.profile(image, 2, repeat=args.repeat, env=ENV)
            top = max(stages, key=stages.get)
            top_serial = f"{100 * stages[top] / wall:4.1f} % {bench_timeline.LABELS[top][:12]}"
            ref = 0.0
            if not args.skip_reference:
                ref, _ = median_run(["tlg8", "encode", image, out, "--quiet", "--search",
                                     "reference"], args.repeat)
            cpp = CPP_ENCODE.get(name, 0)

            def times(ours):
                return f"{cpp / ours:6.1f}" if cpp and ours else f"{'-':>6s}"
            print(f"{name:8s} {pixels:8d} | {dec_s:8.2f} {dec_s / cpp_dec:5.1f} {dec_mb:4.0f} | "
                  f"{enc1:8.2f} {enc_mb:4.0f} {times(enc1)} | {enc2:8.2f} {times(enc2)} "
                  f"{serial:6.2f} {after:5.2f} {top_serial:>19s} | {ref:6.1f} {times(ref)} | {cpp:5.1f} "
                  f"{ref / enc1 if ref else 0:8.1f}", flush=True)
    print("/C++ (decode): times slower than the C++ decoder; x C++ (encode): times faster "
          "than the C++ encoder's whole process; j1 x ref: the default encode's speed-up "
          "over our reference search; serial: Amdahl fraction from --jobs 1 vs 2, after: "
          "the same after the start-up; top serial: the --jobs 2 encode's largest serial "
          "stage (bench_timeline.py) "
          f"(medians of {args.repeat} run(s) each; "
          f"{'no bytecode caches' if args.no_bytecode_cache else 'with bytecode caches'})")


if __name__ == "__main__":
    main()
