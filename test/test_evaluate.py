"""tlg8.evaluate against brute force: every number of a small image recomputed block by block
with the literal estimator (cost.block_bits via cost.BlockEncoder) and plain definitions."""
import contextlib
import io
import json
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from shared_data import IMAGES, TLGCONV, parity_names
from shared_data import require_shared
from test_selector import random_image, random_selector, select_one
from tlg8 import cost, evaluate, search, stages, trials
from tlg8.heads import head_labels
from tlg8.image import block_grid, block_workspaces
from tlg8_multitask.loader import load_model

OPTIONS = list(trials.STATIC_OPTION_ORDER)


def pair_measures(ws):
    """(energy, sad) of all 768 pairs of one block, straight from stages.color_filter."""
    res = np.stack([stages.residuals(ws, p) for p in range(8)])
    energy = np.zeros(768, np.int64)
    sad = np.zeros(768, np.int64)
    for p in range(8):
        for f in range(96):
            coded = stages.color_filter(res[p], f).astype(np.int64)
            energy[p * 96 + f] = (coded ** 2).sum()
            sad[p * 96 + f] = np.abs(coded).sum()
    return energy, sad


def brute_baselines(ws, cap):
    """Bits per baseline of one block, trial by trial through the literal estimator."""
    enc = cost.BlockEncoder(ws)
    full = ws.shape[1:] == (9, 10)
    opts = OPTIONS if full else [o for o in OPTIONS if o < 2]
    energy, sad = pair_measures(ws)
    out = {}
    for name, measure in (("sse-top1", energy), ("sad-top1", sad)):
        order = np.argsort(measure, kind="stable")
        plan = [(pair, o) for pair in order for o in opts][:cap]
        out[name] = (min(enc(pr // 96, pr % 96, o // 2, o % 2) for pr, o in plan), len(plan))
    # sad-adaptive, literally: 4 pairs x 2 options, then the best pair's other options,
    # then the options of the 5th..8th pairs.
    order = list(np.argsort(sad, kind="stable")[:8])
    n_opts = min(2, len(opts))
    n_pairs = 4
    while n_pairs * n_opts > cap:
        n_pairs, n_opts = (n_pairs - 1, n_opts) if n_pairs > 1 else (n_pairs, n_opts - 1)
    tried = []
    for pr in order[:n_pairs]:
        for o in opts[:n_opts]:
            tried.append((pr, o, enc(pr // 96, pr % 96, o // 2, o % 2)))
    per_pair = [min(b for p2, _, b in tried if p2 == pr) for pr in order[:n_pairs]]
    winner = order[int(np.argmin(per_pair))]
    queue = [(winner, o) for o in opts[n_opts:]] + \
        [(pr, o) for pr in order[n_pairs:] for o in opts]
    for pr, o in queue[:cap - len(tried)]:
        tried.append((pr, o, enc(pr // 96, pr % 96, o // 2, o % 2)))
    out["sad-adaptive"] = (min(b for _, _, b in tried), len(tried))
    return out


class EvaluateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.samples = random_image(11, 19, 21, 3)          # 9 blocks, edge blocks included
        cls.path = os.path.join(cls.tmp.name, "small.bmp")
        Image.fromarray(cls.samples).save(cls.path)
        cls.model = random_selector(5)
        cls.model_path = os.path.join(cls.tmp.name, "sel.npz")
        cls.model.save(cls.model_path)
        cls.loaded = load_model(cls.model_path)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_numbers_equal_brute_force(self):
        cap = 16
        result = evaluate.evaluate([self.path], self.loaded, cap, keep_blocks=True)
        r = result["images"][0]
        blocks = r["per_block"]
        grid = block_grid(21, 19)
        ref_bits = []
        hits = {m: [] for m in r["methods"]}
        heads_top1 = {h: [] for h in evaluate.HEADS}
        x = self.model.image_features(self.samples)
        for i, row in enumerate(grid):
            ws = block_workspaces(self.samples, grid[i:i + 1])
            best, second = search.search_blocks(ws)
            ref_bits.append(best[0, 5])
            np.testing.assert_array_equal(blocks["best"][i], best[0])
            # the model, one block through its encoder callback
            calls = []
            enc = cost.BlockEncoder(ws[0])

            def callback(*config):
                calls.append(config)
                return enc(*config)
            cfg, bits, n = select_one(ws[0], self.model, callback, cap)
            self.assertEqual(blocks["bits"]["model"][i], bits)
            self.assertEqual(blocks["trials"]["model"][i], n)
            self.assertEqual(blocks["chosen"]["model"][i, :4].tolist(), cfg)
            self.assertEqual(blocks["chosen"]["model"][i, 4], enc.entropy_of(*cfg))
            self.assertLessEqual(n, cap)
            hits["model"].append(next((k for k, c in enumerate(calls)
                                       if list(c) == best[0, :4].tolist()), -1))
            for name, (b, n_trials) in brute_baselines(ws[0], cap).items():
                self.assertEqual(blocks["bits"][name][i], b, (name, i))
                self.assertEqual(blocks["trials"][name][i], n_trials)
            labels = head_labels(best)[0]
            top = self.model.predict_topk(x[i], k=1)
            for k, h in enumerate(evaluate.HEADS):
                heads_top1[h].append(top[h][0][0] == labels[k])
        ref = sum(ref_bits)
        self.assertEqual(r["reference"]["bits"], ref)
        for m, x_ in r["methods"].items():
            total = int(blocks["bits"][m].sum())
            self.assertEqual(x_["bits"], total)
            self.assertAlmostEqual(x_["extra_percent"], 100 * (total / ref - 1))
            self.assertLessEqual(x_["trials_max"], cap)
        h = np.array(hits["model"])
        for k in evaluate.HIT_K:
            self.assertAlmostEqual(r["methods"]["model"]["hit"][str(k)],
                                   np.mean((h >= 0) & (h < k)))
        for name in evaluate.HEADS:
            self.assertAlmostEqual(r["heads"][name]["top1"], np.mean(heads_top1[name]))
        # one image: the overall numbers are the image's
        self.assertEqual(result["overall"]["methods"]["model"]["bits"],
                         r["methods"]["model"]["bits"])

    def test_trials_never_exceed_the_cap(self):
        for cap in (1, 3, 9):
            r = evaluate.evaluate([self.path], self.loaded, cap, keep_blocks=True)
            for m, x in r["images"][0]["methods"].items():
                self.assertLessEqual(x["trials_max"], cap, m)
                self.assertTrue((r["images"][0]["per_block"]["trials"][m] <= cap).all())
                self.assertTrue((r["images"][0]["per_block"]["trials"][m] >= 1).all())
        with self.assertRaises(ValueError):
            evaluate.evaluate([self.path], self.loaded, 0)

    def test_multitask_model_through_its_beam_search(self):
        import beam_search_runtime as bsr
        import multitask_model as mm
        model = mm.MultiTaskModel(hidden_dims=(8,), seed=1)
        path = os.path.join(self.tmp.name, "mt.npz")
        model.save(path)
        r = evaluate.evaluate([self.path], load_model(path), 16, keep_blocks=True)
        self.assertEqual(r["model"]["format"], mm.MODEL_FORMAT)
        blocks = r["images"][0]["per_block"]
        grid = block_grid(21, 19)
        for i in range(len(grid)):
            enc = cost.BlockEncoder.from_image(self.samples, grid[i])
            cfg, bits = bsr.select_block_config(
                mm.image_features(self.samples, grid[i:i + 1])[0], model, enc)
            self.assertEqual(blocks["bits"]["model"][i], bits)
            self.assertEqual(blocks["trials"]["model"][i], enc.trials)

    def test_reference_bits_equal_the_dumps(self):
        require_shared("data/images", "data/tlgconv")
        names = [n for n in parity_names()
                 if os.path.getsize(os.path.join(IMAGES, n + ".bmp")) < 2000][:6]
        paths = [os.path.join(IMAGES, n + ".bmp") for n in names]
        searched = evaluate.evaluate(paths, self.loaded, 16, keep_blocks=True)
        dumped = evaluate.evaluate(paths, self.loaded, 16, dumps=TLGCONV, keep_blocks=True)
        for a, b in zip(searched["images"], dumped["images"]):
            self.assertEqual(a["reference"]["source"], "search")
            self.assertTrue(b["reference"]["source"].startswith(TLGCONV))
            np.testing.assert_array_equal(a["per_block"]["best"], b["per_block"]["best"])
            np.testing.assert_array_equal(a["per_block"]["second"], b["per_block"]["second"])
            self.assertEqual(a["reference"]["bits"], b["reference"]["bits"])

    def test_dump_of_another_image_or_none_is_refused(self):
        require_shared("data/tlgconv/checkerboard_rgb.jsonl.gz")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "checkerboard_rgb.bmp")
            Image.fromarray(random_image(1, 16, 24, 3)).save(path)      # 6 blocks, not 4
            with self.assertRaisesRegex(evaluate.EvaluationError, "records"):
                evaluate.evaluate([path], self.loaded, 16, dumps=TLGCONV)
            # an image without a dump is an error, not a silent fallback to the search
            with self.assertRaisesRegex(evaluate.EvaluationError, "no dump"):
                evaluate.evaluate([self.path], self.loaded, 16, dumps=tmp)

    def test_cli(self):
        out = io.StringIO()
        err = io.StringIO()
        json_path = os.path.join(self.tmp.name, "r.json")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = evaluate.main([self.path, "--model", self.model_path, "--json", json_path,
                                    "--max-trials", "8", "--quiet"])
        self.assertEqual(status, 0)
        self.assertIn("sad-top1", out.getvalue())
        self.assertIn("head_interleave", out.getvalue())
        self.assertEqual(err.getvalue(), "")
        with open(json_path) as f:
            data = json.load(f)
        self.assertEqual(data["max_trials"], 8)
        self.assertEqual(set(data["overall"]["methods"]), {"model", *evaluate.BASELINES})
        for args, message in (([self.path, "--model", "/nonexistent.npz"], "no such model"),
                              (["/nonexistent.bmp", "--model", self.model_path], "cannot open")):
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                self.assertEqual(evaluate.main(args + ["--quiet"]), 1)
            self.assertIn(message, err.getvalue())
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                status = evaluate.main([self.path, "--model", self.model_path, "--quiet",
                                        "--plot", os.path.join(self.tmp.name, "p.png")])
            self.assertEqual(status, 1)
            self.assertIn("matplotlib", err.getvalue())


if __name__ == "__main__":
    unittest.main()
