"""multitask_model: head table, features, gradients, AdamW, save/load and its errors."""
import json
import os
import shutil
import tempfile
import unittest

import numpy as np

import multitask_model as mm
from tlg8 import records, stages
from tlg8.image import block_grid, block_pixels


def tiny_model(seed=0, dropout=0.0):
    return mm.MultiTaskModel((16, 8), dropout=dropout, seed=seed)


class _Recorder:
    """An optimiser that keeps the gradients instead of applying them."""

    def update(self, params, grads):
        self.grads = [g.copy() for g in grads]


class HeadsAndFeaturesTest(unittest.TestCase):
    def test_head_table(self):
        self.assertEqual(mm.HEADS, (("head_predictor", 8), ("head_filter_perm", 6),
                                    ("head_filter_primary", 4), ("head_filter_secondary", 4),
                                    ("head_reorder", 8), ("head_interleave", 2)))
        self.assertEqual(mm.N_OUTPUTS, 32)
        self.assertEqual(mm.HEAD_OFFSETS.tolist(), [0, 8, 14, 18, 22, 30])

    def test_head_labels_split_the_filter_code(self):
        codes = np.arange(stages.N_FILTERS)
        cand = np.stack([codes % 8, codes, codes % 8, codes % 2, codes % 2], axis=1)
        labels = mm.head_labels(cand)
        np.testing.assert_array_equal(stages.filter_code(labels[:, 1], labels[:, 2], labels[:, 3]),
                                      codes)
        np.testing.assert_array_equal(labels[:, [0, 4, 5]], cand[:, [0, 2, 3]])
        self.assertTrue((mm.head_labels(np.full((2, 5), -1)) == -1).all())

    def test_feature_layout(self):
        rng = np.random.default_rng(0)
        block = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)        # h=5, w=3, C=4
        f = mm.features_from_block(block)
        self.assertEqual((f.shape, f.dtype), ((259,), np.float32))
        grid = f[:256].reshape(8, 8, 4)
        np.testing.assert_array_equal(grid[:5, :3], block / np.float32(255))
        self.assertEqual(np.count_nonzero(grid[5:]) + np.count_nonzero(grid[:, 3:]), 0)
        np.testing.assert_allclose(f[256:], [3 / 8, 5 / 8, 1.0])
        three = mm.features_from_block(block[..., :3])
        self.assertEqual(np.count_nonzero(three[:256].reshape(8, 8, 4)[..., 3]), 0)
        self.assertAlmostEqual(float(three[258]), 0.75)
        with self.assertRaises(ValueError):
            mm.features_from_block(np.zeros((9, 8, 3), np.uint8))
        with self.assertRaises(ValueError):
            mm.features_from_block(np.full((2, 2, 3), 300))

    def test_record_dump_and_image_paths_agree(self):
        rng = np.random.default_rng(1)
        img = rng.integers(0, 256, (21, 19, 3), dtype=np.uint8)
        grid = block_grid(19, 21)
        feats = mm.image_features(img, grid)
        lines = []
        for i, row in enumerate(grid.tolist()):
            block = block_pixels(img, row)
            np.testing.assert_array_equal(feats[i], mm.features_from_block(block))
            rec = {"image": "x", "image_size": [19, 21], "tile_origin": row[:2],
                   "block_origin": row[2:4], "block_size": row[4:6], "components": 3,
                   "pixels": block.ravel().tolist(),
                   "best": {"predictor": 0, "filter": 0, "reorder": 0, "interleave": 0,
                            "entropy": 0, "bits": 1}, "second": None}
            np.testing.assert_array_equal(mm.features_from_record(rec), feats[i])
            lines.append(json.dumps(rec, separators=(",", ":")))
        np.testing.assert_array_equal(mm.features_from_record(lines[-1]), feats[-1])
        np.testing.assert_array_equal(tiny_model().image_features(img, grid), feats)
        data, _, _ = records.parse_chunk(("\n".join(lines) + "\n").encode(), 1, {})
        np.testing.assert_array_equal(mm.block_features(data["pixels"], data["size"]), feats)
        with self.assertRaisesRegex(ValueError, "pixels"):
            mm.features_from_record(dict(rec, pixels=[1, 2]))

    def test_soft_targets(self):
        best = np.array([[1, 2, 3, 0, 7, 1], [0, 0, 0, 0, 0, 0]])
        second = np.array([[1, 3, 3, 1, 6, 0], [-1] * 6])
        t = mm.soft_targets(best, second, 0.25)
        for h, a in enumerate(mm.HEAD_OFFSETS):
            part = t[:, a:a + mm.HEAD_SIZES[h]]
            np.testing.assert_allclose(part.sum(axis=1), 1)
            if best[0, h] == second[0, h]:
                self.assertEqual(part[0, best[0, h]], 1)       # same class: all on best
            else:
                self.assertEqual(part[0, best[0, h]], 0.75)
                self.assertEqual(part[0, second[0, h]], 0.25)
            self.assertEqual(part[1, 0], 1)                    # missing second


