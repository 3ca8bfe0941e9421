""".tlg8 byte parity with the reference encoder's files in ../shared, for every image.

    python3 bench/parity_tlg8.py [NAME...] [--search]

For every NAME with images/NAME.bmp, tlgconv/NAME.tlg8 and tlgconv/NAME.jsonl.gz:
* encode: the image coded with the dump's `best` choices == tlgconv/NAME.tlg8, byte for byte;
* decode: tlgconv/NAME.tlg8 decodes to the image's pixels and to those choices;
* with --search also the whole path of `python3 -m tlg8.encode` (reference search, then
  the encoder) == tlgconv/NAME.tlg8 (slow: about 3 ms per block).
Prints one line per image with encode/decode seconds and a total; exit status 1 on any
mismatch. CI checks a subset (test/test_tlg8_parity.py).
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "test"))

import numpy as np  # noqa: E402

from shared_data import TLGCONV, parity_names  # noqa: E402
from test_tlg8_parity import reference_case  # noqa: E402
from tlg8.codec import choose_blocks  # noqa: E402
from tlg8.tlgfile import decode_tlg8, encode_tlg8  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="image names (default: all shared ones)")
    parser.add_argument("--search", action="store_true",
                        help="also encode with the reference search (slow)")
    args = parser.parse_args()
    names = args.names or [n for n in parity_names()
                           if os.path.exists(os.path.join(TLGCONV, n + ".tlg8"))]
    failures = 0
    totals = np.zeros(3)
    for name in names:
        samples, ncomp, choices, reference = reference_case(name)
        start = time.perf_counter()
        data = encode_tlg8(samples, choices)
        t_enc = time.perf_counter() - start
        start = time.perf_counter()
        out, got_ncomp, got_choices = decode_tlg8(reference)
        t_dec = time.perf_counter() - start
        checks = {
            "bytes": data == reference,
            "pixels": got_ncomp == ncomp and np.array_equal(out, samples),
            "choices": np.array_equal(got_choices, choices),
        }
        t_search = 0.0
        if args.search:
            start = time.perf_counter()
            searched, _, _ = choose_blocks(samples, "reference")
            checks["search"] = encode_tlg8(samples, searched) == reference
            t_search = time.perf_counter() - start
        ok = all(checks.values())
        failures += not ok
        totals += (t_enc, t_dec, t_search)
        height, width = samples.shape[:2]
        print(f"{name:22s} {width:5d} x {height:<5d} C={ncomp} {len(reference):8d} bytes  "
              + "  ".join(f"{k} {'ok' if v else 'MISMATCH'}" for k, v in checks.items())
              + f"  encode {t_enc:5.2f} s  decode {t_dec:5.2f} s"
              + (f"  search+encode {t_search:6.1f} s" if args.search else ""), flush=True)
    print(f"TOTAL {len(names) - failures} of {len(names)} files match; encode {totals[0]:.1f} s, "
          f"decode {totals[1]:.1f} s" + (f", search+encode {totals[2]:.1f} s" if args.search else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
