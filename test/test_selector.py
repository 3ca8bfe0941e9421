"""tlg8.selector, the pair selector: its strategy's trial cap, batch == per block, files,
the per-block API, through the guide's functions and the encoder; the shipped model."""
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from tlg8 import selector, trials
from tlg8.heads import HEADS
from tlg8.modelfile import ModelFormatError, read_format
from tlg8_multitask.nn import mlp_init
from test_features import random_image
from tlg8 import cost, features
from tlg8.image import block_grid, block_workspaces


def random_selector(seed=0, **strategy):
    """Untrained weights: the strategy's mechanics do not depend on what the MLPs learned."""
    rng = np.random.default_rng(seed)
    ranker = mlp_init(features.N_PAIR_FEATURES, 8, 1, seed)
    scan = mlp_init(features.N_SCAN_FEATURES, 8, trials.N_OPTIONS, seed + 1)
    scalers = [(rng.standard_normal(n).astype(np.float32), np.ones(n, np.float32))
               for n in (features.N_PAIR_FEATURES, features.N_SCAN_FEATURES)]
    return selector.PairSelector(ranker, scalers[0], scan, scalers[1], **strategy)


def size_groups(samples):
    grid = block_grid(samples.shape[1], samples.shape[0])
    sizes = grid[:, 4] * 16 + grid[:, 5]
    for size in np.unique(sizes):
        yield grid[sizes == size], block_workspaces(samples, grid[sizes == size])


def select_one(ws, model, encoder, max_trials=16):
    """One block's workspace through the model interface (a workspace-v1 vector)."""
    return model.choose_block(features.workspace_vectors(np.asarray(ws)[None])[0], encoder,
                              max_trials)


class Counter:
    def __init__(self, ws):
        self.encoder = cost.BlockEncoder(ws)
        self.calls = []

    def __call__(self, *config):
        self.calls.append(config)
        return self.encoder(*config)


class StrategyTest(unittest.TestCase):
    def test_batch_equals_per_block_and_the_literal_estimator(self):
        model = random_selector()
        for ncomp, shape in ((3, (19, 21)), (4, (10, 17))):
            for _, ws in size_groups(random_image(ncomp, *shape, ncomp)):
                out = selector.select_workspaces(ws, model, details=True)
                for b in range(len(ws)):
                    counter = Counter(ws[b])
                    cfg, bits, trials = select_one(ws[b], model, counter)
                    self.assertEqual(bits, out["bits"][b])
                    self.assertEqual(cfg, out["choices"][b, :4].tolist())
                    self.assertEqual(trials, out["trials"][b])
                    self.assertEqual(counter.calls, [tuple(c) for c in out["tried"][b].tolist()])
                    # every trial's bits are the literal estimator's (better entropy)
                    for k, config in enumerate(out["tried"][b].tolist()):
                        self.assertEqual(out["tried_bits"][b, k], counter.encoder(*config))

    def test_trials_never_exceed_the_cap_and_never_repeat(self):
        samples = random_image(7, 19, 21, 3)
        for probe_pairs, probe_options in ((6, 2), (40, 16), (1, 1), (3, 5)):
            model = random_selector(probe_pairs=probe_pairs, probe_options=probe_options)
            for cap in (1, 2, 3, 7, 16, 17, 40):
                for grid, ws in size_groups(samples):
                    out = selector.select_workspaces(ws, model, cap, details=True)
                    self.assertLessEqual(out["tried"].shape[1], cap)
                    for b in range(len(ws)):
                        configs = [tuple(c) for c in out["tried"][b].tolist()]
                        if grid[0, 4] != 8 or grid[0, 5] != 8:
                            # edge blocks: other reorders would only repeat reorder 0
                            self.assertTrue(all(c[2] == 0 for c in configs))
                        self.assertEqual(len(configs), len(set(configs)))
                    counter = Counter(ws[0])
                    select_one(ws[0], model, counter, cap)
                    self.assertLessEqual(len(counter.calls), cap)
        with self.assertRaises(ValueError):
            selector.select_workspaces(ws, model, 0)
        with self.assertRaises(ValueError):
            select_one(ws[0], model, Counter(ws[0]), 2.5)

    def test_whole_image_matches_blocks(self):
        samples = random_image(3, 19, 21, 3)
        model = random_selector()
        timings = {}
        sel = model.choose_image(samples, 16, timings=timings)
        grid, choices, bits = sel["grid"], sel["choices"], sel["bits"]
        self.assertEqual(set(timings), {"blocks", "features", "inference", "trials"})
        for g, ws in size_groups(samples):
            out = selector.select_workspaces(ws, model, details=True)
            index = [np.flatnonzero((grid == row).all(1))[0] for row in g]
            np.testing.assert_array_equal(bits[index], out["bits"])
            np.testing.assert_array_equal(choices[index], out["choices"])


