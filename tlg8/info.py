"""What is inside .tlg8 files: header, tiles, choice-stream modes, per-field histograms.

    tlg8 info FILE... [--json]

Per file: size, components, tile size and count, whether its Golomb table is the default
one or custom (fitted to the image), payload bytes; per choice stream (file spec §5.2,
§5.3) how many tiles code it Raw, SameAsPrevious or RunLength; per field (predictor, filter, reorder, interleave, entropy) a histogram of
the blocks' values. The file is decoded in full (the choices and a check that it is
valid); a bad file gets one error line and the others are still shown.
"""
import argparse
import json
import os
import sys

import numpy as np

from . import Tlg8Error, cli, stages
from .codec import read_file
from .tlgfile import MAX_PIXELS, STREAM_NAMES, read_header, tile_records

DEFAULT_TABLE = tuple((up, down, tuple(counts))
                      for up, down, counts in stages.DEFAULT_GOLOMB_TABLE)
MODE_NAMES = ("raw", "same-as-previous", "run-length")
FIELDS = ("predictor", "filter", "reorder", "interleave", "entropy")


def describe(path, max_pixels=MAX_PIXELS):
    """The numbers `tlg8 info` shows, as a dict (what --json writes)."""
    path = os.fspath(path)
    samples, ncomp, choices, data = read_file(path, max_pixels, keep_bytes=True)
    header = read_header(data)
    records = tile_records(data, max_pixels)
    modes = np.zeros((len(STREAM_NAMES), len(MODE_NAMES)), np.int64)
    for start, _ in records:
        bits = int.from_bytes(data[start:start + 2], "little")   # five 2-bit modes, LSB first
        for s in range(len(STREAM_NAMES)):
            modes[s, (bits >> (2 * s)) & 3] += 1
    payload = sum(length for _, length in records)
    return {
        "file": path, "bytes": os.path.getsize(path),
        "width": header["width"], "height": header["height"], "components": ncomp,
        "alpha": bool(ncomp == 4 and (samples[..., 0] != 255).any()),
        "tile": [header["tile_w"], header["tile_h"]], "tiles": len(records),
        # The reference always stores the default table; our encoder a fitted one.
        "golomb_table": "default" if header["golomb_table"] == DEFAULT_TABLE else "custom",
        "payload_bytes": payload, "blocks": len(choices),
        "stream_modes": {STREAM_NAMES[s]: dict(zip(MODE_NAMES, modes[s].tolist()))
                         for s in range(len(STREAM_NAMES))},
        "histograms": {name: np.bincount(choices[:, col]).tolist()
                       for name, col in zip(FIELDS, range(5))},
    }


def format_info(d):
    lines = [f"{d['file']}: TLG8, {d['width']} x {d['height']}, {d['components']} components"
             + (" (alpha)" if d["alpha"] else "") + f", {d['bytes']} bytes",
             f"  tiles        {d['tiles']} of {d['tile'][0]} x {d['tile'][1]}, Golomb table "
             f"{d['golomb_table']}, payload {d['payload_bytes']} bytes",
             f"  blocks       {d['blocks']}",
             "  stream modes (tiles): " + "; ".join(
                 f"{name} " + ", ".join(f"{m} {n}" for m, n in modes.items() if n)
                 for name, modes in d["stream_modes"].items())]
    for name, counts in d["histograms"].items():
        top = sorted(((n, v) for v, n in enumerate(counts) if n), reverse=True)
        shown = ", ".join(f"{v}: {n}" for n, v in top[:12])
        lines.append(f"  {name:<12} {shown}" + (f", ... ({len(top)} values)" if len(top) > 12
                                                 else ""))
    return "\n".join(lines)


def main(argv=None, prog="python3 -m tlg8.info"):
    parser = argparse.ArgumentParser(prog=prog, description="Show what is inside .tlg8 files.")
    parser.add_argument("inputs", nargs="+", metavar="FILE", help=".tlg8 files")
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    parser.add_argument("--max-pixels", type=cli.positive_int, default=MAX_PIXELS,
                        help=f"refuse images larger than this (default {MAX_PIXELS})")
    args = parser.parse_args(argv)

    def body():
        failed = 0
        for path in args.inputs:
            try:
                d = describe(path, args.max_pixels)
            except Tlg8Error as e:
                cli.error(e)
                failed += 1
                continue
            print(json.dumps(d) if args.json else format_info(d), flush=True)
        return cli.EXIT_ERROR if failed else 0

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
