"""The compiled encoder kernels (tlg8.encode_kernels, tlg8.jit) against the NumPy paths
they replace: the same numbers, choices and bytes. Each comparison runs the public
function twice, with the kernels and with jit turned off, on synthetic data (always) and
on the shared images (when ../shared is there). Skipped without numba or with
TLG8_NO_JIT=1: then only the NumPy paths run, as every other test does."""
import contextlib
import os
import unittest

import numpy as np

from shared_data import IMAGES, require_shared
from test_tlgfile import random_choices
from tlg8 import codec, cost, features as feat, filecost, jit, search, selector, stages, \
    synth, tlgfile
from tlg8.image import block_batches, block_grid, block_workspaces, read_image


@contextlib.contextmanager
def numpy_paths():
    """Everything inside runs the NumPy paths (as without numba)."""
    saved = jit._AVAILABLE
    jit._AVAILABLE = False
    try:
        yield
    finally:
        jit._AVAILABLE = saved


def both(fn, *args, **kwargs):
    """(fn with the kernels, fn with the NumPy paths)."""
    with_kernels = fn(*args, **kwargs)
    with numpy_paths():
        return with_kernels, fn(*args, **kwargs)


def synthetic_images():
    rng = np.random.default_rng(7)
    images = synth.make_images()
    # Edge blocks in both directions, a tile boundary at y = 80 and C = 4.
    images["odd"] = rng.integers(0, 256, (93, 75, 3), np.uint8)
    argb = rng.integers(0, 256, (37, 30, 4), np.uint8)
    images["argb"] = argb
    return images


def workspaces(samples, size=None):
    """(ws, w, h) of each block size of an image (or only the given (w, h))."""
    grid = block_grid(samples.shape[1], samples.shape[0])
    for part in block_batches(grid):
        w, h = int(grid[part[0], 4]), int(grid[part[0], 5])
        if size is None or size == (w, h):
            yield block_workspaces(samples, grid[part]), w, h


@unittest.skipUnless(jit.available(), "compiled kernels not available (numba not installed "
                     "or TLG8_NO_JIT set): the NumPy paths are what the other tests check")
