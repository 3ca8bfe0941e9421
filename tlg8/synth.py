"""Deterministic synthetic test images, and the project's sample training dump.

    python3 -m tlg8.synth OUTDIR                 # write the images as PNG
    python3 -m tlg8.synth --sample data/sample.jsonl.gz

The images cover what the encoder meets in practice: smooth gradients, hard edges between
flat regions, sensor-like noise, text-like strokes, flat areas, a photo-like texture and an
image with varying alpha (C = 4). Sizes are not multiples of 8, so edge blocks occur, and
most images cross the tile row boundary at y = 80. Everything comes from a fixed seed, so running
this again reproduces data/sample.jsonl.gz exactly (a test checks it).
"""
import argparse
import os
import sys
import tempfile

import numpy as np

from .fileio import atomic_write

SEED = 20261125


def _clip(a):
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _with_alpha(rgb, alpha=None):
    alpha = np.full(rgb.shape[:2], 255, np.uint8) if alpha is None else alpha
    return np.concatenate([rgb, alpha[..., None]], axis=2)


def gradients(rng, w=203, h=170):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([x * 1.2 + y * 0.3, 255 - y * 1.4, (x + y) * 0.6 + 20], axis=2)
    return _with_alpha(_clip(rgb))


def edges(rng, w=197, h=128):
    rgb = np.full((h, w, 3), 230.0)
    for _ in range(40):                       # overlapping flat rectangles
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        x1, y1 = x0 + rng.integers(6, 40), y0 + rng.integers(6, 30)
        rgb[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    return _with_alpha(_clip(rgb))


def noise(rng, w=160, h=144):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([120 + 60 * np.sin(x / 11), 100 + 50 * np.cos(y / 9), 90 + x * 0.8], axis=2)
    return _with_alpha(_clip(base + rng.normal(0, 9, base.shape)))


def strokes(rng, w=240, h=112):
    """Dark strokes of a few pixels' width on paper, like scanned text."""
    rgb = np.full((h, w, 3), 245.0) + rng.normal(0, 2, (h, w, 3))
    y, x = np.mgrid[0:h, 0:w]
    for _ in range(160):
        cx, cy = rng.integers(0, w), rng.integers(0, h)
        angle = rng.uniform(0, np.pi)
        length, width = rng.integers(4, 14), rng.uniform(0.8, 1.8)
        dx, dy = np.cos(angle), np.sin(angle)
        along = (x - cx) * dx + (y - cy) * dy
        across = np.abs(-(x - cx) * dy + (y - cy) * dx)
        ink = (np.abs(along) <= length) & (across <= width)
        rgb[ink] = rng.integers(0, 70, 3)
    return _with_alpha(_clip(rgb))


def flat(rng, w=128, h=80):
    rgb = np.zeros((h, w, 3))
    rgb[:, : w // 2] = (40, 90, 200)
    rgb[:, w // 2:] = (250, 250, 250)
    rgb[h // 2:, w // 4: 3 * w // 4] = (0, 0, 0)
    return _with_alpha(_clip(rgb))


def alpha(rng, w=91, h=77):
    """Varying alpha, so the image is coded with C = 4 (A, R, G, B)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([x * 5, y * 6, 128 + 40 * np.sin((x + y) / 5)], axis=2)
    a = 255 - np.hypot(x - w / 2, y - h / 2) * 4.5
    return _with_alpha(_clip(rgb + rng.normal(0, 3, rgb.shape)), _clip(a))


def texture(rng, w=160, h=120):
    """Smooth random texture with fine grain, standing in for a photograph."""
    coarse = rng.normal(0, 1, (h // 8 + 2, w // 8 + 2, 3))
    y, x = np.mgrid[0:h, 0:w] / 8.0
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    smooth = (coarse[y0, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1, x0] * fy * (1 - fx)
              + coarse[y0, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1, x0 + 1] * fy * fx)
    rgb = 128 + 45 * smooth + rng.normal(0, 4, (h, w, 3))
    return _with_alpha(_clip(rgb))


GENERATORS = (gradients, edges, noise, strokes, flat, alpha, texture)


def make_images():
    """{name: RGBA uint8 (H, W, 4)} — the same arrays on every run."""
    rng = np.random.default_rng(SEED)
    return {gen.__name__: gen(rng) for gen in GENERATORS}


def write_images(directory):
    """Write the images as PNG files into `directory`; returns their paths in order."""
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, rgba in make_images().items():
        path = os.path.join(directory, name + ".png")
        image = Image.fromarray(rgba, "RGBA")
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
        paths.append(path)
    return paths


def write_sample(out, quiet=True):
    """Make data/sample.jsonl.gz: the dump CLI run over the synthetic images."""
    from . import dump

    with tempfile.TemporaryDirectory() as tmp:
        args = write_images(tmp) + ["--tag-basename", "--out", out]
        return dump.main(args + (["--quiet"] if quiet else []))


def main(argv=None, prog="python3 -m tlg8.synth"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", nargs="?", help="directory for the PNG images")
    parser.add_argument("--sample", metavar="OUT.jsonl.gz",
                        help="instead, write the sample training dump made from the images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.sample:
        return write_sample(args.sample, args.quiet)
    if not args.outdir:
        parser.error("give OUTDIR or --sample FILE")
    for path in write_images(args.outdir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