class TrainingMathTest(unittest.TestCase):
    def test_gradients_match_finite_differences(self):
        model = tiny_model(seed=3)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((7, 259)).astype(np.float32)
        best = mm.head_labels(rng.integers(0, 2, (7, 5)) * [7, 95, 7, 1, 1])
        second = mm.head_labels(rng.integers(0, 2, (7, 5)) * [3, 40, 2, 1, 0])
        t = mm.soft_targets(best, second, 0.2)
        rec = _Recorder()
        loss, head_loss, _ = model.train_batch(x, t, rec, rng)
        self.assertAlmostEqual(loss, float(head_loss.sum()), places=4)

        def loss_now():
            lp = mm.head_log_softmax(model.logits(x).astype(np.float64))
            return -(t * lp).sum(axis=1).mean()

        self.assertAlmostEqual(loss, loss_now(), places=4)
        for i, p in enumerate(model.params()):
            for _ in range(3):
                idx = tuple(int(rng.integers(s)) for s in p.shape)
                old = p[idx]
                p[idx] = old + 1e-2
                up = loss_now()
                p[idx] = old - 1e-2
                down = loss_now()
                p[idx] = old
                self.assertAlmostEqual((up - down) / 2e-2, float(rec.grads[i][idx]), delta=2e-3)

    def test_adamw_matches_the_formula(self):
        rng = np.random.default_rng(1)
        w = rng.standard_normal((3, 2)).astype(np.float32)
        b = rng.standard_normal(2).astype(np.float32)
        opt = mm.AdamW([w, b], lr=0.1, weight_decay=0.5)
        ref = [w.astype(np.float64), b.astype(np.float64)]
        m = [np.zeros_like(r) for r in ref]
        v = [np.zeros_like(r) for r in ref]
        for step in range(1, 4):
            grads = [rng.standard_normal(p.shape).astype(np.float32) for p in (w, b)]
            opt.update([w, b], grads)
            for i, g in enumerate(grads):
                if i == 0:                                     # decay on weights only
                    ref[i] *= 1 - 0.1 * 0.5
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g.astype(np.float64) ** 2
                denom = np.sqrt(v[i]) / np.sqrt(1 - 0.999 ** step) + 1e-8
                ref[i] -= 0.1 / (1 - 0.9 ** step) * m[i] / denom
        np.testing.assert_allclose(w, ref[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, ref[1], rtol=1e-5, atol=1e-6)

    def test_training_is_deterministic_for_a_seed(self):
        def run(seed):
            model = mm.MultiTaskModel((32, 16), dropout=0.2, seed=seed)
            opt = model.make_optimizer(1e-2)
            rng = np.random.default_rng(seed)
            x = np.random.default_rng(9).standard_normal((40, 259)).astype(np.float32)
            t = mm.soft_targets(np.zeros((40, 6), int), np.ones((40, 6), int), 0.2)
            for _ in range(3):
                model.train_batch(x, t, opt, rng)
            return model.params()

        a, b, c = run(5), run(5), run(6)
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)
        self.assertFalse(all(np.array_equal(p, q) for p, q in zip(a, c)))

    def test_dropout_only_while_training(self):
        model = tiny_model(dropout=0.5)
        x = np.random.default_rng(2).standard_normal((5, 259)).astype(np.float32)
        np.testing.assert_array_equal(model.logits(x), model.logits(x))
        rec = _Recorder()
        t = mm.soft_targets(np.zeros((5, 6), int), np.zeros((5, 6), int), 0.0)
        _, _, l1 = model.train_batch(x, t, rec, np.random.default_rng(1))
        l1 = l1.copy()
        _, _, l2 = model.train_batch(x, t, rec, np.random.default_rng(2))
        self.assertFalse(np.array_equal(l1, l2))               # different masks