class KernelsMatchNumPy(unittest.TestCase):
    def assertSame(self, pair, what=""):
        a, b = pair
        if isinstance(a, tuple):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y, what)
        else:
            np.testing.assert_array_equal(a, b, what)

    # -- estimators ------------------------------------------------------------------

    def test_lane_bits(self):
        rng = np.random.default_rng(1)
        for length, scale, lanes in ((192, 6, 300), (64, 40, 97), (1, 3, 5), (300, 2, 40)):
            values = np.clip(np.round(rng.laplace(0, scale, (length, lanes))), -1023, 1023)
            values[rng.random(values.shape) < 0.3] = 0
            values = values.astype(np.int16)
            orders = np.stack([rng.permutation(length) for _ in range(3)])
            start = rng.integers(0, 16 * 1200, lanes)
            for entropy in (0, 1):
                for row in (stages.component_row(entropy, 1), stages.INTERLEAVED_ROWS[entropy]):
                    with self.subTest(length=length, entropy=entropy, row=row):
                        self.assertSame(both(cost.lane_bits, values, row, entropy, orders))
                        def from_states():
                            end = np.zeros(lanes, np.int64)
                            bits = cost.lane_bits(values, row, entropy, orders[0], start=start,
                                                  end=end)
                            return bits, end
                        self.assertSame(both(from_states), "from given states")
        self.assertSame(both(cost.lane_bits, np.zeros((0, 4), np.int16), 7, 1))

    def test_configs_bits(self):
        rng = np.random.default_rng(2)
        for name, samples in synthetic_images().items():
            for ws, w, h in workspaces(samples):
                configs = np.stack([rng.integers(0, limit, (len(ws), 12))
                                    for limit in (8, 96, 8, 2)], axis=2)
                with self.subTest(image=name, size=(w, h)):
                    self.assertSame(both(cost.configs_bits, ws, configs))

    # -- blocks ----------------------------------------------------------------------

    def test_workspaces(self):
        images = synthetic_images()
        images["wide"] = np.random.default_rng(6).integers(0, 256, (90, 8203, 3), np.uint8)
        for name, samples in images.items():
            grid = block_grid(samples.shape[1], samples.shape[0])
            for part in block_batches(grid):
                with self.subTest(image=name, size=tuple(grid[part[0], 4:])):
                    self.assertSame(both(block_workspaces, samples, grid[part]))

    # -- features --------------------------------------------------------------------

    def test_block_stats_and_pairs(self):
        for name, samples in synthetic_images().items():
            for ws, w, h in workspaces(samples):
                with self.subTest(image=name, size=(w, h)):
                    (res, sad, nonzero), numpy = both(feat.block_residual_stats, ws)
                    for x, y in zip((res, sad, nonzero), numpy):
                        np.testing.assert_array_equal(x, y)
                    # flat images tie many pairs: the order of ties is part of the result
                    self.assertSame(both(feat.least_sad_pairs, sad, ws.shape[1], 32))
                    pairs = feat.least_sad_pairs(sad, ws.shape[1], 7)
                    self.assertSame(both(feat.pair_scan_features, res, pairs, w, h))
                    # float32 measures: the same operations, bit for bit
                    self.assertSame(both(feat.pair_features, sad, nonzero, pairs, w * h,
                                         identity=False))

    def test_pair_measures_of_every_sad(self):
        # Every per-component sad (0 .. 64 x 637) against each non-zero count, and totals
        # up to 3 x that: the logarithms must be features.log2_f32's bits in both paths.
        sads = np.arange(0, 64 * 637 + 1)
        n_blocks = len(sads)
        sad = np.zeros((8, feat.N_SEQUENCES - 1, n_blocks), np.uint16)
        nonzero = np.zeros_like(sad)
        sad[0] = sads[::-1]
        sad[0, feat.PAIR_SEQUENCE[5, 0]] = sads
        nonzero[0] = (sads % 64 + 1) * (sads > 0)
        pairs = np.full((n_blocks, 1), 5)
        for n in (64, 24, 7):
            with self.subTest(n=n):
                self.assertSame(both(feat.pair_features, sad, nonzero, pairs, n,
                                     identity=False))

    def test_selector_choices(self):
        model = selector.default_model()
        for name, samples in synthetic_images().items():
            with self.subTest(image=name):
                got, want = both(model.choose_image, samples, 16, details=True)
                for key in want:
                    np.testing.assert_array_equal(got[key], want[key], key)

    # -- the file-bytes pass ---------------------------------------------------------

    def test_viterbi(self):
        rng = np.random.default_rng(3)
        starts = np.array([0, 1, 40, 41, 200])
        cost_of = rng.integers(100, 130, (200, 6)).astype(np.float64)  # many ties
        cost_of[rng.random(cost_of.shape) < 0.2] = np.inf
        cost_of[:, 0] = rng.integers(100, 130, 200)
        values = rng.integers(0, 3, (200, 6, 5))
        weights = np.tile(np.array(tlgfile.STREAM_BITS, np.float64), (4, 1))
        weights[1] += 8
        self.assertSame(both(filecost._viterbi, cost_of, values, weights, starts))

    def test_choose_for_file(self):
        model = selector.default_model()
        for name, samples in synthetic_images().items():
            sel = model.choose_image(samples, 16, details=True)
            for options in ({}, {"passes": 3, "margin": 48, "max_configs": 16}):
                with self.subTest(image=name, **options):
                    self.assertSame(both(filecost.choose_for_file, samples, sel["grid"],
                                         sel["tried"], sel["tried_bits"],
                                         sel["tried_entropy"], **options))

    def test_choose_for_file_tall_tiles_and_a_fitted_table(self):
        model = selector.default_model()
        for name, samples in synthetic_images().items():
            height, width = samples.shape[:2]
            grid = block_grid(width, height, 96)
            sel = model.choose_image(samples, 16, details=True, grid=grid)
            table = tlgfile.read_header(tlgfile.encode_tlg8(
                samples, sel["choices"], tile_size=(8192, 96), fit_table=True))["golomb_table"]
            with self.subTest(image=name):
                self.assertSame(both(filecost.choose_for_file, samples, grid, sel["tried"],
                                     sel["tried_bits"], sel["tried_entropy"],
                                     golomb_table=table))

    def test_golomb_row_costs(self):
        rng = np.random.default_rng(6)
        for name, samples in synthetic_images().items():
            n = len(block_grid(samples.shape[1], samples.shape[0]))
            choices = random_choices(rng, n, True)
            for tile_h in (80, 96):
                with self.subTest(image=name, tile_h=tile_h):
                    self.assertSame(both(tlgfile.golomb_row_costs, samples, choices,
                                         tile_size=(8192, tile_h)))

    # -- the reference search --------------------------------------------------------

    def test_search(self):
        for name, samples in synthetic_images().items():
            for mode in search.MODES:
                for ws, w, h in workspaces(samples):
                    # a spread of each size's blocks (the NumPy search is slow)
                    ws = ws[::max(1, len(ws) // (3 if mode == "exhaustive" else 60))]
                    with self.subTest(image=name, mode=mode, size=(w, h)):
                        self.assertSame(both(search.search_blocks, ws, mode))

    # -- the encoder -----------------------------------------------------------------

    def test_encode_tlg8(self):
        rng = np.random.default_rng(4)
        table = [(up, down, tuple(np.roll(counts, 1))) for up, down, counts in
                 stages.DEFAULT_GOLOMB_TABLE]
        for name, samples in synthetic_images().items():
            n = len(block_grid(samples.shape[1], samples.shape[0]))
            for sticky in (False, True):
                choices = random_choices(rng, n, sticky)
                for fit in (False, True):
                    with self.subTest(image=name, sticky=sticky, fit_table=fit):
                        a, b = both(tlgfile.encode_tlg8, samples, choices, fit_table=fit)
                        self.assertEqual(a, b)
                with self.subTest(image=name, table="custom"):
                    a, b = both(tlgfile.encode_tlg8, samples, choices, golomb_table=table,
                                fit_table=sticky)
                    self.assertEqual(a, b)
        # small tiles: many tiles per chunk, blocks in each tile's own order
        samples = rng.integers(0, 256, (45, 70, 3), np.uint8)
        tiles = tlgfile._tiles(70, 45, 24, 16)
        n = sum(len(tlgfile._tile_blocks(tw, th)) for tw, th in tiles[:, 2:].tolist())
        choices = random_choices(rng, n, True)
        a, b = both(tlgfile.encode_tlg8, samples, choices, tile_size=(24, 16), fit_table=True)
        self.assertEqual(a, b)

    def test_rows_within_their_buffer_bound(self):
        # The longest codes: k = 0 in every row (every big magnitude escapes), on
        # alternating 0/255 samples (residuals up to the 1023 of the coding), with no
        # zero runs. write_rows writes into ROW_BYTES_PER_VALUE bytes per value unchecked;
        # its proof leaves 3 of them to spare.
        from tlg8 import encode_kernels as kernels
        k0 = [(up, down, (1024,) + (0,) * 8) for up, down, _ in stages.DEFAULT_GOLOMB_TABLE]
        samples = np.zeros((64, 64, 4), np.uint8)
        samples[::2, ::2] = samples[1::2, 1::2] = (255, 0, 255, 0)
        samples[::2, 1::2] = samples[1::2, ::2] = (0, 255, 0, 255)
        n = len(block_grid(64, 64))
        for choices in (np.tile([[p, f, r, 1, 0] for p in range(8) for f in (0, 37, 95)
                                 for r in (0, 7)], (n // 48 + 1, 1))[:n],
                        random_choices(np.random.default_rng(6), n, False)):
            a, b = both(tlgfile.encode_tlg8, samples, choices, golomb_table=k0)
            self.assertEqual(a, b)
            # the whole file, side information and header included
            self.assertLessEqual(len(a), (kernels.ROW_BYTES_PER_VALUE - 3) * samples.size)

    def test_fit_counts(self):
        from tlg8 import encode_kernels as kernels, golombfit
        rng = np.random.default_rng(5)
        for trial in range(20):
            cost_ = rng.integers(0, 6, (1024, 9)) * rng.integers(0, 2, (1024, 1))
            if trial % 4 == 0:
                cost_[:] = 0                                    # every k ties everywhere
            counts = np.empty(9, np.int64)
            kernels.fit_counts(np.ascontiguousarray(cost_, np.int64), counts)
            self.assertEqual(tuple(counts.tolist()), golombfit.fit_counts(cost_)[0])

    # -- the kernels' own checks -----------------------------------------------------

    def test_arguments_are_checked(self):
        from tlg8 import encode_kernels as kernels
        values = np.zeros((8, 4), np.int16)
        out = np.zeros((1, 4), np.int64)
        good = (values, np.zeros((1, 8), np.intp), kernels.KC, 0, 12, 6, 0,
                np.zeros(0, np.int64), out, np.zeros(0, np.int64))
        kernels.lane_bits(*good)
        for k, bad in ((0, values.astype(np.int32)), (0, np.zeros((4, 8), np.int16).T),
                       (1, np.zeros(8, np.intp))):
            args = list(good)
            args[k] = bad
            with self.subTest(argument=k, bad=(bad.dtype, bad.shape, bad.flags.c_contiguous)):
                with self.assertRaises(TypeError):
                    kernels.lane_bits(*args)

    def test_build_lock(self):
        import tempfile
        import threading
        import time
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "lib.so")
            open(path + ".lock", "w").close()           # another process is building
            threading.Timer(0.3, lambda: open(path, "w").close()).start()
            self.assertIsNone(jit._take_lock(path))     # waited for its library
            os.remove(path)
            old = time.time() - jit.BUILD_LOCK_STALE - 1
            os.utime(path + ".lock", (old, old))        # ... until its builder died
            fd = jit._take_lock(path)
            self.assertIsInstance(fd, int)
            os.close(fd)
            self.assertTrue(os.path.exists(path + ".lock"))

    def test_signature_parsing(self):
        self.assertEqual(jit._array_specs("void(int16[:, ::1], int64, uint8[:], float32[::1])"),
                         [(np.dtype(np.int16), 2, True), None, (np.dtype(np.uint8), 1, False),
                          (np.dtype(np.float32), 1, True)])


@unittest.skipUnless(jit.available(), "compiled kernels not available (numba not installed "
                     "or TLG8_NO_JIT set)")
class KernelsOnSharedImages(unittest.TestCase):
    """The whole default encode and the reference search of shared photos, both ways."""

    def setUp(self):
        require_shared("data/images/dko_sss.bmp")

    def test_default_encode_bytes(self):
        samples, _ = read_image(os.path.join(IMAGES, "dko_sss.bmp"))
        a, b = both(codec.encode_samples, samples)
        self.assertEqual(a, b)

    def test_reference_search_and_file_pass_on_a_photo(self):
        samples, _ = read_image(os.path.join(IMAGES, "dko_t.bmp"))
        samples = samples[:80]                       # one tile row, edge blocks included
        got, want = both(search.search_image, samples)
        for x, y in zip(got, want):
            np.testing.assert_array_equal(x, y)
        got, want = both(codec.choose_blocks, samples, effort=4)
        np.testing.assert_array_equal(got[0], want[0])


if __name__ == "__main__":
    unittest.main()
