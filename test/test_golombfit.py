"""The per-image Golomb table (tlg8.golombfit, encode_tlg8(fit_table=True))."""
import itertools
import unittest

import numpy as np

from tlg8 import codec, cost, golombfit, stages, synth, tlgfile
from tlg8.tlgfile import decode_tlg8, encode_tlg8, read_header


def brute_force_counts(cost_matrix):
    """Fewest bits over every non-decreasing k per index: the plain definition."""
    n = len(cost_matrix)
    return min(sum(cost_matrix[i, k] for i, k in enumerate(ks))
               for ks in itertools.combinations_with_replacement(range(golombfit.N_K), n))


class Fit(unittest.TestCase):
    def test_rice_bits_equal_the_estimator_cost(self):
        m = np.arange(3000)
        for k in range(9):
            self.assertEqual(golombfit.rice_bits(m, k).tolist(),
                             [cost.golomb_cost(int(v), k) for v in m])

    def test_index_costs_sum_bits_per_index(self):
        rng = np.random.default_rng(1)
        m = rng.integers(0, 700, 5000)
        idx = rng.integers(0, 1100, 5000)           # some past the table: left out
        got = golombfit.index_costs(m, idx)
        for i in (0, 7, 500, 1023):
            for k in (0, 3, 8):
                want = golombfit.rice_bits(m[idx == i], k).sum()
                self.assertEqual(got[i, k], want, (i, k))

    def test_dynamic_programme_is_optimal(self):
        rng = np.random.default_rng(2)
        for trial in range(30):
            costs = rng.integers(0, 50, (rng.integers(1, 6), golombfit.N_K))
            counts, total = golombfit.fit_counts(costs)
            self.assertEqual(total, brute_force_counts(costs), trial)
            self.assertEqual(sum(counts), len(costs))
            ks = np.repeat(np.arange(golombfit.N_K), counts)     # the counts' own k per index
            self.assertEqual(costs[np.arange(len(costs)), ks].sum(), total)


class FittedFiles(unittest.TestCase):
    def test_fitted_table_decodes_and_is_never_larger(self):
        rng = np.random.default_rng(3)
        for name, rgb in synth.make_images().items():
            samples = codec.to_tlg8_order(rgb)
            choices, _, _ = codec.choose_blocks(samples, effort=1)
            with self.subTest(image=name):
                plain = encode_tlg8(samples, choices)
                fitted = encode_tlg8(samples, choices, fit_table=True)
                out, _, got = decode_tlg8(fitted)
                np.testing.assert_array_equal(out, samples)
                np.testing.assert_array_equal(got, choices)
                self.assertLessEqual(len(fitted), len(plain))
                # Any other counts cost at least as much: perturb one used row's counts.
                table = read_header(fitted)["golomb_table"]
                for _ in range(3):
                    row = int(rng.integers(8))
                    up, down, counts = table[row]
                    counts = list(counts)
                    a, b = rng.choice(9, 2, replace=False)
                    moved = min(counts[a], int(rng.integers(1, 64)))
                    counts[a] -= moved
                    counts[b] += moved
                    other = list(table)
                    other[row] = (up, down, tuple(counts))
                    # Fewest bits in all; each tile pads to whole 4-byte words.
                    slack = 4 * len(tlgfile.tile_records(fitted)) - 1
                    self.assertGreaterEqual(len(encode_tlg8(samples, choices, other)),
                                            len(fitted) - slack)

    def test_fit_keeps_the_ratios_and_unused_rows(self):
        samples = np.zeros((8, 8, 3), np.uint8)
        samples[..., 0] = np.arange(64).reshape(8, 8) * 3
        choices = np.array([[0, 0, 0, 0, 0]])                       # plain rows 0, 1, 2
        table = read_header(encode_tlg8(samples, choices, fit_table=True))["golomb_table"]
        for row in range(8):
            self.assertEqual(table[row][:2], stages.DEFAULT_GOLOMB_TABLE[row][:2])
        self.assertEqual(table[3:], stages.DEFAULT_GOLOMB_TABLE[3:])
        self.assertNotEqual(table[0], stages.DEFAULT_GOLOMB_TABLE[0])

    def test_encoder_stores_the_fitted_table_except_for_the_reference(self):
        rgb = synth.make_images()["texture"]
        samples = codec.to_tlg8_order(rgb)
        default = tlgfile.check_golomb_table(stages.DEFAULT_GOLOMB_TABLE)
        ref = read_header(codec.encode_samples(samples, search="reference"))["golomb_table"]
        self.assertEqual(ref, default)
        mine = read_header(codec.encode_samples(samples, effort=1))["golomb_table"]
        self.assertNotEqual(mine, default)


if __name__ == "__main__":
    unittest.main()
