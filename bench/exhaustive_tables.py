"""Exact bits of every configuration of sampled blocks: the ground truth for selection studies.

    python3 bench/exhaustive_tables.py NAME... [--blocks N] [--seed S] [--out DIR]

For each image ../shared/data/images/NAME.bmp, N full 8x8 blocks are drawn at random (all of
them when the image has fewer) and every (predictor, filter, reorder, interleave) is
evaluated with the batched cost model, keeping the better entropy — the same number a
selection trial returns. Saved as DIR/NAME.npz (default DIR /tmp/h4/tables):

    index  (N,) int64           block index in tlg8.image.block_grid order (= dump line)
    bits   (N, 8, 96, 8, 2) uint16   bits[b, p, f, r, i], min over the two entropies

With a table, any candidate strategy can be scored offline by lookups (no trials), and a
learned ranker can be trained against the bits of every alternative, not only the
reference's best. ~45 ms per block (exhaustive search); one core.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8 import search, stages  # noqa: E402
from tlg8.image import block_grid, block_workspaces, read_image  # noqa: E402

IMAGES = os.path.join(os.path.dirname(ROOT), "shared", "data", "images")


def all_config_bits(ws):
    """bits (N, 8, 96, 8, 2) of every configuration, min over entropy, for 8x8 blocks."""
    n_blocks, ncomp = ws.shape[:2]
    res = stages.all_residuals(ws)
    cand = search.filter_candidates(res)
    b, p, f = np.nonzero(np.ones((n_blocks, 8, 96), bool))
    keys = ((b * 8 + p) * search.N_CANDIDATES)[:, None] + search.CANDIDATE_INDEX[f, :ncomp]
    cand_flat = cand.reshape(-1, cand.shape[-1])
    orders = stages.REORDER_TABLES
    bits = np.empty((len(b), 8, 2, 2), np.int64)
    bits[:, :, 0] = search._component_bits(cand_flat, keys, ncomp, orders)
    bits[:, :, 1] = search._interleaved_bits(cand_flat, keys, ncomp, orders)
    return bits.min(axis=3).reshape(n_blocks, 8, 96, 8, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--blocks", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/h4/tables")
    parser.add_argument("--chunk", type=int, default=16)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in args.names:
        samples, _ = read_image(os.path.join(IMAGES, name + ".bmp"))
        grid = block_grid(samples.shape[1], samples.shape[0])
        full = np.flatnonzero((grid[:, 4] == 8) & (grid[:, 5] == 8))
        rng = np.random.default_rng(args.seed)
        index = np.sort(rng.permutation(full)[:args.blocks]) if len(full) > args.blocks else full
        bits = np.empty((len(index), 8, 96, 8, 2), np.uint16)
        start = time.perf_counter()
        for lo in range(0, len(index), args.chunk):
            part = index[lo:lo + args.chunk]
            bits[lo:lo + len(part)] = all_config_bits(block_workspaces(samples, grid[part]))
            if lo % (args.chunk * 20) == 0:
                print(f"{name}: {lo + len(part)}/{len(index)} "
                      f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        path = os.path.join(args.out, name + ".npz")
        np.savez(path + ".tmp.npz", index=index, bits=bits)
        os.replace(path + ".tmp.npz", path)
        print(f"{name}: {len(index)} blocks -> {path} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
