"""train_multitask.py DATA --image-dir DIR: the pair selector trained from dumps.

Tiny images written here with Pillow and dumped with tlg8.dump (the reference encoder's
format); one epoch on a few blocks each, so the whole file runs in seconds.
"""
import contextlib
import io
import json
import os
import shutil
import tempfile
import unittest

import numpy as np
from PIL import Image

import train_multitask
from beam_search_runtime import select_block_config
from multitask_model import MultiTaskModel
from test_features import random_image
from tlg8 import dump, evaluate, heads, trials
from tlg8.cost import BlockEncoder
from tlg8.image import block_grid, read_image
from tlg8.selector import SELECTOR_FORMAT

SMALL = ["--epochs", "1", "--blocks-per-image", "12", "--selector-hidden", "8", "8",
         "--quiet"]


def run(*argv):
    """train_multitask.main with captured streams: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = train_multitask.main([str(a) for a in argv])
        except SystemExit as e:                 # argparse errors
            status = e.code
    return status, out.getvalue(), err.getvalue()


class GuidePathTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="test_guide_path_")
        cls.images = os.path.join(cls.tmp, "images")
        os.makedirs(cls.images)
        cls.dumps = []
        # Three images (one with edge blocks), one dump each, tagged with the file name.
        for seed, (name, h, w) in enumerate((("a.png", 24, 32), ("b.png", 24, 24),
                                             ("c.png", 20, 28))):
            path = os.path.join(cls.images, name)
            Image.fromarray(random_image(seed, h, w, 3)).save(path)
            out = os.path.join(cls.tmp, name.replace(".png", ".jsonl"))
            with contextlib.redirect_stderr(io.StringIO()):
                assert dump.main([path, "--tag-basename", "--out", out, "--quiet"]) == 0
            cls.dumps.append(out)
        cls.cache = ["--cache-dir", os.path.join(cls.tmp, "cache")]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def outdir(self, name):
        path = os.path.join(self.tmp, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def test_trains_and_exports_a_selector_the_guide_api_runs(self):
        export, log = self.outdir("export"), os.path.join(self.tmp, "log.jsonl")
        status, out, err = run(*self.dumps, "--image-dir", self.images, "--export-dir", export,
                               "--log-file", log, "--val-images", "b.png", *SMALL, *self.cache)
        self.assertEqual(status, 0, err)
        self.assertEqual(sorted(os.listdir(export)), ["metrics.json", "multitask_best.npz"])
        self.assertIn("epoch 1/1", out)
        self.assertIn("two_choice  tie_aware", out)
        self.assertIn("[exported]", out)
        self.assertIn("images found 3 of 3", err)
        with open(log) as f:
            epochs = [json.loads(x) for x in f]
        self.assertEqual([e["epoch"] for e in epochs], [1])
        self.assertEqual(set(epochs[0]["val"]["reorder"]), set(heads.METRICS) | {"tie_aware"})
        with open(os.path.join(export, "metrics.json")) as f:
            metrics = json.load(f)
        self.assertEqual((metrics["epoch"], metrics["status"]), (1, "completed"))
        self.assertEqual(metrics["split"]["val_images"], ["b.png"])
        model = MultiTaskModel.load(os.path.join(export, "multitask_best.npz"))
        self.assertEqual(model.format, SELECTOR_FORMAT)
        # The guide's call, unchanged (margins are the beam search's; the selector ignores
        # them), through the cost model's encoder: at most 16 trials.
        samples, _ = read_image(os.path.join(self.images, "c.png"))
        grid = block_grid(samples.shape[1], samples.shape[0])
        for i in (0, len(grid) - 1):
            encoder = BlockEncoder.from_image(samples, grid[i])
            cfg, bits = select_block_config(model.image_features(samples, grid)[i], model,
                                            encoder, margin_reorder=0.5, margin_interleave=0.5,
                                            margin_predictor=0.3)
            self.assertLessEqual(encoder.trials, 16)
            self.assertEqual(set(cfg), {"predictor", "filter", "reorder", "interleave"})
        # The real-bits evaluation reports the ranking's heads and the kept trial's, tie-aware.
        result = evaluate.evaluate([os.path.join(self.images, "c.png")], model, 4)
        for key in ("heads", "heads_kept"):
            self.assertEqual(set(result["overall"][key]["head_reorder"]),
                             set(heads.METRICS) | {"tie_aware"})
        self.assertLessEqual(result["overall"]["methods"]["model"]["trials_max"], 4)
        # Fine-tuning the export; a pixel model cannot be fine-tuned on this path.
        tuned = self.outdir("tuned")
        status, out, err = run(*self.dumps, "--image-dir", self.images, "--load",
                               os.path.join(export, "multitask_best.npz"), "--export-dir",
                               tuned, *SMALL, *self.cache)
        self.assertEqual(status, 0, err)
        self.assertEqual(MultiTaskModel.load(os.path.join(tuned, "multitask_best.npz")).format,
                         SELECTOR_FORMAT)

    def test_missing_and_mismatching_images_are_counted_and_named(self):
        images = self.outdir("some_images")
        os.makedirs(images)
        shutil.copy(os.path.join(self.images, "a.png"), images)         # b.png is missing
        changed = np.array(Image.open(os.path.join(self.images, "c.png")))
        changed[0, 0] ^= 1                                # the first block's pixels differ
        Image.fromarray(changed).save(os.path.join(images, "c.png"))
        status, out, err = run(*self.dumps, "--image-dir", images, "--split", "block",
                               *SMALL, *self.cache)
        self.assertEqual(status, 0, err)
        self.assertIn("warning: 10 of 33 records left out (9 image not found, 1 pixels differ "
                      "from the image)", err)
        self.assertIn("b.png: image not found (9 records", err)
        self.assertIn("c.png: pixels differ from the image (1 records", err)
        self.assertIn("first block at [0, 0]", err)
        self.assertEqual(err.count("left out"), 1)
        status, _, err = run(*self.dumps, "--image-dir", images, "--strict", *SMALL,
                             *self.cache)
        self.assertEqual(status, 1)
        self.assertIn("b.png: image not found", err)

    def test_dry_run_writes_nothing_and_reports_the_images(self):
        images = self.outdir("two_images")
        os.makedirs(images)
        for name in ("a.png", "c.png"):
            shutil.copy(os.path.join(self.images, name), images)
        export, log = self.outdir("dry"), os.path.join(self.tmp, "dry.jsonl")
        status, out, err = run(*self.dumps, "--image-dir", images, "--dry-run", "--export-dir",
                               export, "--log-file", log, *SMALL, *self.cache)
        self.assertEqual(status, 0, err)
        self.assertFalse(os.path.exists(export))
        self.assertFalse(os.path.exists(log))
        self.assertIn("images found 2 of 3", out)
        self.assertIn("b.png: image not found", out)
        self.assertIn(f"a.png: {os.path.join(images, 'a.png')}, 12 of 12 records usable", out)
        self.assertNotIn("epoch", out)

    def test_without_images_the_pixel_model_trains_with_a_hint(self):
        for extra in ([], ["--image-dir", self.outdir("empty")]):
            if extra:
                os.makedirs(extra[1])
            export = self.outdir("pixel")
            status, out, err = run(*self.dumps, *extra, "--epochs", "1", "--export-dir", export,
                                   "--quiet", *self.cache)
            self.assertEqual(status, 0, err)
            self.assertEqual(MultiTaskModel.load(os.path.join(export, "multitask_best.npz"))
                             .format, "tlg8-multitask-model/1")
            if extra:
                self.assertIn("training the pixel model instead", err)
            else:
                hints = [x for x in err.splitlines() if x.startswith("hint:")]
                self.assertEqual(len(hints), 1)
                self.assertIn("--image-dir DIR", hints[0])

    def test_options_that_do_not_apply_are_refused(self):
        for argv, reason in ((["--lr", "0.1"], "--lr does not apply with --image-dir"),
                             (["--hidden-dims", "8", "--dropout", "0.2"],
                              "--dropout, --hidden-dims do not apply with --image-dir"),
                             (["--selector-epochs", "1", "1"], "--selector-epochs does not"),
                             (["--selector"], "--image-dir goes with dumps"),
                             (["--epochs", "0"], "must be positive"),
                             (["--test-ratio", "1"], "--test-ratio must be in (0, 1)")):
            status, _, err = run(*self.dumps, "--image-dir", self.images, *argv, "--quiet")
            self.assertEqual(status, 2, argv)
            self.assertIn(reason, err)
        status, _, err = run(*self.dumps, "--image-dir", os.path.join(self.tmp, "nowhere"))
        self.assertEqual(status, 2)
        self.assertIn("no such directory", err)


class MetricsAndStrategyTest(unittest.TestCase):
    def test_small_caps_leave_room_for_round_two(self):
        self.assertEqual(trials.probe_shape(6, 2, 16), (6, 2))       # the model's own shape
        self.assertEqual(trials.probe_shape(6, 2, 12), (6, 2))
        self.assertEqual(trials.probe_shape(6, 2, 8), (5, 1))        # 5 x 1 + 3 in round two
        self.assertEqual(trials.probe_shape(6, 2, 4), (3, 1))
        self.assertEqual(trials.probe_shape(6, 2, 1), (1, 1))

    def test_hit_counts_with_a_tie_mask(self):
        best = np.zeros((3, 6), np.int64)
        second = np.ones((3, 6), np.int64)
        second[2] = -1                                        # no second
        top2 = np.zeros((3, 6, 2), np.int64)
        top2[:, :, 0] = [[1], [1], [1]]                       # every head answers class 1
        tie = np.array([True, False, False])
        counts = heads.hit_counts(top2, best, second, tie)
        self.assertEqual(counts.shape, (6, 4))
        np.testing.assert_array_equal(counts[0], [0, 3, 2, 1])  # top1, top2, two_choice, tie
        np.testing.assert_array_equal(heads.hit_counts(top2, best, second), counts[:, :3])
        metrics = heads.metrics_of(counts, 3)
        self.assertAlmostEqual(metrics["predictor"]["tie_aware"], 1 / 3)
        np.testing.assert_array_equal(
            heads.tie_mask(np.array([[0], [0], [-1]]), np.array([[5, 5], [5, 6], [5, 0]])),
            [True, False, False])


if __name__ == "__main__":
    unittest.main()