class InferenceTest(unittest.TestCase):
    def setUp(self):
        self.model = tiny_model(seed=4)
        rng = np.random.default_rng(3)
        self.model.set_feature_scaler(rng.random(259) * 0.5, rng.random(259) + 0.5)
        self.x = rng.random((6, 259)).astype(np.float32)

    def test_scaler_is_applied_inside(self):
        plain = mm.MultiTaskModel((16, 8), seed=4)             # identity scaler, same weights
        mean, std = self.model.feature_scaler
        np.testing.assert_allclose(self.model.logits(self.x), plain.logits((self.x - mean) / std),
                                   rtol=1e-5, atol=1e-5)
        zero_std = tiny_model()
        zero_std.set_feature_scaler(np.zeros(259), np.zeros(259))
        self.assertTrue((zero_std.feature_scaler[1] == 1).all())

    def test_predict_shapes(self):
        single = self.model.predict_logits(self.x[0])
        batch = self.model.predict_logits(self.x)
        self.assertEqual(list(single), list(mm.HEAD_NAMES))
        for name, size in mm.HEADS:
            self.assertEqual(single[name].shape, (size,))
            self.assertEqual(batch[name].shape, (6, size))
            np.testing.assert_allclose(single[name], batch[name][0], rtol=1e-5, atol=1e-6)
        logp = self.model.predict_log_proba(self.x)
        for name in mm.HEAD_NAMES:
            np.testing.assert_allclose(np.exp(logp[name]).sum(axis=1), 1, rtol=1e-5)
        with self.assertRaisesRegex(ValueError, "259"):
            self.model.predict_logits(np.zeros((2, 258)))

    def test_predict_topk_as_in_the_guide(self):
        features = self.x[0]
        topk = self.model.predict_topk(features[None, :], k=2)
        self.assertEqual(topk, self.model.predict_topk(features, k=2))
        logp = self.model.predict_log_proba(features)
        for name, size in mm.HEADS:
            pairs = topk[name]
            self.assertEqual(len(pairs), 2)
            self.assertIsInstance(pairs[0][0], int)
            self.assertIsInstance(pairs[0][1], float)
            order = np.argsort(-logp[name], kind="stable")
            self.assertEqual([c for c, _ in pairs], order[:2].tolist())
            self.assertGreaterEqual(pairs[0][1], pairs[1][1])
        self.assertEqual(len(self.model.predict_topk(features, k=5)["head_interleave"]), 2)
        with self.assertRaisesRegex(ValueError, "topk_arrays"):
            self.model.predict_topk(self.x)
        for bad_k in (0, -1, 2.5, True, "2"):          # k=-1 used to return size-1 classes
            with self.assertRaisesRegex(ValueError, "positive integer"):
                self.model.predict_topk(features, k=bad_k)
        hostile = features.copy()
        hostile[5] = np.inf
        with self.assertRaisesRegex(ValueError, "finite"):
            self.model.predict_topk(hostile)

    def test_build_filter_candidates_brute_force(self):
        for i in range(len(self.x)):
            topk = self.model.predict_topk(self.x[i], k=2)
            got = mm.build_filter_candidates(topk)
            combos = sorted(((lp_p + lp_q + lp_s, stages.filter_code(p, q, s))
                             for p, lp_p in topk["head_filter_perm"]
                             for q, lp_q in topk["head_filter_primary"]
                             for s, lp_s in topk["head_filter_secondary"]),
                            key=lambda c: -c[0])
            self.assertEqual(len(got), 4)
            self.assertEqual([c for c, _ in got], [c for _, c in combos[:4]])
            for (code, lp), (want_lp, _) in zip(got, combos):
                self.assertAlmostEqual(lp, want_lp, places=5)
        self.assertEqual(len(mm.build_filter_candidates(topk, max_candidates=2)), 2)
        one = {name: topk[name][:1] for name in topk}
        self.assertEqual(len(mm.build_filter_candidates(one)), 1)


class SaveLoadTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_model_")
        self.addCleanup(shutil.rmtree, self.tmp)

    def test_round_trip(self):
        model = mm.MultiTaskModel((24, 12, 6), dropout=0.3, seed=7)
        model.set_feature_scaler(np.arange(259) / 259, np.arange(259) / 100 + 1)
        model.metadata = {"epoch": 3}
        path = os.path.join(self.tmp, "m.npz")
        model.save(path)
        self.assertEqual(os.listdir(self.tmp), ["m.npz"])       # no temporary left behind
        loaded = mm.MultiTaskModel.load(path)
        self.assertEqual((loaded.hidden_dims, loaded.dropout, loaded.metadata),
                         ((24, 12, 6), 0.3, {"epoch": 3}))
        x = np.random.default_rng(0).random((4, 259))
        np.testing.assert_array_equal(model.logits(x), loaded.logits(x))

    def test_old_or_foreign_files_give_a_clear_error(self):
        old = os.path.join(self.tmp, "old.npz")
        np.savez(old, mean=np.zeros(259), std=np.ones(259), W0=np.zeros((259, 4)))
        with self.assertRaisesRegex(mm.ModelFormatError, "re-train with `python3 train_multitask.py"):
            mm.MultiTaskModel.load(old)
        text = os.path.join(self.tmp, "notes.npz")
        with open(text, "w") as f:
            f.write("not a model")
        with self.assertRaisesRegex(mm.ModelFormatError, "not a model NPZ"):
            mm.MultiTaskModel.load(text)
        npy = os.path.join(self.tmp, "plain.npy")
        np.save(npy, np.zeros(3))
        with self.assertRaisesRegex(mm.ModelFormatError, "re-train"):
            mm.MultiTaskModel.load(npy)
        with self.assertRaises(FileNotFoundError):
            mm.MultiTaskModel.load(os.path.join(self.tmp, "missing.npz"))

    def test_damaged_models(self):
        path = os.path.join(self.tmp, "m.npz")
        tiny_model().save(path)
        with np.load(path) as npz:
            arrays = dict(npz)
        for change in ({"format": np.array("tlg8-multitask-model/0")},
                       {"feature_layout": np.array("residual-energies-v9")},
                       {"head_sizes": np.array([8, 6, 4, 4, 8, 3])},
                       {"trunk_weight_1": np.zeros((16, 9), np.float32)},
                       {"feature_scaler": np.zeros((2, 258), np.float32)}):
            bad = os.path.join(self.tmp, "bad.npz")
            np.savez(bad, **dict(arrays, **change))
            with self.assertRaises(mm.ModelFormatError, msg=str(change)):
                mm.MultiTaskModel.load(bad)


if __name__ == "__main__":
    unittest.main()
