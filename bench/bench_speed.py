"""Speed against the reference encoder and decoder, whole processes, one run.

    python3 bench/bench_speed.py [--photos img1,img3,...] [--skip-reference]

Prints, per shared photo:
* decode: `python3 -m tlg8.decode NAME.tlg8 OUT.png` (the reference encoder's file) wall
  time and peak memory, against the C++ decoder's 0.26 s for a 1024x1024 photo (scaled by
  pixels; ../shared/README.md);
* default encode: `python3 -m tlg8.encode IMAGE OUT.tlg8` with --jobs 1 and --jobs 2, and the
  serial fraction implied by the two (Amdahl: s = (2 t2 / t1 - 1)); peak memory;
* our reference search, `--search reference`, in the same run, and the C++ encoder's time
  from ../shared/README.md; the default encode's speed-up over both.
Peak memory is the child's maximum resident set (getrusage), so it includes the
interpreter and NumPy (~35 MB).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
CPP_ENCODE = {"dko_sss": 1.1, "dko_t": 8.7, "dko_s": 21.8, "img3": 24.1, "img1": 46.3,
              "img2": 63.6}
CPP_DECODE_1M = 0.26          # seconds for a 1024 x 1024 photo


def run(args):
    """(wall seconds, peak RSS MB) of one child process (os.wait4: that child's own)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m"] + args, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            sys.exit(f"failed: {' '.join(args)}: {err.read().decode().strip()}")
    return seconds, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="dko_sss,dko_t,dko_s,img3,img1,img2")
    parser.add_argument("--skip-reference", action="store_true",
                        help="no reference search (the slow part)")
    args = parser.parse_args()
    print(f"{'photo':8s} {'pixels':>8s} {'decode s':>8s} {'x C++':>6s} {'MB':>5s} "
          f"{'enc j1 s':>8s} {'MB':>5s} {'enc j2 s':>8s} {'serial':>6s} {'ref s':>7s} "
          f"{'C++ s':>6s} {'x ref':>6s} {'x C++':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.photos.split(","):
            image = os.path.join(SHARED, "images", name + ".bmp")
            reference_file = os.path.join(SHARED, "tlgconv", name + ".tlg8")
            from PIL import Image
            with Image.open(image) as im:
                pixels = im.size[0] * im.size[1]
            dec_s, dec_mb = run(["tlg8.decode", reference_file, os.path.join(tmp, "d.png"),
                                 "--quiet"])
            cpp_dec = CPP_DECODE_1M * pixels / (1024 * 1024)
            out = os.path.join(tmp, "e.tlg8")
            enc1, enc_mb = run(["tlg8.encode", image, out, "--quiet"])
            enc2, _ = run(["tlg8.encode", image, out, "--quiet", "--jobs", "2"])
            serial = max(0.0, min(1.0, 2 * enc2 / enc1 - 1))
            ref = 0.0
            if not args.skip_reference:
                ref, _ = run(["tlg8.encode", image, out, "--quiet", "--search", "reference"])
            cpp = CPP_ENCODE.get(name, 0)
            print(f"{name:8s} {pixels:8d} {dec_s:8.2f} {dec_s / cpp_dec:6.1f} {dec_mb:5.0f} "
                  f"{enc1:8.2f} {enc_mb:5.0f} {enc2:8.2f} {serial:6.2f} {ref:7.1f} "
                  f"{cpp:6.1f} {ref / enc1 if ref else 0:6.1f} {cpp / enc1:6.1f}", flush=True)
    print("x C++ (decode): times slower than the C++ decoder; x ref / x C++ (encode): times "
          "faster than our reference search / the C++ encoder; serial: Amdahl fraction from "
          "--jobs 1 vs 2")


if __name__ == "__main__":
    main()
