"""Fuzz the .tlg8 decoder: mutated files must decode or raise Tlg8FormatError.

    python3 bench/fuzz_decoder.py [--seconds 300] [--seed 0]

The long form of test_tlgfile_robustness.Fuzz: the same bases (files encoded by this
project, RGB and ARGB, plain and run-length rows) and the same mutations (bit flips,
overwrites, truncation, insertions, header sizes, side information, tile lengths), for as
long as asked. Prints the number of cases, the outcomes, the slowest case, every exception
that is not Tlg8FormatError (there should be none) and the peak memory.
"""
import argparse
import os
import random
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "test"))

from test_tlgfile_robustness import fuzz_bases, mutate  # noqa: E402
from tlg8.tlgfile import Tlg8FormatError, decode_tlg8  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    bases = fuzz_bases()
    outcomes = {"decoded": 0, "Tlg8FormatError": 0}
    foreign = {}
    slowest = 0.0
    start = time.perf_counter()
    cases = 0
    while time.perf_counter() - start < args.seconds:
        data = mutate(rnd.choice(bases), rnd)
        cases += 1
        t = time.perf_counter()
        try:
            decode_tlg8(data)
            outcomes["decoded"] += 1
        except Tlg8FormatError:
            outcomes["Tlg8FormatError"] += 1
        except Exception as e:                      # noqa: BLE001 - what we look for
            foreign.setdefault(type(e).__name__, (str(e)[:200], data.hex()[:400]))
        slowest = max(slowest, time.perf_counter() - t)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{cases} mutated files in {seconds:.0f} s: {outcomes}; slowest {slowest:.2f} s; "
          f"peak {peak:.0f} MB")
    print(f"other exceptions: {foreign or 'none'}")
    return 1 if foreign else 0


if __name__ == "__main__":
    sys.exit(main())
