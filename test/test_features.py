"""tlg8.features: the deduplicated magnitude statistics against the filter definition, and
the planes-based trial evaluator against the literal estimator."""
import decimal
import unittest

import numpy as np

from tlg8 import cost, features, stages
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
            coded = np.stack([res[:, :, None]] if ncomp < 3 else
                             [stages.color_filter(res, f) for f in range(96)], axis=2)
            want_sad = np.abs(coded.astype(np.int64)).sum(-1)            # (N, 8, 96, C)
            want_nz = (coded != 0).sum(-1)
            # per pair and coded component, gathered from the per-sequence statistics
            seq = features.PAIR_SEQUENCE[:, :ncomp]
            np.testing.assert_array_equal(sad.transpose(2, 0, 1)[:, :, seq], want_sad)
            np.testing.assert_array_equal(nonzero.transpose(2, 0, 1)[:, :, seq], want_nz)
            np.testing.assert_array_equal(features.pair_proxy(sad, ncomp),
                                          want_sad.sum(-1).reshape(len(ws), -1))
            # pairs-v1 rows of a few pairs, from the definition of the layout
            pairs = features.top_pairs(features.pair_proxy(sad, ncomp), 5)
            n = (ws.shape[2] - 1) * (ws.shape[3] - 2)
            got = features.pair_features(sad, nonzero, pairs, n)
            for b in range(len(ws)):
                for k, pair in enumerate(pairs[b]):
                    s = want_sad[b, pair // 96, pair % 96].astype(np.float64)
                    z = want_nz[b, pair // 96, pair % 96].astype(np.float64)
                    row = np.zeros(35)
                    row[:ncomp] = np.log2(1 + s * 64 / n)
                    row[4:4 + ncomp] = z / n
                    row[8:8 + ncomp] = np.log2(1 + s / np.maximum(z, 1))
                    row[12] = np.log2(1 + s.sum() * 64 / n)
                    perm, primary, secondary = stages.split_filter_code(pair % 96)
                    row[13 + pair // 96] = row[21 + perm] = row[27 + primary] = 1
                    row[31 + secondary] = 1
                    np.testing.assert_allclose(got[b, k], row, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(
                features.pair_features(sad, nonzero, pairs, n, identity=False), got[..., :13])
            # ranked ascending by the proxy, ties to the lower pair id
            proxy = want_sad.sum(-1).reshape(len(ws), -1)
            want = np.argsort(proxy, axis=1, kind="stable")[:, :5]
            np.testing.assert_array_equal(pairs, want)

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


class TestLog2(unittest.TestCase):
    """features.log2_f32, the features' logarithm: correctly rounded (checked in decimal
    arithmetic) and the same bits for an array, its elements one by one and a strided
    view, which NumPy's own float32 log2 does not promise (AVX-512 CPUs)."""

    def arguments(self):
        rng = np.random.default_rng(5)
        s = rng.integers(0, 4 * 64 * 637, 4000).astype(np.float32)
        z = rng.integers(1, 65, 4000).astype(np.float32)
        return np.concatenate([1 + np.arange(200, dtype=np.float32), 1 + s,
                               1 + s * np.float32(64 / 27), 1 + s / z,
                               np.float32([6, 2 ** 17, 1 + 2 ** -23])])

    def test_correctly_rounded(self):
        context = decimal.Context(prec=40)
        ln2 = context.ln(2)
        x = self.arguments()
        got = features.log2_f32(x)
        self.assertEqual(got.dtype, np.float32)
        for xi, gi in zip(x.tolist(), got.tolist()):
            exact = context.divide(context.ln(decimal.Decimal(xi)), ln2)
            # float32 of the float64 nearest the exact value (no float32 midpoint lies
            # that close to a logarithm of these arguments)
            self.assertEqual(gi, float(np.float32(float(exact))), xi)

    def test_same_bits_whatever_the_layout(self):
        x = self.arguments()
        whole = features.log2_f32(x)
        one_by_one = np.array([features.log2_f32(v) for v in x.tolist()], np.float32)
        np.testing.assert_array_equal(whole.view(np.uint32), one_by_one.view(np.uint32))
        np.testing.assert_array_equal(features.log2_f32(x[::3]), whole[::3])
        self.assertEqual(features.log2_f32(np.float32(1)), 0)


class TestCodedValues(unittest.TestCase):
    def test_coded_pairs_and_lanes_follow_the_filter_and_the_scan(self):
        rng = np.random.default_rng(9)
        for ncomp, shape in ((3, (16, 16)), (4, (9, 11))):
            samples = random_image(ncomp + 10, *shape, ncomp)
            grid = block_grid(shape[1], shape[0])
            ws = block_workspaces(samples, grid[:1])
            res = stages.all_residuals(ws)[0]
            residuals = features.block_major(features.residual_planes(ws))
            np.testing.assert_array_equal(residuals[0], res)
            pairs = rng.integers(0, 768, (1, 7))
            coded = features.coded_pairs(residuals, pairs)
            for k, pair in enumerate(pairs[0]):
                np.testing.assert_array_equal(coded[0, k],
                                              stages.color_filter(res[pair // 96], pair % 96))
            w, h = ws.shape[3] - 2, ws.shape[2] - 1
            for r in range(8):
                scan = stages.reorder_index(r, w, h)
                lanes = features.coded_lanes(residuals, np.zeros(3, int), pairs[0, :3] // 96,
                                             pairs[0, :3] % 96, np.tile(scan, (3, 1)))
                for k in range(3):
                    np.testing.assert_array_equal(lanes[:, k], coded[0, k][:, scan])


def scan_features_literal(coded, w, h):
    """scan-v1 straight from its definition, one reordered copy per scan."""
    n_blocks, n_pairs, ncomp, n = coded.shape
    bits = np.vectorize(lambda v: int(abs(int(v))).bit_length())(coded).astype(np.float64)
    out = np.zeros((n_blocks, n_pairs, 47))
    steps = ncomp * max(n - 1, 1)
    for r in range(8):
        b = bits[..., stages.reorder_index(r, w, h)]
        part = min(8, n)
        out[..., 4 * r] = np.abs(np.diff(b, axis=-1)).sum((-1, -2)) / steps
        out[..., 4 * r + 1] = b[..., :min(2, n)].mean((-1, -2))
        out[..., 4 * r + 2] = (b[..., :part].mean(-1) - b[..., n - part:].mean(-1)).mean(-1)
        inter = np.swapaxes(b, -1, -2).reshape(n_blocks, n_pairs, -1)
        out[..., 4 * r + 3] = np.abs(np.diff(inter, axis=-1)).sum(-1) / steps
    sad = np.abs(coded.astype(np.int64)).sum(-1)
    lsad = np.log2(1 + sad * 64 / n)
    out[..., 32:32 + ncomp] = lsad
    out[..., 36:36 + ncomp] = bits.mean(-1)
    out[..., 40:40 + ncomp] = (coded != 0).mean(-1)
    out[..., 44] = lsad.max(-1) - lsad.min(-1)
    out[..., 45] = (np.abs(bits[:, :, 0] - bits[:, :, 1]).mean(-1)
                    + np.abs(bits[:, :, 1] - bits[:, :, 2]).mean(-1))
    out[..., 46] = np.log2(1 + sad.sum(-1) * 64 / n)
    return out


class TestScanFeatures(unittest.TestCase):
    def test_equal_to_the_definition(self):
        rng = np.random.default_rng(4)
        for ncomp, (w, h) in ((3, (8, 8)), (3, (3, 8)), (4, (8, 8)), (3, (8, 2)), (3, (1, 1))):
            coded = (rng.integers(-40, 41, (3, 2, ncomp, w * h))
                     * (rng.random((3, 2, ncomp, w * h)) < 0.6)).astype(np.int16)
            coded[0, 0, 1, :] = 637                             # extremes of the range
            np.testing.assert_allclose(features.scan_features(coded, w, h),
                                       scan_features_literal(coded, w, h), atol=1e-5)


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
                bits, entropy = cost.block_configs_bits(
                    features.block_major(features.residual_planes(ws)), configs, ws.shape[3] - 2, ws.shape[2] - 1)
                for b in range(len(ws)):
                    for k, (p, f, r, i) in enumerate(configs[b]):
                        both = [cost.block_bits(ws[b], p, f, r, i, e) for e in range(2)]
                        self.assertEqual(bits[b, k], min(both))
                        self.assertEqual(entropy[b, k], int(both[1] < both[0]))

    def test_rejects_out_of_range_and_mismatched_blocks(self):
        ws = block_workspaces(random_image(3, 8, 8, 3), block_grid(8, 8))
        residuals = features.block_major(features.residual_planes(ws))
        with self.assertRaises(ValueError):
            cost.block_configs_bits(residuals, np.array([[[0, 96, 0, 0]]]), 8, 8)
        with self.assertRaises(ValueError):
            cost.block_configs_bits(residuals, np.zeros((2, 1, 4), int), 8, 8)


if __name__ == "__main__":
    unittest.main()
