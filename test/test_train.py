"""train_multitask.py: every option, bad data, divergence, exports, determinism."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

import multitask_model as mm
import train_multitask
from test_records import line, make_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--hidden-dims", "32", "16", "--batch-size", "64", "--quiet"]


def learnable_records(rng, name, n):
    """Records whose best predictor follows the block's brightness (a rule a model learns)."""
    out = []
    for k in range(n):
        rec = make_record(rng, name=name, size=(8, 8), ncomp=3, origin=(8 * (k % 8), 8 * (k // 8)))
        level = int(rng.integers(0, 256))
        rec["pixels"] = np.clip(level + rng.integers(-20, 21, 192), 0, 255).tolist()
        rec["best"]["predictor"] = 0 if level < 128 else 4
        rec["image_size"] = [64, 8 * (n // 8 + 1)]
        out.append(rec)
    return out


class TrainCliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="test_train_")
        rng = np.random.default_rng(0)
        cls.data = os.path.join(cls.tmp, "data")
        os.makedirs(os.path.join(cls.data, "more"))
        for name, n, sub in (("a.bmp", 160, ""), ("b.bmp", 120, ""), ("c.bmp", 80, "more")):
            path = os.path.join(cls.data, sub, name.replace(".bmp", ".jsonl"))
            with open(path, "wb") as f:
                f.write(b"".join(line(r) for r in learnable_records(rng, name, n)))
        cls.cache = os.path.join(cls.tmp, "cache")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def run_cli(self, *args, data=None, cache=True):
        argv = [data or self.data] + list(args)
        if cache and "--cache-dir" not in args and "--no-cache" not in args:
            argv += ["--cache-dir", self.cache]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = train_multitask.main(argv)
            except SystemExit as e:          # argparse errors
                status = e.code
        return status, out.getvalue(), err.getvalue()

    def outdir(self, name):
        path = os.path.join(self.tmp, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def test_help_lists_every_option(self):
        status, out, _ = self.run_cli("--help", cache=False)
        self.assertEqual(status, 0)
        for option in ("--epochs", "--lr", "--batch-size", "--dropout", "--hidden-dims",
                       "--weight-decay", "--epsilon-soft", "--test-ratio", "--seed",
                       "--export-dir", "--early-stop-patience", "--log-file", "--load",
                       "--dry-run", "--split", "--val-images", "--strict", "--cache-dir",
                       "--no-cache", "--quiet"):
            self.assertIn(option, out)

    def test_training_exports_and_logs(self):
        out_dir = self.outdir("run")
        log = os.path.join(self.tmp, "run.log")
        status, out, err = self.run_cli("--epochs", "3", "--export-dir", out_dir, "--log-file",
                                        log, "--dropout", "0.25", "--lr", "3e-3", *SMALL)
        self.assertEqual(status, 0, err)
        self.assertEqual(sorted(os.listdir(out_dir)), ["metrics.json", "multitask_best.npz"])
        for epoch in (1, 2, 3):
            self.assertIn(f"epoch {epoch}/3", out)
        for name in mm.HEAD_NAMES:
            self.assertIn(name[5:], out)
        self.assertIn("data: 360 records", err)
        with open(log) as f:
            epochs = [json.loads(x) for x in f]
        self.assertEqual([e["epoch"] for e in epochs], [1, 2, 3])
        for e in epochs:
            self.assertEqual(set(e["val"]), {n[5:] for n in mm.HEAD_NAMES})
            self.assertEqual(set(e["val"]["predictor"]), {"top1", "top2", "two_choice", "tie_aware"})
            self.assertTrue(0 <= e["val"]["reorder"]["two_choice"] <= 1)
        with open(os.path.join(out_dir, "metrics.json")) as f:
            metrics = json.load(f)
        best = max(epochs, key=lambda e: e["val_two_choice_mean"])
        self.assertEqual(metrics["epoch"], best["epoch"])
        self.assertEqual(metrics["val"], best["val"])
        self.assertEqual(metrics["status"], "completed")
        self.assertEqual(metrics["options"]["dropout"], 0.25)
        self.assertEqual(metrics["options"]["hidden_dims"], [32, 16])
        self.assertEqual(metrics["data"]["records"], 360)
        self.assertEqual(metrics["split"]["mode"], "image")
        self.assertEqual(metrics["split"]["train_blocks"] + metrics["split"]["val_blocks"], 360)
        model = mm.MultiTaskModel.load(os.path.join(out_dir, "multitask_best.npz"))
        self.assertEqual((model.hidden_dims, model.dropout), ((32, 16), 0.25))
        self.assertEqual(model.metadata["epoch"], best["epoch"])
        # The exported scaler is the training split's mean/std of the raw features.
        self.assertAlmostEqual(float(model.feature_scaler[0][256]), 1.0)      # w / 8
        self.assertEqual(float(model.feature_scaler[1][256]), 1.0)            # constant -> 1

    def test_the_model_learns_a_rule(self):
        status, out, err = self.run_cli("--epochs", "25", "--lr", "1e-2", "--val-images", "b.bmp",
                                        "--log-file", os.path.join(self.tmp, "learn.log"), *SMALL)
        self.assertEqual(status, 0, err)
        with open(os.path.join(self.tmp, "learn.log")) as f:
            last = [json.loads(x) for x in f][-1]
        self.assertGreater(last["val"]["predictor"]["top1"], 0.9)

    def test_seed_determinism(self):
        runs = []
        for seed in (7, 7, 8):
            out_dir = self.outdir(f"seed{len(runs)}")
            status, _, err = self.run_cli("--epochs", "2", "--seed", str(seed), "--export-dir",
                                          out_dir, *SMALL)
            self.assertEqual(status, 0, err)
            with np.load(os.path.join(out_dir, "multitask_best.npz")) as npz:
                runs.append(npz["trunk_weight_0"])
        np.testing.assert_array_equal(runs[0], runs[1])
        self.assertFalse(np.array_equal(runs[0], runs[2]))

    def test_options_change_the_training(self):
        def weights(*args):
            out_dir = self.outdir("opt")
            status, _, err = self.run_cli("--epochs", "2", "--export-dir", out_dir, *SMALL, *args)
            self.assertEqual(status, 0, err)
            with np.load(os.path.join(out_dir, "multitask_best.npz")) as npz:
                return npz["trunk_weight_0"], json.loads(str(npz["metadata"]))

        base, meta = weights()
        decayed, _ = weights("--weight-decay", "5", "--lr", "0.05")
        big_lr, _ = weights("--weight-decay", "0", "--lr", "0.05")
        self.assertLess(np.linalg.norm(decayed), 0.9 * np.linalg.norm(big_lr))
        one_step, _ = weights("--batch-size", "100000")       # one batch per epoch
        self.assertFalse(np.array_equal(one_step, base))
        _, eps_meta = weights("--epsilon-soft", "0.5")
        self.assertNotEqual(eps_meta["val_loss"], meta["val_loss"])
        self.assertEqual(eps_meta["options"]["epsilon_soft"], 0.5)

    def test_splits(self):
        status, out, _ = self.run_cli("--dry-run", "--split", "block", "--test-ratio", "0.25")
        self.assertEqual(status, 0)
        self.assertIn("split: block; train 270, val 90 blocks", out)
        status, out, _ = self.run_cli("--dry-run", "--val-images", "a.bmp", "c.bmp")
        self.assertIn("split: image; train 120 blocks (b.bmp), val 240 blocks (a.bmp, c.bmp)", out)
        status, out, _ = self.run_cli("--dry-run")                      # auto: image split
        self.assertIn("split: image", out)
        one = os.path.join(self.data, "more", "c.jsonl")
        status, out, _ = self.run_cli("--dry-run", data=one)           # auto, 1 image: blocks
        self.assertIn("split: block; train 64, val 16 blocks", out)
        status, _, err = self.run_cli("--dry-run", "--split", "image", data=one)
        self.assertEqual(status, 2)
        self.assertIn("at least 2 images", err)
        status, _, err = self.run_cli("--dry-run", "--val-images", "zzz.bmp")
        self.assertEqual(status, 2)
        self.assertIn("a.bmp", err)                                    # lists the real names

    def test_dry_run_report(self):
        out_dir = self.outdir("dry")
        status, out, _ = self.run_cli("--dry-run", "--export-dir", out_dir)
        self.assertEqual(status, 0)
        self.assertFalse(os.path.exists(out_dir))
        for text in ("records: 360", "a.bmp: 160 blocks", "c.bmp: 80 blocks",
                     "label distribution", "filter_secondary", "ties (second.bits == best.bits)"):
            self.assertIn(text, out)

    def test_bad_records_are_skipped_and_counted_or_fatal(self):
        rng = np.random.default_rng(1)
        path = os.path.join(self.tmp, "bad.jsonl")
        good = [line(r) for r in learnable_records(rng, "x.bmp", 40)]
        broken = json.loads(good[1])
        broken["pixels"] = broken["pixels"][:5]
        with open(path, "wb") as f:
            f.write(b"".join(good[:10]) + b"{nope\n" + line(broken) + b"".join(good[10:]))
        status, out, err = self.run_cli("--dry-run", data=path)
        self.assertEqual(status, 0)
        self.assertIn(f"{path}:11: invalid JSON", err)
        self.assertIn(f"{path}:12: wrong pixel count", err)
        self.assertIn("skipped 2 problems: 1 invalid JSON, 1 wrong pixel count", err)
        self.assertIn("records: 40", out)
        status, _, err = self.run_cli("--dry-run", "--strict", data=path)
        self.assertEqual(status, 1)
        self.assertIn(f"{path}:11: invalid JSON", err)

    def test_no_data(self):
        empty = os.path.join(self.tmp, "nothing")
        os.makedirs(empty, exist_ok=True)
        status, _, err = self.run_cli(data=empty)
        self.assertEqual(status, 1)
        self.assertIn("no valid records", err)
        self.assertIn("directory without dumps", err)
        status, _, err = self.run_cli(data=os.path.join(self.tmp, "missing.jsonl"))
        self.assertEqual(status, 1)
        self.assertIn("no such file", err)

    def test_bad_option_values(self):
        for args in (["--epochs", "0"], ["--lr", "-1"], ["--batch-size", "0"],
                     ["--dropout", "1"], ["--epsilon-soft", "0.7"], ["--test-ratio", "1"],
                     ["--hidden-dims", "0"], ["--early-stop-patience", "-1"],
                     ["--split", "block", "--val-images", "a.bmp"], ["--load", "/no/such.npz"]):
            status, _, err = self.run_cli(*args)
            self.assertEqual(status, 2, args)
            self.assertIn("error:", err)

    def test_output_paths(self):
        nested = os.path.join(self.tmp, "new", "dirs")
        status, _, err = self.run_cli("--epochs", "1", "--export-dir", os.path.join(nested, "out"),
                                      "--log-file", os.path.join(nested, "logs", "x.jsonl"), *SMALL)
        self.assertEqual(status, 0, err)
        self.assertTrue(os.path.exists(os.path.join(nested, "logs", "x.jsonl")))
        blocker = os.path.join(self.tmp, "a_file")
        open(blocker, "w").close()
        status, _, err = self.run_cli("--epochs", "1", "--export-dir", os.path.join(blocker, "out"),
                                      *SMALL)
        self.assertEqual(status, 1)
        self.assertIn("error: cannot write", err)

    def test_early_stop(self):
        log = os.path.join(self.tmp, "early.log")
        # A learning rate this small leaves every prediction as it is: no improvement after
        # epoch 1, so patience 2 stops after epoch 3.
        status, out, err = self.run_cli("--epochs", "50", "--lr", "1e-12", "--early-stop-patience",
                                        "2", "--log-file", log, "--dropout", "0", *SMALL)
        self.assertEqual(status, 0, err)
        with open(log) as f:
            self.assertEqual(len(f.readlines()), 3)
        self.assertIn("early stop", out)

    def test_load_fine_tunes_and_divergence_keeps_the_best(self):
        out_dir = self.outdir("base")
        status, _, err = self.run_cli("--epochs", "2", "--export-dir", out_dir, *SMALL)
        self.assertEqual(status, 0, err)
        npz = os.path.join(out_dir, "multitask_best.npz")
        base = mm.MultiTaskModel.load(npz)
        tuned_dir = self.outdir("tuned")
        status, _, err = self.run_cli("--epochs", "1", "--load", npz, "--export-dir", tuned_dir,
                                      "--hidden-dims", "64", "--quiet")
        self.assertEqual(status, 0, err)
        self.assertIn("--hidden-dims ignored", err)
        tuned = mm.MultiTaskModel.load(os.path.join(tuned_dir, "multitask_best.npz"))
        self.assertEqual(tuned.hidden_dims, (32, 16))
        np.testing.assert_array_equal(tuned.feature_scaler[0], base.feature_scaler[0])
        self.assertFalse(np.array_equal(tuned.weights[0], base.weights[0]))
        # A huge learning rate diverges in the first epoch: exit 3, advice, export untouched.
        with open(npz, "rb") as f:
            before = f.read()
        status, out, err = self.run_cli("--epochs", "3", "--load", npz, "--lr", "1e30",
                                        "--export-dir", out_dir, "--quiet")
        self.assertEqual(status, 3)
        self.assertIn("halve the learning rate (--lr 5e+29 instead of 1e+30)", err)
        self.assertNotIn("RuntimeWarning", err)
        with open(npz, "rb") as f:
            self.assertEqual(f.read(), before)
        bad = os.path.join(self.tmp, "old.npz")
        np.savez(bad, mean=np.zeros(3))
        status, _, err = self.run_cli("--epochs", "1", "--load", bad)
        self.assertEqual(status, 1)
        self.assertIn("re-train", err)

    def test_progress_bars_only_on_a_terminal_without_quiet(self):
        class Terminal(io.StringIO):
            def isatty(self):
                return True

        for quiet, want in ((False, True), (True, False)):
            err = Terminal()
            args = [self.data, "--epochs", "1", "--hidden-dims", "8", "--no-cache"]
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                self.assertEqual(train_multitask.main(args + (["--quiet"] if quiet else [])), 0)
            self.assertEqual("epoch 1/1:" in err.getvalue(), want)        # the tqdm bar
            self.assertEqual("reading dumps" in err.getvalue(), want)

    def test_cache_options(self):
        cache = os.path.join(self.tmp, "own_cache")
        status, _, _ = self.run_cli("--dry-run", "--cache-dir", cache)
        self.assertEqual((status, len(os.listdir(cache))), (0, 3))
        status, out, _ = self.run_cli("--dry-run", "--cache-dir", cache)
        self.assertIn("(3 from the cache)", out)
        status, out, _ = self.run_cli("--dry-run", "--no-cache")
        self.assertIn("(0 from the cache)", out)

    def test_streams_and_exit_status_of_the_script(self):
        out_dir = self.outdir("proc")
        env = dict(os.environ, TLG8_CACHE_DIR=self.cache)
        proc = subprocess.run([sys.executable, os.path.join(REPO, "train_multitask.py"), self.data,
                               "--epochs", "1", "--export-dir", out_dir, *SMALL],
                              capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("epoch 1/1", proc.stdout)
        self.assertNotIn("epoch 1/1", proc.stderr)
        self.assertIn("data: 360 records", proc.stderr)
        self.assertNotIn("data:", proc.stdout)


if __name__ == "__main__":
    unittest.main()
