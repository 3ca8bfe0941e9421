"""The block cost model against the spec's worked examples (tlg8_block_cost.md §10) and
the batched estimator against the spec-literal one."""
import unittest

import numpy as np

from tlg8 import cost, search, stages
from tlg8.image import block_grid, block_workspaces


def image_a():
    """Test image A of spec §10.1 (11 x 10, C = 3)."""
    y, x = np.mgrid[0:10, 0:11]
    r = (16 * x + 9 * y + (7 * x * y) % 11) % 256
    g = (r + 3 * x - 2 * y + 40) % 256
    b = (5 * x * x + 3 * y + 100) % 256
    return np.stack([r, g, b], axis=2).astype(np.uint8)


def image_argb():
    """The 3 x 3 ARGB image of spec §10.2 (components A, R, G, B)."""
    return np.array([
        [(255, 10, 200, 30), (250, 12, 190, 35), (240, 15, 185, 33)],
        [(128, 11, 198, 31), (130, 14, 180, 40), (0, 20, 170, 38)],
        [(128, 13, 195, 29), (126, 15, 175, 45), (5, 22, 160, 50)],
    ], np.uint8)


def workspace(samples, origin):
    grid = block_grid(samples.shape[1], samples.shape[0])
    row = grid[(grid[:, 2] == origin[0]) & (grid[:, 3] == origin[1])]
    return block_workspaces(samples, row)[0]


class TestStages(unittest.TestCase):
    def test_tdiv2_truncates_toward_zero(self):
        self.assertEqual(stages.tdiv2(np.array([7, -7, -5, -9, -1, 0, 1])).tolist(),
                         [3, -3, -2, -4, 0, 0, 0])

    def test_filter_code_layout(self):
        self.assertEqual(stages.split_filter_code(93), (5, 3, 1))
        self.assertEqual(stages.filter_code(5, 3, 1), 93)
        for code in range(96):
            self.assertEqual(stages.filter_code(*stages.split_filter_code(code)), code)

    def test_filter_93_of_example_2(self):
        res = np.array([[10, 17, 13, 10, 6, 2], [-248, 15, 11, 8, 4, 0], [3] * 6])
        out = stages.color_filter(res, 93)
        self.assertEqual(out.tolist(), [[3] * 6, [-252, 11, 7, 4, 0, -4], [7, 14, 10, 7, 3, -1]])

    def test_filters_invert_and_leave_component_3(self):
        rng = np.random.default_rng(5)
        res = rng.integers(-255, 256, (4, 4, 64))
        for code in range(96):
            out = stages.color_filter(res, code)
            self.assertTrue((out[:, 3] == res[:, 3]).all())
            self.assertTrue((stages.inverse_color_filter(out, code) == res).all())

    def test_reorder_tables_are_permutations_and_edge_blocks_keep_raster_order(self):
        for table in stages.REORDER_TABLES:
            self.assertEqual(sorted(table.tolist()), list(range(64)))
        self.assertEqual(stages.REORDER_TABLES[2][:8].tolist(), [10, 3, 2, 9, 16, 8, 1, 0])
        for r in range(8):
            self.assertEqual(stages.reorder_index(r, 3, 2).tolist(), [0, 1, 2, 3, 4, 5])

    def test_interleave_is_pixel_major(self):
        comps = np.array([[1, 2], [10, 20], [100, 200]])
        self.assertEqual(stages.interleave(comps).tolist(), [1, 10, 100, 2, 20, 200])
        self.assertEqual(stages.deinterleave(stages.interleave(comps), 3).tolist(),
                         comps.tolist())

    def test_k_table_ranges_of_the_spec(self):
        k = stages.k_table()
        self.assertEqual(k[0, 0], 0)
        self.assertEqual(k[0, 1:4].tolist(), [1, 1, 1])
        self.assertEqual(k[2, 3], 1)
        self.assertEqual(k[7, 891], 7)
        self.assertEqual(k[7, 892], 8)
        self.assertEqual(k[5, 855], 7)

    def test_predictors_on_example_2(self):
        # Example 2's block (8,8) of image A, predictor 5 (up): the residuals of the spec.
        ws = workspace(image_a(), (8, 8))
        self.assertEqual(stages.residuals(ws, 5).tolist(),
                         [[10, 17, 13, 10, 6, 2], [-248, 15, 11, 8, 4, 0], [3] * 6])
        self.assertEqual(stages.residuals(ws, 0).tolist(),
                         [[10, 17, 13, 10, 6, 2], [-248, 20, 11, 7, 4, 0], [3, 0, 3, 3, 0, 3]])


