"""python3 -m tlg8.encode: reference parity through the CLI, stats, errors, atomic output."""
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
from PIL import Image

from shared_data import IMAGES, TLGCONV, require_shared
from tlg8 import codec, encode
from tlg8.tlgfile import decode_tlg8, read_header

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = encode.main(argv)
    return status, out.getvalue(), err.getvalue()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


class EncodeCli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        rng = np.random.default_rng(8)
        y, x = np.mgrid[:13, :21]
        rgba = np.stack([x * 9, y * 11, (x + y) * 5, 255 - x * 3], axis=-1)
        rgba = (rgba + rng.integers(0, 4, rgba.shape)).astype(np.uint8)
        self.rgba = rgba
        self.png = self.path("in.png")
        Image.fromarray(rgba).save(self.png)

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def test_png_with_alpha_round_trip(self):
        out = self.path("a.tlg8")
        status, stdout, stderr = run([self.png, out])
        self.assertEqual(status, 0, stderr)
        self.assertIn("model search", stdout)           # the shipped model by default
        samples, ncomp, _ = decode_tlg8(read_bytes(out))
        self.assertEqual(ncomp, 4)
        np.testing.assert_array_equal(samples, self.rgba[..., [3, 0, 1, 2]])

    def test_reference_file_reproduced(self):
        require_shared("data/images/xor_weave.bmp", "data/tlgconv/xor_weave.tlg8")
        out = self.path("x.tlg8")
        status, _, stderr = run([os.path.join(IMAGES, "xor_weave.bmp"), out, "--search",
                                 "reference", "--quiet"])
        self.assertEqual(status, 0, stderr)
        self.assertEqual(read_bytes(out), read_bytes(os.path.join(TLGCONV, "xor_weave.tlg8")))

    def test_jobs_split_tile_rows_and_give_the_same_file(self):
        rng = np.random.default_rng(4)
        # 600 rows: three tiles of 200 (codec.tile_height), so three bands.
        rgb = np.clip(rng.normal(120, 30, (600, 20, 3)), 0, 255).astype(np.uint8)
        image = self.path("tall.png")
        Image.fromarray(rgb).save(image)
        files = []
        for jobs in ("1", "2", "3"):
            out = self.path(f"tall{jobs}.tlg8")
            status, _, stderr = run([image, out, "--jobs", jobs, "--quiet"])
            self.assertEqual(status, 0, stderr)
            files.append(read_bytes(out))
        self.assertEqual(files[0], files[1])
        self.assertEqual(files[0], files[2])
        self.assertEqual(read_header(files[0])["tile_h"], 200)
        np.testing.assert_array_equal(decode_tlg8(files[0])[0], rgb)
        # Bands of two tile rows and one: the file pass and the fitted table across bands.
        for effort in (1, 3):
            self.assertEqual(codec.encode_samples(rgb, effort=effort, jobs=2),
                             codec.encode_samples(rgb, effort=effort))
        self.assertEqual(len(codec.choose_blocks(rgb, jobs=2)[0]), 3 * 75)

    def test_stats_and_exhaustive(self):
        sizes = {}
        for search in ("reference", "exhaustive"):
            out = self.path(search + ".tlg8")
            status, stdout, _ = run([self.png, out, "--search", search, "--stats", "--quiet"])
            self.assertEqual(status, 0)
            lines = dict(line.split(None, 1) for line in stdout.splitlines()
                         if not line.startswith(("estimated", "file", "trials/block")))
            self.assertEqual(lines["blocks"], "6")
            self.assertIn(f"file bytes     {os.path.getsize(out)}", stdout)
            bits = int(stdout.split("estimated bits")[1].split()[0])
            sizes[search] = bits
            if search == "exhaustive":
                self.assertIn("trials/block   mean 24576.0", stdout)
            np.testing.assert_array_equal(decode_tlg8(read_bytes(out))[0],
                                          self.rgba[..., [3, 0, 1, 2]])
        self.assertLessEqual(sizes["exhaustive"], sizes["reference"])

    def test_pixel_format(self):
        out = self.path("p.tlg8")
        self.assertEqual(run([self.png, out, "--pixel-format", "R8G8B8", "--quiet"])[0], 0)
        self.assertEqual(read_header(read_bytes(out))["ncomp"], 3)

    def test_quiet(self):
        self.assertEqual(run([self.png, self.path("q.tlg8"), "--quiet"]), (0, "", ""))

    def test_errors(self):
        out = self.path("e.tlg8")
        not_image = self.path("text.png")
        with open(not_image, "w") as f:
            f.write("hello")
        cases = [
            ([self.path("missing.png"), out], "missing.png"),
            ([not_image, out], "text.png"),
            ([self.png, out, "--model", self.path("none.npz")], "none.npz"),
            ([self.png, self.path("no/dir/e.tlg8"), "--quiet"], "no such directory"),
        ]
        for argv, fragment in cases:
            with self.subTest(argv=argv):
                status, stdout, stderr = run(argv)
                self.assertEqual(status, 1)
                self.assertEqual(len(stderr.splitlines()), 1, stderr)
                self.assertIn(fragment, stderr)
                self.assertFalse(os.path.exists(out))
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.png", "text.png"])

    def test_usage_errors(self):
        for argv in ([self.png, "-o", self.path("o.png")],
                     [self.png, self.png, "-o", self.path("o.tlg8")],
                     [self.png, self.path("o.tlg8"), "--model", "m.npz", "--search", "reference"],
                     [self.png, self.path("o.tlg8"), "--max-trials", "0"]):
            with self.subTest(argv=argv), self.assertRaises(SystemExit) as ctx, \
                    contextlib.redirect_stderr(io.StringIO()):
                encode.main(argv)
            self.assertEqual(ctx.exception.code, 2)

    def test_existing_output_replaced_whole(self):
        out = self.path("r.tlg8")
        with open(out, "wb") as f:
            f.write(b"old" * 1000)
        self.assertEqual(run([self.png, out, "--quiet"])[0], 0)
        self.assertEqual(decode_tlg8(read_bytes(out))[0].shape, (13, 21, 4))

    def test_model_search(self):
        import multitask_model

        model = self.path("m.npz")
        multitask_model.MultiTaskModel(hidden_dims=(16,), dropout=0.0, seed=3).save(model)
        for max_trials in (16, 3):
            out = self.path(f"model{max_trials}.tlg8")
            status, stdout, stderr = run([self.png, out, "--model", model, "--stats",
                                          "--max-trials", str(max_trials), "--quiet"])
            self.assertEqual(status, 0, stderr)
            self.assertIn("search         model", stdout)
            most = int(stdout.split("trials/block")[1].split("max")[1].split()[0])
            self.assertLessEqual(most, max_trials)
            np.testing.assert_array_equal(decode_tlg8(read_bytes(out))[0],
                                          self.rgba[..., [3, 0, 1, 2]])

    def test_effort_levels(self):
        from tlg8.codec import EFFORTS
        for effort, (max_trials, _) in EFFORTS.items():
            out = self.path(f"effort{effort}.tlg8")
            status, stdout, stderr = run([self.png, out, "--effort", str(effort), "--stats",
                                          "--quiet"])
            self.assertEqual(status, 0, stderr)
            self.assertIn(f"search         model, effort {effort}", stdout)
            most = int(stdout.split("trials/block")[1].split("max")[1].split()[0])
            self.assertLessEqual(most, max_trials)
            np.testing.assert_array_equal(decode_tlg8(read_bytes(out))[0],
                                          self.rgba[..., [3, 0, 1, 2]])
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            encode.main([self.png, self.path("x.tlg8"), "--effort", "9"])

    def test_bad_model_file(self):
        bad = self.path("bad.npz")
        with open(bad, "w") as f:
            f.write("not a model")
        status, _, stderr = run([self.png, self.path("b.tlg8"), "--model", bad])
        self.assertEqual(status, 1)
        self.assertEqual(len(stderr.splitlines()), 1, stderr)
        self.assertIn("bad.npz", stderr)

    def test_module_entry_point(self):
        out = self.path("m.tlg8")
        proc = subprocess.run([sys.executable, "-m", "tlg8.encode", self.png, out, "--quiet"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        self.assertEqual((proc.returncode, proc.stdout, proc.stderr), (0, "", ""))
        self.assertTrue(os.path.exists(out))


if __name__ == "__main__":
    unittest.main()
