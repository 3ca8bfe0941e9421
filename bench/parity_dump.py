"""Whole-image parity of the dump CLI with the reference encoder's dumps in ../shared.

    python3 bench/parity_dump.py [NAME...] [--jobs N]

For every shared image (or the named ones) it dumps all blocks with the reference search
and compares the JSONL with data/tlgconv/NAME.jsonl.gz byte for byte; prints one line per
image (records, mismatching lines, seconds, ms per block) and a total. CI checks a sample
of the photos' blocks (test/test_search.py); this checks every block.
"""
import argparse
import gzip
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "test"))

from shared_data import IMAGES, TLGCONV, parity_names  # noqa: E402
from tlg8 import dump  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="image names (default: all shared ones)")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    names = args.names or parity_names()
    total_records = total_bad = 0
    total_time = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = os.path.join(tmp, name + ".jsonl")
            start = time.perf_counter()
            status = dump.main([os.path.join(IMAGES, name + ".bmp"), "--tag", name + ".bmp",
                                "--out", out, "--jobs", str(args.jobs), "--quiet"])
            seconds = time.perf_counter() - start
            with open(out, "rb") as f:
                ours = f.read().splitlines()
            with gzip.open(os.path.join(TLGCONV, name + ".jsonl.gz"), "rb") as f:
                theirs = f.read().splitlines()
            bad = sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
            total_records += len(theirs)
            total_bad += bad
            total_time += seconds
            print(f"{name:22s} records {len(theirs):6d}  mismatches {bad:4d}  status {status}  "
                  f"{seconds:7.1f} s  {1e3 * seconds / max(1, len(theirs)):6.2f} ms/block",
                  flush=True)
    print(f"TOTAL records {total_records}  mismatches {total_bad}  {total_time:.1f} s "
          f"(--jobs {args.jobs})")
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())