class TestEstimators(unittest.TestCase):
    def test_golomb_cost_and_escape(self):
        self.assertEqual(cost.golomb_cost(503, 0), 33)      # 16 + gamma(488)
        self.assertEqual(cost.golomb_cost(14, 6), 7)
        self.assertEqual(cost.golomb_cost(15, 0), 16)
        self.assertEqual(cost.run_cost(1), 1)
        self.assertEqual(cost.run_cost(2), 2)
        self.assertEqual(cost.run_cost(6), 7)

    def test_trace_of_example_2_interleaved_plain(self):
        v = [3, -252, 7, 3, 11, 14, 3, 7, 10, 3, 4, 7, 3, 0, 3, 3, -4, -1]
        self.assertEqual(cost.sequence_bits(v, 6, 0), 119)
        self.assertEqual(cost.lane_bits(np.array(v, np.int16)[:, None], 6, 0).tolist(), [119])

    def test_trace_of_example_2_run_length_components(self):
        self.assertEqual(cost.sequence_bits([10, 17, 13, 10, 6, 2], 3, 1), 58)
        self.assertEqual(cost.sequence_bits([-248, 20, 11, 7, 4, 0], 4, 1), 67)
        self.assertEqual(cost.sequence_bits([3, 0, 3, 3, 0, 3], 5, 1), 25)

    def test_empty_sequence_costs_nothing(self):
        self.assertEqual(cost.sequence_bits([], 0, 1), 0)
        self.assertEqual(cost.lane_bits(np.zeros((0, 3), np.int16), 7, 1).tolist(), [0, 0, 0])

    def test_lanes_equal_the_literal_estimator(self):
        rng = np.random.default_rng(11)
        values = rng.integers(-60, 61, (300, 70)) * (rng.random((300, 70)) < 0.7)
        values[0] = 0
        values[1, :] = 637                   # drives idx past 1024 (k = 0, spec §9.3)
        values[2, ::2] = -637
        values[3, -1] = 5
        values[4, :] = 1
        values[5] = rng.integers(-637, 638, 70)
        orders = np.stack([rng.permutation(70) for _ in range(3)])
        for entropy in (0, 1):
            for row in range(8):
                lanes = cost.lane_bits(values.T.astype(np.int16), row, entropy, orders)
                for o, order in enumerate(orders):
                    expected = [cost.sequence_bits(v[order], row, entropy) for v in values]
                    self.assertEqual(lanes[o].tolist(), expected, (entropy, row, o))

    def test_state_past_the_table_reads_k_zero(self):
        # 16 * 1024 - 8 is the first state whose index (a + 8) >> 4 is 1024.
        a = 16 * 1024 - 8
        self.assertTrue((cost.K_BY_A[:, a:] == 0).all())
        self.assertEqual(cost.K_BY_A[4, a - 1] >> cost.M_BITS, stages.k_table()[4, 1023])


