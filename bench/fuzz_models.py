"""Fuzz the model loader: mutated model NPZs must load or raise ModelFormatError.

    python3 bench/fuzz_models.py [--seconds 120] [--seed 0]

Starts from a multitask model and a pair selector written by this project and mutates them
(byte flips, truncations, zip members replaced by arrays of other shapes, dtypes or values,
NaN/inf, huge declared sizes). Prints the number of cases, the time, the outcomes and every
exception that is not the package's own (there should be none), and the peak memory.
"""
import argparse
import io
import os
import sys
import tempfile
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "test"))

from fuzzing import fuzz, report  # noqa: E402
from test_selector import random_selector  # noqa: E402
from tlg8.modelfile import ModelFormatError  # noqa: E402
from tlg8_multitask.loader import load_model  # noqa: E402
from tlg8_multitask.multitask import MultiTaskModel  # noqa: E402


def npy(value):
    out = io.BytesIO()
    np.save(out, value, allow_pickle=False)
    return out.getvalue()


def mutate(data, rng):
    kind = rng.integers(4)
    if kind == 0:                                        # flip bytes
        b = bytearray(data)
        for _ in range(rng.integers(1, 9)):
            b[rng.integers(len(b))] ^= 1 << rng.integers(8)
        return bytes(b)
    if kind == 1:                                        # truncate
        return data[:rng.integers(len(data))]
    with zipfile.ZipFile(io.BytesIO(data)) as z:         # replace one member
        members = {n: z.read(n) for n in z.namelist()}
    name = list(members)[rng.integers(len(members))]
    choices = [np.zeros(0), np.full((3, 3), np.nan), np.array([2 ** 31]),
               np.zeros((int(rng.integers(1, 3000)), 7), np.float16), np.array("x"),
               np.array([1e300]), np.ones((35, 70000), np.uint8), np.arange(5)]
    members[name] = npy(choices[rng.integers(len(choices))]) if kind == 2 else \
        members[name][:rng.integers(1, max(2, len(members[name])))]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n, v in members.items():
            z.writestr(n, v)
    return out.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        seeds = []
        for name, model in (("mt.npz", MultiTaskModel(hidden_dims=(16,), seed=1)),
                            ("sel.npz", random_selector(3))):
            path = os.path.join(tmp, name)
            model.save(path)
            with open(path, "rb") as f:
                seeds.append(f.read())
        path = os.path.join(tmp, "case.npz")

        def attempt(data):
            with open(path, "wb") as f:
                f.write(data)
            load_model(path)
        result = fuzz(lambda: mutate(seeds[rng.integers(len(seeds))], rng), attempt,
                      ModelFormatError, args.seconds)
    return report("mutated model files", result)


if __name__ == "__main__":
    sys.exit(main())