class FileAndApiTest(unittest.TestCase):
    def test_save_load_round_trip(self):
        model = random_selector(candidates=24, probe_pairs=5, probe_options=3)
        samples = random_image(1, 16, 16, 3)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sel.npz")
            model.save(path)
            self.assertEqual(read_format(path), selector.SELECTOR_FORMAT)
            loaded = selector.load(path)
            self.assertEqual((loaded.candidates, loaded.probe_pairs, loaded.probe_options),
                             (24, 5, 3))
            x = model.image_features(samples)
            for name, (ids, lp) in model.topk_arrays(x, 3).items():
                ids2, lp2 = loaded.topk_arrays(x, 3)[name]
                np.testing.assert_array_equal(ids, ids2)
                np.testing.assert_array_equal(lp, lp2)
            np.save(os.path.join(tmp, "plain.npy"), np.zeros(3))
            with self.assertRaisesRegex(ModelFormatError, "not a model NPZ"):
                selector.load(os.path.join(tmp, "plain.npy"))

    def test_identity_table_equals_the_full_first_layer(self):
        model = random_selector(3)
        for _, ws in size_groups(random_image(6, 19, 21, 3)):
            _, sad, nonzero = features.block_stats(ws)
            pairs = features.top_pairs(features.pair_proxy(sad, 3), 32)
            n = (ws.shape[2] - 1) * (ws.shape[3] - 2)
            full = model.pair_scores(features.pair_features(sad, nonzero, pairs, n))
            fast = model.pair_scores(features.pair_features(sad, nonzero, pairs, n, False),
                                     pairs)
            np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-4)

    def test_per_block_api_matches_the_batch(self):
        samples = random_image(2, 19, 21, 3)
        model = random_selector()
        x = model.image_features(samples)
        batch = model.topk_arrays(x, 2)
        grid = block_grid(21, 19)
        for i in (0, 2, len(grid) - 1):
            one = model.predict_topk(x[i], k=2)
            self.assertEqual(set(one), {name for name, _ in HEADS})
            for name, pairs in one.items():
                self.assertEqual([c for c, _ in pairs], batch[name][0][i].tolist())
            ws = features.workspace_from_vector(x[i])
            np.testing.assert_array_equal(ws, block_workspaces(samples, grid[i:i + 1])[0])
        with self.assertRaisesRegex(ValueError, "363"):
            model.topk_arrays(np.zeros((2, 259), np.float32))
        for bad_k in (0, -1, 2.5, True, "2"):
            with self.assertRaisesRegex(ValueError, "positive integer"):
                model.topk_arrays(x, k=bad_k)
        hostile = x[:1].copy()
        hostile[0, 40] = np.nan
        with self.assertRaisesRegex(ValueError, "finite"):
            model.topk_arrays(hostile)
        hostile[0, 40] = 300
        with self.assertRaisesRegex(ValueError, "0..255"):
            model.predict_topk(hostile)


