"""Decode a .tlg8 file to PNG or BMP.

    python3 -m tlg8.decode IN.tlg8 OUT.png|OUT.bmp [--quiet] [--max-pixels N]

BMP output is 32-bit BGRA when the file has 4 components and some A != 255, 24-bit
otherwise (what the reference writes); PNG output is RGBA or RGB by the same rule. The
output appears atomically (temporary file + rename). Errors: one line on stderr naming the
file and the reason, exit status 1.
"""
import argparse
import os
import sys
import time

import numpy as np

from . import Tlg8Error
from .fileio import atomic_write
from .tlgfile import MAX_PIXELS, decode_tlg8

FORMATS = {".png": "PNG", ".bmp": "BMP"}


def to_rgb(samples, ncomp):
    """uint8 (H, W, 3|4) RGB or RGBA for writing: TLG8 order (A, R, G, B) -> (R, G, B, A);
    alpha is kept only when some A != 255."""
    if ncomp == 4 and (samples[..., 0] != 255).any():
        return np.ascontiguousarray(samples[..., [1, 2, 3, 0]])
    return np.ascontiguousarray(samples[..., -3:])


def write_image(path, samples, ncomp):
    """Write samples as PNG or BMP (by the extension of path), atomically."""
    from PIL import Image

    fmt = FORMATS[os.path.splitext(path)[1].lower()]
    image = Image.fromarray(to_rgb(samples, ncomp))
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m tlg8.decode", description="Decode a .tlg8 file to PNG or BMP.")
    parser.add_argument("input", help=".tlg8 file")
    parser.add_argument("output", help="output image, .png or .bmp")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"refuse images larger than this (default {MAX_PIXELS})")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    if os.path.splitext(args.output)[1].lower() not in FORMATS:
        parser.error(f"{args.output}: output must end in .png or .bmp")
    start = time.perf_counter()
    try:
        with open(args.input, "rb") as f:
            data = f.read()
    except OSError as e:
        print(f"error: {args.input}: cannot read ({e.strerror or e})", file=sys.stderr)
        return 1
    try:
        samples, ncomp, choices = decode_tlg8(data, max_pixels=args.max_pixels)
    except Tlg8Error as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 1
    try:
        write_image(args.output, samples, ncomp)
    except OSError as e:
        print(f"error: {args.output}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 1
    if not args.quiet:
        height, width = samples.shape[:2]
        print(f"{args.output}: {width} x {height}, {ncomp} components, {len(choices)} blocks, "
              f"{time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
