"""Fuzz the .tlg8 decoder: mutated files must decode or raise Tlg8FormatError.

    python3 bench/fuzz_decoder.py [--seconds 300] [--seed 0]

The long form of test_tlgfile_robustness.Fuzz: the same bases (files encoded by this
project, RGB and ARGB, plain and run-length rows) and the same mutations (bit flips,
overwrites, truncation, insertions, header sizes, side information, tile lengths), for as
long as asked. Prints which decoder ran (the compiled kernels when numba is installed,
TLG8_NO_JIT=1 for the NumPy one), the number of cases, the outcomes, the slowest case,
every exception that is not Tlg8FormatError (there should be none) and the peak memory.
test_decode_kernels compares the two decoders on such files.
"""
import argparse
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "test"))

from fuzzing import fuzz, report  # noqa: E402
from test_tlgfile_robustness import fuzz_bases, mutate  # noqa: E402
from tlg8 import jit  # noqa: E402
from tlg8.tlgfile import Tlg8FormatError, decode_tlg8  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    bases = fuzz_bases()
    print("decoder:", "compiled kernels (tlg8.decode_kernels)" if jit.available() else "NumPy")
    return report("mutated files", fuzz(lambda: mutate(rnd.choice(bases), rnd), decode_tlg8,
                                        Tlg8FormatError, args.seconds))


if __name__ == "__main__":
    sys.exit(main())
