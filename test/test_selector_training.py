"""tlg8_multitask.selector_training and train_multitask.py --selector: deterministic
training, the label cache, the options each path honours or refuses, --dry-run, --load."""
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from test_features import random_image
from test_selector import SavedSelectorCase
from tlg8 import selector
from tlg8_multitask import selector_training


class TrainingTest(unittest.TestCase):
    def test_train_is_deterministic_and_learns_something_usable(self):
        samples = random_image(4, 48, 40, 3)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "img.bmp")
            Image.fromarray(samples).save(path)
            kw = dict(blocks_per_image=20, candidates=16, ranker_hidden=8, scan_hidden=8,
                      ranker_epochs=2, scan_epochs=2, cache=os.path.join(tmp, "cache"))
            a = selector_training.train([path], **kw)
            self.assertTrue(os.listdir(os.path.join(tmp, "cache")))
            b = selector_training.train([path], **kw)           # from the label cache
            for pa, pb in zip(a.ranker + a.scan, b.ranker + b.scan):
                np.testing.assert_array_equal(pa, pb)
            self.assertEqual(a.candidates, 16)
            # C = 3 only: the component-3 columns were constant and must not contribute
            for col in (3, 7, 11):
                self.assertFalse(a.ranker[0][col].any())
            for col in (35, 39, 43):
                self.assertFalse(a.scan[0][col].any())
            self.assertEqual(a.metadata["images"], ["img.bmp"])
            sel = a.choose_image(samples)
            self.assertEqual(len(sel["bits"]), len(sel["grid"]))
            self.assertTrue((sel["trials"] <= 16).all())


class TrainCliTest(SavedSelectorCase):
    def test_train_multitask_selector_cli(self):
        import contextlib
        import io
        import train_multitask
        images = os.path.join(self.tmp.name, "images")
        os.makedirs(images, exist_ok=True)
        Image.fromarray(random_image(12, 32, 40, 3)).save(os.path.join(images, "a.png"))
        export = os.path.join(self.tmp.name, "export")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = train_multitask.main(
                [images, "--selector", "--export-dir", export, "--blocks-per-image", "10",
                 "--selector-epochs", "1", "1", "--selector-hidden", "4", "4", "--no-cache",
                 "--quiet"])
        self.assertEqual(status, 0, err.getvalue())
        loaded = selector.load(os.path.join(export, "pair_selector.npz"))
        self.assertEqual(loaded.metadata["options"]["blocks_per_image"], 10)
        with open(os.path.join(export, "selector_metrics.json")) as f:
            self.assertIn("a.png", f.read())
        for argv, reason in (([os.path.join(self.tmp.name, "missing"), "--selector"],
                              "no such file"),
                             ([images, "--selector", "--probe-pairs", "0"], "at least 1"),
                             ([images, "--selector", "--epochs", "3"],
                              "--epochs does not apply to --selector"),
                             ([images, "--candidates", "3"], "--candidates does not apply without --selector"),
                             ([images, "--selector", "--lr", "0.1", "--split", "block"],
                              "--lr, --split do not apply")):
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                with self.assertRaises(SystemExit) as e:
                    train_multitask.main(argv)
            self.assertEqual(e.exception.code, 2)
            self.assertIn(reason, err.getvalue())

    def test_train_multitask_selector_dry_run_and_load(self):
        import contextlib
        import io
        import train_multitask
        images = os.path.join(self.tmp.name, "dry")
        os.makedirs(images, exist_ok=True)
        Image.fromarray(random_image(13, 24, 24, 3)).save(os.path.join(images, "b.png"))
        with open(os.path.join(images, "broken.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n broken")
        export = os.path.join(self.tmp.name, "dry-export")
        small = ["--blocks-per-image", "5", "--selector-epochs", "1", "1", "--no-cache",
                 "--quiet"]

        def run(*argv):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = train_multitask.main(list(argv))
            return status, out.getvalue(), err.getvalue()

        status, out, err = run(images, "--selector", "--dry-run", "--export-dir", export, *small)
        self.assertEqual(status, 0, err)
        self.assertIn("b.png: 9 full blocks, 5 drawn", out)
        self.assertIn("broken.png", err)                     # reported, skipped
        self.assertFalse(os.path.exists(export))             # --dry-run never trains
        status, _, err = run(images, "--selector", "--strict", *small)
        self.assertEqual(status, 1)
        self.assertIn("broken.png", err)
        # --load: the same kind fine-tunes, the other kind is one clear line
        status, _, err = run(images, "--selector", "--load", self.path, "--export-dir", export,
                             *small)
        self.assertEqual(status, 0, err)
        tuned = selector.load(os.path.join(export, "pair_selector.npz"))
        self.assertEqual(tuned.ranker[0].shape, self.model.ranker[0].shape)
        self.assertEqual(tuned.metadata["options"]["load"], self.path)
        sample = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "data", "sample.jsonl.gz")
        status, _, err = run(sample, "--load", self.path, "--epochs", "1", "--quiet")
        self.assertEqual(status, 1)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("fine-tunes multitask models only", err)


if __name__ == "__main__":
    unittest.main()
