"""beam_search_runtime: margins, best-first order, the hard trial cap, batch == single."""
import itertools
import unittest

import numpy as np

import beam_search_runtime as bs
import multitask_model as mm
from tlg8.cost import BlockEncoder
from tlg8.image import block_grid
from tlg8.trials import TrialError


class StubModel:
    """A model whose per-head log-probabilities are given; features[:, 0] is the block."""

    def __init__(self, logp):
        self.logp = logp                   # {head: (N, size)} log-probabilities
        self.calls = 0

    def topk_arrays(self, features, k=2):
        self.calls += 1
        rows = np.asarray(features)[:, 0].astype(int)
        out = {}
        for name in mm.HEAD_NAMES:
            part = self.logp[name][rows]
            ids = np.argsort(-part, axis=1, kind="stable")[:, :k]
            out[name] = (ids, np.take_along_axis(part, ids, 1).astype(np.float32))
        return out

    # The model interface of a per-head model: the margin beam search (as MultiTaskModel).
    def choose_block(self, *args, **options):
        return bs.choose_block(self, *args, **options)

    def choose_blocks(self, *args, **options):
        return bs.choose_blocks(self, *args, **options)


def random_logp(rng, n):
    out = {}
    for name, size in mm.HEADS:
        z = rng.standard_normal((n, size)) * rng.choice([0.3, 1, 4], (n, 1))
        out[name] = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def block_features(i):
    f = np.zeros(mm.N_FEATURES, np.float32)
    f[0] = i
    return f


class Recorder:
    def __init__(self, bits=None):
        self.calls = []
        self.bits = bits or (lambda p, f, r, i: 1000 + 37 * p + 5 * f + 11 * r + 3 * i)

    def __call__(self, *config):
        self.calls.append(config)
        return self.bits(*config)


