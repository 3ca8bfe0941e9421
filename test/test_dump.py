"""The dump CLI: byte parity with the reference's records, output handling, bad input."""
import contextlib
import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import numpy as np
from PIL import Image

from shared_data import IMAGES, REPO, parity_names, reference_lines
from tlg8 import dump, synth

SMALL = 64 * 64          # images up to this many pixels are dumped whole here


def read(path):
    with open(path, "rb") as f:
        return f.read()


def image_size(path):
    with Image.open(path) as im:
        return im.size


def run_dump(*args):
    """main() of the CLI with captured stderr: (exit status, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = dump.main([str(a) for a in args])
    return status, err.getvalue()


class DumpTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def save(self, name, array, mode=None):
        Image.fromarray(array, mode).save(self.path(name))
        return self.path(name)


class TestParity(DumpTest):
    def test_small_shared_images_byte_for_byte(self):
        names = [n for n in parity_names()
                 if image_size(os.path.join(IMAGES, n + ".bmp"))[0] ** 2 <= SMALL]
        self.assertGreater(len(names), 10)
        for name in names:
            with self.subTest(image=name):
                out = self.path(name + ".jsonl")
                status, _ = run_dump(os.path.join(IMAGES, name + ".bmp"), "--tag",
                                     name + ".bmp", "--out", out, "--quiet")
                self.assertEqual(status, 0)
                self.assertEqual(read(out), b"".join(reference_lines(name)))

    def test_gzip_output_jobs_and_tag_basename(self):
        names = parity_names()[:4]
        images = [os.path.join(IMAGES, n + ".bmp") for n in names]
        out = self.path("all.jsonl.gz")
        status, _ = run_dump(*images, "--tag-basename", "--jobs", "2", "--out", out, "--quiet")
        self.assertEqual(status, 0)
        with gzip.open(out, "rb") as f:
            self.assertEqual(f.read(), b"".join(b"".join(reference_lines(n)) for n in names))


class TestRecords(DumpTest):
    def test_default_tag_is_the_path_as_given_and_escaped(self):
        rgb = np.zeros((3, 2, 3), np.uint8)
        name = 'we"ird\\na\tme é.png'
        self.save(name, rgb)
        out = self.path("x.jsonl")
        cwd = os.getcwd()
        os.chdir(self.tmp)
        try:
            status, _ = run_dump(name, "--out", out, "--quiet")
        finally:
            os.chdir(cwd)
        self.assertEqual(status, 0)
        line = read(out)
        self.assertTrue(line.startswith('{"image":"we\\"ird\\\\na\\tme é.png",'.encode()),
                        line[:60])
        self.assertIn(b'"image_size":[2,3],"tile_origin":[0,0],"block_origin":[0,0],'
                      b'"block_size":[2,3],"components":3,"pixels":[0,0,0,', line)
        self.assertEqual(dump.json_string("\x01\x1f\b\f\r"), '"\\u0001\\u001f\\b\\f\\r"')

    def test_alpha_png_gives_four_components_in_argb_order(self):
        rgba = np.zeros((2, 2, 4), np.uint8)
        rgba[..., :3] = (10, 20, 30)
        rgba[..., 3] = (255, 7)
        out = self.path("a.jsonl")
        self.assertEqual(run_dump(self.save("a.png", rgba, "RGBA"), "--out", out, "--quiet")[0], 0)
        self.assertIn(b'"components":4,"pixels":[255,10,20,30,7,10,20,30,', read(out))

    def test_k_index_past_the_table_does_not_crash(self):
        # R and G swapping between 0 and 255 from pixel to pixel (spec §9.3).
        y, x = np.mgrid[0:16, 0:40]
        flip = ((x + y) % 2) * 255
        rgb = np.stack([flip, 255 - flip, np.zeros_like(flip)], axis=2).astype(np.uint8)
        out = self.path("k.jsonl")
        status, _ = run_dump(self.save("k.png", rgb), "--out", out, "--quiet")
        self.assertEqual(status, 0)
        self.assertEqual(len(read(out).splitlines()), 10)

    def test_exhaustive_mode_is_never_worse(self):
        rng = np.random.default_rng(1)
        rgb = rng.integers(0, 256, (8, 16, 3)).astype(np.uint8)
        path = self.save("n.png", rgb)
        bits = {}
        for mode in ("reference", "exhaustive"):
            out = self.path(mode + ".jsonl")
            self.assertEqual(run_dump(path, "--mode", mode, "--out", out, "--quiet")[0], 0)
            bits[mode] = [int(l.split(b'"bits":')[1].split(b"}")[0]) for l in read(out).splitlines()]
        self.assertTrue(all(e <= r for e, r in zip(bits["exhaustive"], bits["reference"])))


class TestBadInput(DumpTest):
    def bad_files(self):
        files = {"missing.bmp": None, "text.bmp": b"hello, not an image\n",
                 "truncated.bmp": read(os.path.join(IMAGES, "dko_sss.bmp"))[:2000]
                 if os.path.exists(os.path.join(IMAGES, "dko_sss.bmp")) else b"BM" + bytes(60)}
        for name, data in files.items():
            if data is not None:
                with open(self.path(name), "wb") as f:
                    f.write(data)
        Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(self.path("grey8.bmp"))
        header = bytearray(read(self.path("grey8.bmp"))[:54])
        header[18:22] = bytes(4)                  # width 0
        header[28:30] = (24).to_bytes(2, "little")
        with open(self.path("empty.bmp"), "wb") as f:
            f.write(bytes(header))
        return [self.path(n) for n in list(files) + ["grey8.bmp", "empty.bmp"]]

    def test_bad_images_are_reported_and_the_good_ones_written(self):
        good = self.save("good.png", np.full((8, 8, 3), 9, np.uint8))
        bad = self.bad_files()
        out = self.path("out.jsonl")
        status, err = run_dump(bad[0], good, *bad[1:], "--out", out, "--quiet")
        self.assertEqual(status, 1)
        self.assertEqual(len(read(out).splitlines()), 1)
        errors = [l for l in err.splitlines() if l.startswith("error:")]
        self.assertEqual(len(errors), len(bad))
        for path, line in zip(bad, errors):
            self.assertIn(path, line)
        self.assertIn("cannot open", errors[0])
        self.assertIn("unsupported BMP variant (8 bits per pixel", errors[3])
        self.assertIn("zero width or height", errors[4])

    def test_nothing_written_when_no_image_can_be_read(self):
        out = self.path("out.jsonl")
        status, err = run_dump(*self.bad_files(), "--out", out, "--quiet")
        self.assertEqual(status, 1)
        self.assertIn("nothing written", err)
        self.assertEqual(os.listdir(self.tmp).count("out.jsonl"), 0)

    def test_interrupted_run_leaves_no_output_or_temporary_file(self):
        good = self.save("good.png", np.full((20, 20, 3), 9, np.uint8))
        out = self.path("out.jsonl")
        with open(out, "wb") as f:
            f.write(b"previous content\n")
        with mock.patch.object(dump, "format_records", side_effect=KeyboardInterrupt):
            status, err = run_dump(good, "--out", out, "--quiet")
        self.assertEqual((status, err), (130, "interrupted\n"))     # one line, no traceback
        self.assertEqual(read(out), b"previous content\n")
        self.assertEqual(sorted(os.listdir(self.tmp)), ["good.png", "out.jsonl"])

    def test_append_keeps_what_was_there(self):
        good = self.save("good.png", np.full((8, 8, 3), 9, np.uint8))
        out = self.path("out.jsonl")
        for _ in range(2):
            self.assertEqual(run_dump(good, "--append", "--out", out, "--quiet")[0], 0)
        lines = read(out).splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[0], lines[1])

    def test_command_line_entry_point(self):
        result = subprocess.run([sys.executable, "-m", "tlg8.dump", self.path("none.png"),
                                 "--out", self.path("o.jsonl")], cwd=REPO,
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 1)
        self.assertIn("none.png: cannot open", result.stderr)
        self.assertEqual(result.stdout, "")


class TestSample(DumpTest):
    def test_regenerating_reproduces_the_committed_sample(self):
        committed = os.path.join(REPO, "data", "sample.jsonl.gz")
        out = self.path("sample.jsonl.gz")
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(synth.write_sample(out), 0)
        with gzip.open(committed, "rb") as a, gzip.open(out, "rb") as b:
            self.assertEqual(a.read(), b.read())


if __name__ == "__main__":
    unittest.main()
