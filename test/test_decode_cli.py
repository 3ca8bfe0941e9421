"""python3 -m tlg8.decode: output formats, errors, atomic output."""
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import numpy as np

from tlg8 import decode
from tlg8.image import block_grid, read_image
from tlg8.tlgfile import CHOICE_LIMITS, encode_tlg8

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = decode.main(argv)
    return status, out.getvalue(), err.getvalue()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def tlg8_file(samples, seed=0):
    rng = np.random.default_rng(seed)
    nblocks = len(block_grid(samples.shape[1], samples.shape[0]))
    choices = np.stack([rng.integers(0, n, nblocks) for n in CHOICE_LIMITS], axis=1)
    return encode_tlg8(samples, choices)


class BmpWriter(unittest.TestCase):
    def test_same_bytes_as_pillow(self):
        # decode.bmp_bytes writes BMP without Pillow; it must be what Pillow writes.
        from PIL import Image
        rng = np.random.default_rng(3)
        for height, width, ncomp, alpha in ((1, 1, 3, None), (5, 7, 3, None), (6, 9, 4, 255),
                                            (4, 10, 4, None), (3, 2, 4, 0)):
            samples = rng.integers(0, 256, (height, width, ncomp), dtype=np.uint8)
            if alpha is not None:
                samples[..., 0] = alpha
            rgb = np.ascontiguousarray(samples[..., [1, 2, 3, 0]] if ncomp == 4 and
                                       alpha != 255 else samples[..., -3:])
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="BMP")
            header, rows = decode.bmp_bytes(rgb)
            with self.subTest(shape=samples.shape, alpha=alpha):
                self.assertEqual(header + rows.tobytes(), buf.getvalue())


class DecodeCli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        rng = np.random.default_rng(1)
        self.rgb = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
        self.argb = rng.integers(0, 256, (19, 23, 4), dtype=np.uint8)
        self.rgb_path = self.write("rgb.tlg8", tlg8_file(self.rgb))
        self.argb_path = self.write("argb.tlg8", tlg8_file(self.argb))

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def path(self, name):
        return os.path.join(self.dir, name)

    def test_bmp_24_bit(self):
        out = self.path("rgb.bmp")
        status, stdout, _ = run([self.rgb_path, out])
        self.assertEqual(status, 0)
        self.assertIn("23 x 19", stdout)
        with open(out, "rb") as f:
            self.assertEqual(int.from_bytes(f.read(30)[28:30], "little"), 24)
        samples, ncomp = read_image(out)
        self.assertEqual(ncomp, 3)
        np.testing.assert_array_equal(samples, self.rgb)

    def test_alpha_bmp_32_bit_and_png(self):
        for name, bpp in (("argb.bmp", 32), ("argb.png", None)):
            out = self.path(name)
            self.assertEqual(run([self.argb_path, out, "--quiet"])[0], 0)
            if bpp:
                with open(out, "rb") as f:
                    self.assertEqual(int.from_bytes(f.read(30)[28:30], "little"), bpp)
            samples, ncomp = read_image(out)
            self.assertEqual(ncomp, 4)
            np.testing.assert_array_equal(samples, self.argb)

    def test_opaque_four_components_written_as_rgb(self):
        argb = self.argb.copy()
        argb[..., 0] = 255
        src = self.write("opaque.tlg8", tlg8_file(argb))
        out = self.path("opaque.bmp")
        self.assertEqual(run([src, out, "--quiet"])[0], 0)
        with open(out, "rb") as f:
            self.assertEqual(int.from_bytes(f.read(30)[28:30], "little"), 24)
        samples, ncomp = read_image(out, "A8R8G8B8")
        np.testing.assert_array_equal(samples, argb)

    def test_quiet(self):
        self.assertEqual(run([self.rgb_path, self.path("q.png"), "--quiet"]), (0, "", ""))

    def test_bad_file(self):
        bad = self.write("bad.tlg8", read_bytes(self.rgb_path)[:300])
        out = self.path("out.png")
        status, stdout, stderr = run([bad, out])
        self.assertEqual(status, 1)
        self.assertEqual(stdout, "")
        self.assertEqual(len(stderr.splitlines()), 1)
        self.assertIn(bad, stderr)
        self.assertIn("truncated", stderr)
        self.assertFalse(os.path.exists(out))

    def test_missing_input(self):
        status, _, stderr = run([self.path("none.tlg8"), self.path("out.png")])
        self.assertEqual(status, 1)
        self.assertIn("none.tlg8", stderr)
        self.assertIn("cannot read", stderr)

    def test_bad_output_extension(self):
        with self.assertRaises(SystemExit) as ctx, \
                contextlib.redirect_stderr(io.StringIO()):
            decode.main([self.rgb_path, "-o", self.path("out.jpg")])
        self.assertEqual(ctx.exception.code, 2)

    def test_failed_write_leaves_old_output(self):
        out = self.write("keep.png", b"old")
        with mock.patch("PIL.Image.Image.save", side_effect=OSError(28, "No space left")):
            status, _, stderr = run([self.rgb_path, out])
        self.assertEqual(status, 1)
        self.assertIn("No space left", stderr)
        self.assertEqual(read_bytes(out), b"old")
        self.assertEqual(sorted(os.listdir(self.dir)), ["argb.tlg8", "keep.png", "rgb.tlg8"])

    def test_unwritable_directory(self):
        status, _, stderr = run([self.rgb_path, self.path("no/such/dir/out.png")])
        self.assertEqual(status, 1)
        self.assertIn("no such directory", stderr)

    def test_module_entry_point(self):
        bad = self.write("bad.tlg8", b"TLG8.0\x00raw\x1a\x07")
        proc = subprocess.run([sys.executable, "-m", "tlg8.decode", bad, self.path("o.bmp")],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(proc.stdout, "")
        self.assertEqual(len(proc.stderr.splitlines()), 1, proc.stderr)
        self.assertIn("bad.tlg8", proc.stderr)


if __name__ == "__main__":
    unittest.main()