class SavedSelectorCase(unittest.TestCase):
    """A random selector saved as cls.path (cls.model) in a temporary directory cls.tmp."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = random_selector(8)
        cls.path = os.path.join(cls.tmp.name, "pair_selector.npz")
        cls.model.save(cls.path)
        cls.samples = random_image(9, 19, 21, 3)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()


class GuideApiTest(SavedSelectorCase):
    """The selector behind multitask_model / beam_search_runtime / python3 -m tlg8.encode."""

    def test_multitask_model_load_returns_the_selector(self):
        import multitask_model as mm
        loaded = mm.MultiTaskModel.load(self.path)
        self.assertIsInstance(loaded, selector.PairSelector)
        self.assertEqual(loaded.feature_layout, features.WORKSPACE_LAYOUT)
        x = loaded.image_features(self.samples)
        self.assertEqual(x.shape[1], features.N_WORKSPACE_FEATURES)
        topk = loaded.predict_topk(x[0], k=2)                # the guide's example call
        self.assertEqual(len(topk["head_predictor"]), 2)
        bad = os.path.join(self.tmp.name, "bad.npz")
        arrays = dict(np.load(self.path))
        arrays["pair_feature_layout"] = np.array("pairs-v0")
        np.savez(bad, **arrays)
        with self.assertRaisesRegex(mm.ModelFormatError, "re-train"):
            mm.MultiTaskModel.load(bad)

    def test_select_block_config_runs_the_selector_strategy(self):
        import beam_search_runtime as bs
        grid = block_grid(21, 19)
        x = self.model.image_features(self.samples)
        for i in (0, 2, len(grid) - 1):
            ws = block_workspaces(self.samples, grid[i:i + 1])[0]
            for cap in (1, 5, 16):
                enc = cost.BlockEncoder(ws)
                cfg, bits = bs.select_block_config(x[i], self.model, enc, 9, -9, 0, cap)
                self.assertLessEqual(enc.trials, cap)
                want_cfg, want_bits, _ = select_one(ws, self.model, cost.BlockEncoder(ws), cap)
                self.assertEqual((list(cfg.values()), bits), (want_cfg, want_bits))
                self.assertEqual(list(cfg), ["predictor", "filter", "reorder", "interleave"])
        with self.assertRaises(ValueError):
            bs.select_block_config(x[0], self.model, enc, max_trials=0)
        with self.assertRaises(trials.TrialError):
            bs.select_block_config(x[0], self.model, lambda *c: None)

    def test_batch_and_image_apis(self):
        import beam_search_runtime as bs
        grid = block_grid(21, 19)
        x = self.model.image_features(self.samples)
        encoders = [cost.BlockEncoder.from_image(self.samples, row) for row in grid]
        configs, bits, trials = bs.select_block_configs(
            x, self.model, lambda i, *c: encoders[i](*c), max_trials=7)
        self.assertTrue((trials <= 7).all())
        for i in range(len(grid)):
            ws = block_workspaces(self.samples, grid[i:i + 1])[0]
            cfg, b, n = select_one(ws, self.model, cost.BlockEncoder(ws), 7)
            self.assertEqual((configs[i].tolist(), bits[i], trials[i]), (cfg, b, n))
        choices, bits, trials = bs.encode_choices(self.samples, self.path, max_trials=7)
        want = self.model.choose_image(self.samples, 7)
        np.testing.assert_array_equal(choices, want["choices"])
        np.testing.assert_array_equal(bits, want["bits"])
        np.testing.assert_array_equal(trials, want["trials"])

    def test_encode_cli_with_a_selector_round_trips(self):
        from tlg8 import decode, encode
        image = os.path.join(self.tmp.name, "img.bmp")
        Image.fromarray(self.samples).save(image)
        out = os.path.join(self.tmp.name, "img.tlg8")
        self.assertEqual(encode.main([image, out, "--model", self.path, "--quiet"]), 0)
        back = os.path.join(self.tmp.name, "back.bmp")
        self.assertEqual(decode.main([out, back, "--quiet"]), 0)
        np.testing.assert_array_equal(np.asarray(Image.open(back).convert("RGB")),
                                      self.samples)


class ShippedModelTest(unittest.TestCase):
    def test_the_shipped_model_loads_and_records_its_training(self):
        model = selector.default_model()
        self.assertEqual(model.format, selector.SELECTOR_FORMAT)
        self.assertIn("train_multitask.py --selector", model.metadata["command"])
        names = [d["file"] for d in model.metadata["data"]]
        self.assertEqual(names, ["dko_s.bmp", "dko_sss.bmp", "dko_t.bmp", "img1.bmp",
                                 "img2.bmp", "img3.bmp"])
        self.assertTrue(all(len(d["sha256"]) == 64 for d in model.metadata["data"]))
        self.assertLess(os.path.getsize(selector.DEFAULT_MODEL), 100_000)


if __name__ == "__main__":
    unittest.main()