class BeamTest(unittest.TestCase):
    def test_hard_cap_for_any_margins(self):
        rng = np.random.default_rng(0)
        n = 12
        model = StubModel(random_logp(rng, n))
        margins = (-np.inf, -1.0, 0.0, 0.3, 2.0, 1e9, np.inf, np.nan)
        for max_trials in (1, 2, 3, 7, 16, 31, 32, 40):
            for m_r, m_i, m_p in itertools.product(margins, repeat=3):
                i = int(rng.integers(n))
                enc = Recorder()
                cfg, bits = bs.select_block_config(block_features(i), model, enc, m_r, m_i, m_p,
                                                   max_trials)
                self.assertLessEqual(len(enc.calls), max_trials)
                self.assertEqual(len(set(enc.calls)), len(enc.calls))
                # Exactly the kept combinations, up to the cap.
                top = {name: np.sort(model.logp[name][i])[::-1] for name in mm.HEAD_NAMES}
                kept = [1 if top[h][0] - top[h][1] > m else 2 for h, m in
                        (("head_predictor", m_p), ("head_reorder", m_r), ("head_interleave", m_i))]
                self.assertEqual(len(enc.calls), min(max_trials, kept[0] * kept[1] * kept[2] * 4))
                self.assertEqual(bits, min(enc.bits(*c) for c in enc.calls))
                self.assertIn(tuple(cfg.values()), enc.calls)

    def test_margins_decide_top1_or_top2(self):
        logp = random_logp(np.random.default_rng(1), 1)
        p = np.full(8, -10.0)
        p[3], p[5] = np.log(0.6), np.log(0.6) - 0.5           # predictor 3 leads 5 by 0.5
        logp["head_predictor"][0] = p
        model = StubModel(logp)
        for margin, want in ((0.3, {3}), (0.6, {3, 5}), (0.5, {3, 5})):
            enc = Recorder()
            bs.select_block_config(block_features(0), model, enc, margin_predictor=margin,
                                   max_trials=32)
            self.assertEqual({c[0] for c in enc.calls}, want, margin)

    def test_best_first_and_ties(self):
        rng = np.random.default_rng(2)
        model = StubModel(random_logp(rng, 5))
        for i in range(5):
            enc = Recorder(bits=lambda *c: 500)                # every trial ties
            cfg, bits = bs.select_block_config(block_features(i), model, enc, 9, 9, 9, 16)
            self.assertEqual((tuple(cfg.values()), bits), (enc.calls[0], 500))
            configs, scores, counts = bs.plan_trials(block_features(i)[None], model, 9, 9, 9, 16)
            self.assertEqual([tuple(c) for c in configs[0, :counts[0]].tolist()], enc.calls)
            s = scores[0, :counts[0]]
            self.assertTrue((np.diff(s) <= 0).all())
            # Scores are the summed log-probabilities of the four choices.
            topk = model.topk_arrays(block_features(i)[None])
            filters = dict(mm.build_filter_candidates(
                {h: [(int(a), float(b)) for a, b in zip(*[v[0] for v in topk[h]])]
                 for h in mm.HEAD_NAMES}))
            for (p, f, r, il), sc in zip(enc.calls, s):
                want = (model.logp["head_predictor"][i, p] + filters[f]
                        + model.logp["head_reorder"][i, r] + model.logp["head_interleave"][i, il])
                self.assertAlmostEqual(float(sc), float(want), places=4)

    def test_result_shape_and_bad_arguments(self):
        model = StubModel(random_logp(np.random.default_rng(3), 1))
        cfg, bits = bs.select_block_config(block_features(0), model, Recorder())
        self.assertEqual(list(cfg), ["predictor", "filter", "reorder", "interleave"])
        self.assertTrue(all(isinstance(v, int) for v in cfg.values()))
        for bad in (0, -1, 2.5, True, None, "16"):
            with self.assertRaises(ValueError, msg=repr(bad)):
                bs.select_block_config(block_features(0), model, Recorder(), max_trials=bad)
        for result in (None, "12", float("nan"), np.float32("nan"), np.inf, -1, True,
                       np.array([3.0])):
            with self.assertRaisesRegex(TrialError, r"try_encode_block\(\d+, \d+, \d+, \d+\)",
                                        msg=repr(result)):
                bs.select_block_config(block_features(0), model, lambda *c, r=result: r)
        # any finite number >= 0 is bits, NumPy scalars and 0-d arrays included
        for result in (np.float32(7.5), np.int64(3), np.array(4), 0):
            _, bits = bs.select_block_config(block_features(0), model,
                                             lambda *c, r=result: r)
            self.assertEqual(bits, result)
        with self.assertRaisesRegex(ValueError, "select_block_configs"):
            bs.select_block_config(np.zeros((2, mm.N_FEATURES)), model, Recorder())

    def test_batch_equals_single_with_one_model_call(self):
        rng = np.random.default_rng(4)
        n = 20
        model = StubModel(random_logp(rng, n))
        features = np.stack([block_features(i) for i in range(n)])
        bits_of = lambda i, p, f, r, il: int(rng_bits[i, p, f % 7, r, il])
        rng_bits = rng.integers(100, 200, (n, 8, 7, 8, 2))
        configs, bits, trials = bs.select_block_configs(features, model, bits_of, max_trials=5)
        self.assertEqual(model.calls, 1)
        self.assertTrue((trials <= 5).all())
        for i in range(n):
            cfg, b = bs.select_block_config(features[i], model,
                                            lambda *c, i=i: bits_of(i, *c), max_trials=5)
            self.assertEqual((list(cfg.values()), b), (configs[i].tolist(), bits[i]))

    def test_deterministic(self):
        model = StubModel(random_logp(np.random.default_rng(5), 3))
        runs = [bs.plan_trials(np.stack([block_features(i) for i in range(3)]), model)
                for _ in range(2)]
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b)


class ImageTest(unittest.TestCase):
    def test_encode_choices_matches_per_block_search(self):
        rng = np.random.default_rng(6)
        samples = rng.integers(0, 256, (13, 19, 3), dtype=np.uint8)
        samples[:8, :8] = 120                                   # a flat block among noise
        model = mm.MultiTaskModel((16, 8), seed=1)
        grid = block_grid(19, 13)
        choices, bits, trials = bs.encode_choices(samples, model, max_trials=6)
        self.assertEqual(choices.shape, (len(grid), 5))
        self.assertTrue(((trials >= 1) & (trials <= 6)).all())
        features = mm.image_features(samples, grid)
        for i, row in enumerate(grid):
            enc = BlockEncoder.from_image(samples, row)
            cfg, b = bs.select_block_config(features[i], model, enc, max_trials=6)
            self.assertEqual(enc.trials, trials[i])
            self.assertEqual(list(cfg.values()), choices[i, :4].tolist())
            self.assertEqual((b, enc.entropy_of(*cfg.values())), (bits[i], choices[i, 4]))


if __name__ == "__main__":
    unittest.main()
