"""Retrain the encoder's shipped model (tlg8/models/pair_selector.npz) and measure it.

    python3 bench/train_default_model.py [--out DIR] [--install]

Runs the documented command on the photos of ../shared/data/images (the project's only
training data besides its synthetic images, which did not help):

    python3 train_multitask.py --selector ../shared/data/images/{dko_s,dko_sss,dko_t,img1,img2,img3}.bmp --export-dir DIR

then prints what the model records (command, data with SHA-256) and how its weights compare
with the shipped file's. --install copies the new model over the shipped one. The same seed
and data give the same weights.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8 import selector  # noqa: E402

IMAGES = os.path.join(os.path.dirname(ROOT), "shared", "data", "images")
PHOTOS = ("dko_s", "dko_sss", "dko_t", "img1", "img2", "img3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="export directory (default: a temporary one)")
    parser.add_argument("--install", action="store_true",
                        help="copy the trained model to " + selector.DEFAULT_MODEL)
    args = parser.parse_args()
    if not os.path.isdir(IMAGES):
        sys.exit(f"needs the shared photos in {IMAGES}")
    out = args.out or tempfile.mkdtemp(prefix="tlg8-default-")
    images = [os.path.relpath(os.path.join(IMAGES, n + ".bmp"), ROOT) for n in PHOTOS]
    command = [sys.executable, "train_multitask.py", "--selector", *images, "--export-dir", out,
               "--quiet"]
    subprocess.run(command, cwd=ROOT, check=True)
    path = os.path.join(out, "pair_selector.npz")
    new = selector.load(path)
    print(json.dumps({k: new.metadata[k] for k in ("command", "data")}, indent=1))
    shipped = selector.default_model()
    same = all(np.array_equal(a, b) for a, b in zip(new.ranker + new.scan,
                                                    shipped.ranker + shipped.scan))
    print(f"weights identical to the shipped model: {same}")
    if args.install:
        shutil.copyfile(path, selector.DEFAULT_MODEL)
        print(f"installed {selector.DEFAULT_MODEL}")


if __name__ == "__main__":
    main()
