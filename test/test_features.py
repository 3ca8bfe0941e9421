"""tlg8.features: the deduplicated magnitude statistics against the filter definition, and
the planes-based trial evaluator against the literal estimator."""
import unittest

import numpy as np

from tlg8 import cost, features, search, stages
from tlg8.image import block_grid, block_workspaces


def random_image(seed, height, width, ncomp):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * (5 + c) + y * (3 - c) + 40 * c) for c in range(ncomp)], axis=2)
    noisy = base + rng.integers(-20, 21, base.shape) * (rng.random(base.shape) < 0.5)
    return np.clip(noisy, 0, 255).astype(np.uint8)


class TestPairStatistics(unittest.TestCase):
    def check(self, samples):
        grid = block_grid(samples.shape[1], samples.shape[0])
        sizes = grid[:, 4] * 16 + grid[:, 5]
        ncomp = samples.shape[2]
        for size in np.unique(sizes):
            ws = block_workspaces(samples, grid[sizes == size])
            planes = features.residual_planes(ws)
            self.assertEqual(planes.dtype, np.int16)
            sad, nonzero = features.sequence_stats(features.magnitude_sequences(planes))
            # Brute force: every filter of every predictor, as stages defines them.
            res = stages.all_residuals(ws)                               # (N, 8, C, n)
            coded = np.stack([stages.all_filters(res[:, p]) for p in range(8)], axis=1)
            want_sad = np.abs(coded.astype(np.int64)).sum(-1)            # (N, 8, 96, C)
            want_nz = (coded != 0).sum(-1)
            np.testing.assert_array_equal(features.pair_component_stats(sad, ncomp), want_sad)
            np.testing.assert_array_equal(features.pair_component_stats(nonzero, ncomp),
                                          want_nz)
            np.testing.assert_array_equal(features.pair_sad(ws), want_sad.sum(-1))

    def test_rgb_with_edge_blocks(self):
        self.check(random_image(1, 19, 21, 3))

    def test_argb(self):
        self.check(random_image(2, 9, 17, 4))

    def test_extreme_values_do_not_overflow(self):
        # Alternating 0/255 makes |T(x, y)| reach 637 and the 64-sample sums their maximum.
        samples = np.zeros((16, 16, 3), np.uint8)
        samples[::2, ::2] = (255, 0, 255)
        samples[1::2, 1::2] = (0, 255, 0)
        self.check(samples)

    def test_sequence_table_covers_each_component_once(self):
        self.assertEqual(features.N_SEQUENCES, 22)
        self.assertEqual(features.PAIR_SEQUENCE.shape, (96, 4))
        # Component 0 is always a plain source residual, component 3 always S(3).
        kinds = [features.SEQUENCES[i][0] for i in features.PAIR_SEQUENCE[:, 0]]
        self.assertEqual(set(kinds), {"S"})
        self.assertTrue((features.PAIR_SEQUENCE[:, 3] == features.N_SEQUENCES - 1).all())


class TestPlanesTrials(unittest.TestCase):
    def test_random_configurations_equal_the_literal_estimator(self):
        rng = np.random.default_rng(5)
        for ncomp, (height, width) in ((3, (11, 19)), (4, (10, 9))):
            samples = random_image(ncomp, height, width, ncomp)
            grid = block_grid(width, height)
            sizes = grid[:, 4] * 16 + grid[:, 5]
            for size in np.unique(sizes):
                ws = block_workspaces(samples, grid[sizes == size])
                configs = np.stack([rng.integers(0, lim, (len(ws), 12))
                                    for lim in (8, 96, 8, 2)], axis=-1)
                bits, entropy = cost.planes_configs_bits(
                    features.residual_planes(ws), configs, ws.shape[3] - 2, ws.shape[2] - 1)
                for b in range(len(ws)):
                    for k, (p, f, r, i) in enumerate(configs[b]):
                        both = [cost.block_bits(ws[b], p, f, r, i, e) for e in range(2)]
                        self.assertEqual(bits[b, k], min(both))
                        self.assertEqual(entropy[b, k], int(both[1] < both[0]))

    def test_rejects_out_of_range_and_mismatched_blocks(self):
        ws = block_workspaces(random_image(3, 8, 8, 3), block_grid(8, 8))
        planes = features.residual_planes(ws)
        with self.assertRaises(ValueError):
            cost.planes_configs_bits(planes, np.array([[[0, 96, 0, 0]]]), 8, 8)
        with self.assertRaises(ValueError):
            cost.planes_configs_bits(planes, np.zeros((2, 1, 4), int), 8, 8)


if __name__ == "__main__":
    unittest.main()
