"""Decode .tlg8 files to PNG or BMP.

    tlg8 decode FILE... [-o OUT.png|OUT.bmp | --out-dir DIR] [--format png|bmp]
                [--max-pixels N] [--quiet]
    python3 -m tlg8.decode IN.tlg8 OUT.png            (the same command)

Inputs are recognised by their header (any name, .tlg included). BMP output is 32-bit BGRA
when the file has 4 components and some A != 255, 24-bit otherwise (what the reference
writes); PNG output is RGBA or RGB by the same rule. Outputs default to the input's name
with .png (in --out-dir when given) and appear atomically. A bad input gets one error line
naming it and the reason; the others are still decoded; the exit status is then 1.
"""
import argparse
import os
import struct
import sys
import time

import numpy as np

from . import Tlg8Error, cli
from .codec import from_tlg8_order, read_file
from .fileio import atomic_write
from .tlgfile import MAX_PIXELS

FORMATS = {".png": "PNG", ".bmp": "BMP"}


def bmp_bytes(rgb):
    """The BMP file Pillow writes for an RGB or RGBA array (24-bit BGR, or 32-bit BGRA;
    bottom-up rows padded to 4 bytes; 96 dpi): importing and going through Pillow would
    cost a few tens of milliseconds of a decode command."""
    height, width, channels = rgb.shape
    order = [2, 1, 0, 3][:channels]
    stride = (width * channels + 3) & ~3
    rows = np.zeros((height, stride), np.uint8)
    rows[:, :width * channels] = rgb[::-1, :, order].reshape(height, -1)
    ppm = int(96 * 39.3701 + 0.5)
    header = b"BM" + struct.pack("<IIIIiiHHIIiiII", 54 + rows.size, 0, 54, 40, width, height,
                                 1, 8 * channels, 0, rows.size, ppm, ppm, 0, 0)
    return header, rows


def write_image(path, samples, ncomp):
    """Write TLG8 samples as PNG or BMP (by the extension of path), atomically; alpha only
    when some A != 255, as the reference writes."""
    fmt = FORMATS[os.path.splitext(path)[1].lower()]
    rgb = from_tlg8_order(samples, ncomp, keep_alpha=False)
    if fmt == "BMP":
        header, rows = bmp_bytes(rgb)

        def save(tmp):
            with open(tmp, "wb") as f:
                f.write(header)
                f.write(rows.data)
        atomic_write(path, save)
        return
    from PIL import Image

    image = Image.fromarray(rgb)
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def build_parser(prog):
    parser = argparse.ArgumentParser(prog=prog, description="Decode .tlg8 files to PNG or BMP.")
    parser.add_argument("inputs", nargs="+", metavar="FILE",
                        help=".tlg8 files; with exactly two arguments, a second one ending in "
                             ".png or .bmp is the output")
    parser.add_argument("-o", "--output", metavar="OUT", help="output image (one input only)")
    parser.add_argument("--out-dir", metavar="DIR", help="write each output here")
    parser.add_argument("--format", choices=("png", "bmp"), default="png",
                        help="format of default-named outputs (default png)")
    parser.add_argument("--max-pixels", type=cli.positive_int, default=MAX_PIXELS,
                        help=f"refuse images larger than this (default {MAX_PIXELS})")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    return parser


def main(argv=None, prog="python3 -m tlg8.decode"):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    jobs = cli.output_pairs(args, parser, tuple(FORMATS), "." + args.format)
    return cli.run(lambda: _run(args, jobs))


def _run(args, jobs):
    cli.prepare_outputs(args.out_dir, jobs)
    failed = 0
    with cli.progress(len(jobs), args.quiet, unit="file") as bar:
        for path, out in jobs:
            bar.set_description(os.path.basename(path))
            start = time.perf_counter()
            try:
                samples, ncomp, choices = read_file(path, args.max_pixels)
                try:
                    write_image(out, samples, ncomp)
                except OSError as e:
                    raise Tlg8Error(f"{out}: cannot write ({e.strerror or e})") from None
            except Tlg8Error as e:
                cli.error(e)
                failed += 1
            else:
                if not args.quiet:
                    height, width = samples.shape[:2]
                    bar.write(f"{out}: {width} x {height}, {ncomp} components, "
                              f"{len(choices)} blocks, {time.perf_counter() - start:.2f} s",
                              file=sys.stdout)
            bar.update(1)
    return cli.EXIT_ERROR if failed else 0


if __name__ == "__main__":
    status = main()
    cli.skip_final_collection()
    sys.exit(status)
