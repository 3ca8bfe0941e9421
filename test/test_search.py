"""The reference search against the reference encoder's own dumps (../shared), and the
exhaustive mode against brute force."""
import json
import os
import unittest

import numpy as np

from shared_data import IMAGES, parity_names, reference_lines
from tlg8 import cost, search, stages
from tlg8.image import block_grid, block_workspaces, read_image

FIELDS = ("predictor", "filter", "reorder", "interleave", "entropy", "bits")
# Photos are checked whole by bench/parity_dump.py; CI checks this many blocks of each,
# chosen by a fixed seed (plus the first and last block, which include edge blocks).
SAMPLE_BLOCKS = 40
WHOLE_IMAGE_BLOCKS = 1000


def expected(line):
    record = json.loads(line)
    return ([record["best"][k] for k in FIELDS], [record["second"][k] for k in FIELDS],
            record["block_origin"] + record["block_size"])


class TestReferenceParity(unittest.TestCase):
    def test_every_shared_image(self):
        for name in parity_names():
            with self.subTest(image=name):
                samples, _ = read_image(os.path.join(IMAGES, name + ".bmp"))
                lines = reference_lines(name)
                grid = block_grid(samples.shape[1], samples.shape[0])
                self.assertEqual(len(grid), len(lines))
                if len(grid) <= WHOLE_IMAGE_BLOCKS:
                    picked = np.arange(len(grid))
                else:
                    rng = np.random.default_rng(sum(map(ord, name)))
                    picked = np.unique(np.concatenate(
                        [[0, len(grid) - 1], rng.choice(len(grid), SAMPLE_BLOCKS, False)]))
                sizes = grid[picked, 4] * 16 + grid[picked, 5]
                for size in np.unique(sizes):
                    index = picked[sizes == size]
                    best, second = search.search_blocks(block_workspaces(samples, grid[index]))
                    for k, i in enumerate(index):
                        want_best, want_second, geometry = expected(lines[i])
                        self.assertEqual(grid[i, 2:].tolist(), geometry)
                        self.assertEqual(best[k].tolist(), want_best, f"{name} block {i} best")
                        self.assertEqual(second[k].tolist(), want_second,
                                         f"{name} block {i} second")


class TestSearchModes(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(3)
        # Smooth ramps with noise: enough structure for the early exit to skip pairs.
        y, x = np.mgrid[0:11, 0:19]
        base = np.stack([x * 9 + y * 3, x * 7 + 40, 200 - y * 11], axis=2)
        self.samples = np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)

    def brute_force(self, ws):
        """(bits, trial rank) of all 24,576 configurations of one block."""
        configs = np.array(np.meshgrid(range(8), range(96), range(8), range(2),
                                       indexing="ij")).reshape(4, -1).T
        bits = np.zeros((len(configs), 2), np.int64)
        for e in range(2):
            for i in range(2):
                sel = configs[:, 3] == i
                comps = np.stack([stages.coded_values(ws, p, f, r, ws.shape[2] - 2,
                                                      ws.shape[1] - 1)
                                  for p, f, r, _ in configs[sel]])
                if i:
                    lanes = stages.interleave(comps).T
                    bits[sel, e] = cost.lane_bits(lanes, stages.INTERLEAVED_ROWS[e], e)
                else:
                    for c in range(comps.shape[1]):
                        bits[sel, e] += cost.lane_bits(comps[:, c].T,
                                                       stages.component_row(e, c), e)
        return configs, bits

    def test_exhaustive_is_the_true_minimum_and_reference_is_no_better(self):
        grid = block_grid(19, 11)
        for row in (grid[0], grid[-1]):           # an 8x8 block and a 3x3 edge block
            ws = block_workspaces(self.samples, row[None])
            configs, bits = self.brute_force(ws[0])
            ex_best, ex_second = search.search_blocks(ws, "exhaustive")
            ref_best, _ = search.search_blocks(ws, "reference")
            flat = np.sort(bits.ravel())
            self.assertEqual(ex_best[0, 5], flat[0])
            self.assertEqual(ex_second[0, 5], flat[1])
            self.assertGreaterEqual(ref_best[0, 5], ex_best[0, 5])
            p, f, r, i, e, b = ex_best[0]
            self.assertEqual(cost.block_bits(ws[0], p, f, r, i, e), b)

    def test_early_exit_always_tries_the_first_pair(self):
        ws = block_workspaces(self.samples, block_grid(19, 11)[:2])     # the 8x8 blocks
        res = stages.all_residuals(ws)
        mask = search.early_exit_mask(*search.pair_energies(res, search.filter_candidates(res)))
        self.assertTrue(mask[:, 0, 71].all())
        self.assertTrue((mask.sum(axis=(1, 2)) < 768).any())   # the exit did skip pairs

    def test_edge_blocks_choose_reorder_0_and_tie_second(self):
        _, best, second = search.search_image(self.samples)
        edge = (block_grid(19, 11)[:, 4:] < 8).any(axis=1)
        self.assertTrue((best[edge, 2] == 0).all())
        self.assertTrue((second[edge, 5] == best[edge, 5]).all())

    def test_bad_mode(self):
        with self.assertRaises(ValueError):
            search.search_blocks(np.zeros((1, 3, 9, 10), np.int32), "fast")


if __name__ == "__main__":
    unittest.main()