class TestWorkedExamples(unittest.TestCase):
    """Spec §10: bits of named configurations, and the reference's best/second."""

    def check_configs(self, ws, table):
        configs = np.array([c[:4] for c, _ in table])
        for (p, f, r, i, e), bits in table:
            self.assertEqual(cost.block_bits(ws, p, f, r, i, e), bits, (p, f, r, i, e))
        batched, entropy = cost.configs_bits(ws[None], configs[None])
        for k, ((p, f, r, i, e), bits) in enumerate(table):
            alternative = cost.block_bits(ws, p, f, r, i, 1 - e)
            self.assertEqual(batched[0, k], min(bits, alternative))

    def test_example_1_block_0_0(self):
        ws = workspace(image_a(), (0, 0))
        self.check_configs(ws, [((0, 74, 6, 0, 0), 952), ((0, 25, 3, 0, 0), 953),
                                ((0, 0, 0, 0, 0), 1146), ((0, 0, 0, 0, 1), 1167),
                                ((0, 0, 0, 1, 0), 1137), ((0, 0, 0, 1, 1), 1160),
                                ((4, 71, 2, 1, 1), 1681), ((3, 95, 7, 1, 0), 1589)])

    def test_example_2_block_8_8(self):
        ws = workspace(image_a(), (8, 8))
        self.check_configs(ws, [((5, 93, 0, 1, 0), 119), ((0, 0, 0, 0, 0), 141),
                                ((0, 0, 0, 0, 1), 150), ((0, 0, 0, 1, 0), 139),
                                ((0, 0, 0, 1, 1), 142), ((5, 93, 0, 0, 1), 151),
                                ((4, 37, 5, 1, 1), 233), ((7, 12, 3, 0, 0), 264)])

    def test_example_3_argb(self):
        ws = workspace(image_argb(), (0, 0))
        self.check_configs(ws, [((0, 81, 0, 1, 0), 259), ((0, 0, 0, 0, 0), 294),
                                ((0, 0, 0, 0, 1), 324), ((0, 0, 0, 1, 0), 284),
                                ((0, 0, 0, 1, 1), 295), ((4, 81, 0, 0, 1), 399),
                                ((6, 45, 0, 1, 1), 428)])

    def test_reference_search_of_image_a(self):
        grid, best, second = search.search_image(image_a())
        self.assertEqual(grid[:, 2:].tolist(), [[0, 0, 8, 8], [8, 0, 3, 8], [0, 8, 8, 2],
                                                [8, 8, 3, 2]])
        self.assertEqual(best.tolist(), [[0, 74, 6, 0, 0, 952], [0, 66, 0, 0, 0, 525],
                                         [0, 94, 0, 0, 0, 210], [5, 93, 0, 1, 0, 119]])
        self.assertEqual(second.tolist(), [[0, 25, 3, 0, 0, 953], [0, 66, 1, 0, 0, 525],
                                           [0, 94, 1, 0, 0, 210], [5, 93, 1, 1, 0, 119]])

    def test_reference_search_of_the_argb_image(self):
        _, best, second = search.search_image(image_argb())
        self.assertEqual(best.tolist(), [[0, 81, 0, 1, 0, 259]])
        self.assertEqual(second.tolist(), [[0, 81, 1, 1, 0, 259]])


class TestBlockEncoder(unittest.TestCase):
    def test_callback_takes_the_better_entropy_and_counts_trials(self):
        ws = workspace(image_a(), (8, 8))
        encoder = cost.BlockEncoder(ws)
        self.assertEqual(encoder(5, 93, 0, 1), 119)
        self.assertEqual(encoder.entropy_of(5, 93, 0, 1), 0)
        self.assertEqual(encoder(0, 0, 0, 0), 141)            # plain 141 < run-length 150
        self.assertEqual(encoder(5, 93, 0, 1), 119)
        self.assertEqual(encoder.trials, 2)
        with self.assertRaises(ValueError):
            encoder(8, 0, 0, 0)

    def test_callback_from_image_matches_batched(self):
        samples = image_a()
        grid = block_grid(11, 10)
        encoder = cost.BlockEncoder.from_image(samples, grid[0])
        configs = np.array([[[0, 74, 6, 0], [3, 95, 7, 1], [6, 12, 1, 1]]])
        bits, entropy = cost.configs_bits(block_workspaces(samples, grid[:1]), configs)
        for k, config in enumerate(configs[0]):
            self.assertEqual(encoder(*config), bits[0, k])
            self.assertEqual(encoder.entropy_of(*config), entropy[0, k])


if __name__ == "__main__":
    unittest.main()
