"""The `tlg8` command (python3 -m tlg8): subcommands, default names, several inputs, .tlg,
inputs recognised by header, info, interrupts and stale temporary files."""
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
from PIL import Image

import tlg8
from shared_data import TLGCONV, require_shared
from test_features import random_image
from tlg8 import __main__ as command
from tlg8 import fileio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = command.main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


class CommandTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.pixels = random_image(1, 19, 21, 3)
        self.png = os.path.join(self.dir, "photo.png")
        Image.fromarray(self.pixels).save(self.png)

    def tearDown(self):
        self.tmp.cleanup()

    def test_version_and_usage(self):
        self.assertEqual(run("--version"), (0, f"tlg8 {tlg8.__version__}\n", ""))
        status, _, err = run("frobnicate")
        self.assertEqual(status, 2)
        self.assertIn("unknown command", err)

    def test_encode_default_name_then_decode_default_name(self):
        self.assertEqual(run("encode", self.png, "--quiet")[0], 0)
        out = os.path.join(self.dir, "photo.tlg8")
        np.testing.assert_array_equal(tlg8.read(out), self.pixels)
        os.remove(self.png)
        self.assertEqual(run("decode", out, "--quiet")[0], 0)
        np.testing.assert_array_equal(np.asarray(Image.open(self.png)), self.pixels)

    def test_several_inputs_a_bad_one_and_out_dir(self):
        other = os.path.join(self.dir, "other.dat")          # a PNG whatever its name
        Image.fromarray(self.pixels[::-1]).save(other, format="PNG")
        bad = os.path.join(self.dir, "bad.png")
        with open(bad, "w") as f:
            f.write("not an image")
        out_dir = os.path.join(self.dir, "out")
        status, _, err = run("encode", self.png, bad, other, "--out-dir", out_dir, "--quiet")
        self.assertEqual(status, 1)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("bad.png", err)
        self.assertEqual(sorted(os.listdir(out_dir)), ["other.tlg8", "photo.tlg8"])
        np.testing.assert_array_equal(tlg8.read(os.path.join(out_dir, "other.tlg8")),
                                      self.pixels[::-1])

    def test_tlg_output_and_info(self):
        out = os.path.join(self.dir, "x.tlg")
        self.assertEqual(run("encode", self.png, out, "--quiet")[0], 0)
        status, text, _ = run("info", out)
        self.assertEqual(status, 0)
        self.assertIn("21 x 19, 3 components", text)
        status, text, _ = run("info", out, "--json")
        info = json.loads(text)
        self.assertEqual(info["blocks"], 9)
        self.assertEqual(sum(info["histograms"]["predictor"]), 9)
        self.assertEqual(sum(info["stream_modes"]["filter"].values()), info["tiles"])

    def test_a_closed_stdout_ends_the_command_quietly(self):
        out = os.path.join(self.dir, "x.tlg8")
        self.assertEqual(run("encode", self.png, out, "--quiet")[0], 0)
        read_end, write_end = os.pipe()
        os.close(read_end)                      # as `tlg8 info ... | head` once head ends
        try:
            proc = subprocess.run([sys.executable, "-m", "tlg8", "info", out, out],
                                  stdout=write_end, stderr=subprocess.PIPE, text=True,
                                  timeout=60)
        finally:
            os.close(write_end)
        self.assertEqual((proc.returncode, proc.stderr), (141, ""))

    def test_info_on_the_reference_files(self):
        require_shared("data/tlgconv/dko_sss.tlg8")
        status, text, _ = run("info", os.path.join(TLGCONV, "dko_sss.tlg8"),
                              os.path.join(TLGCONV, "xor_weave.tlg8"))
        self.assertEqual(status, 0)
        self.assertIn("200 x 200", text)
        self.assertIn("stream modes", text)

    def test_write_and_read_api_rgba(self):
        rgba = random_image(4, 9, 10, 4)
        rgba[..., 3] = 255                                   # opaque alpha is kept
        path = os.path.join(self.dir, "a.tlg8")
        tlg8.write(path, rgba, search="reference")
        np.testing.assert_array_equal(tlg8.read(path), rgba)
        with self.assertRaises(tlg8.Tlg8Error):
            tlg8.write(path, rgba.astype(np.float32))
        with self.assertRaisesRegex(tlg8.Tlg8Error, "x.tlg8"):
            tlg8.read(os.path.join(self.dir, "x.tlg8"))

    def test_stale_temporary_files_are_removed(self):
        out = os.path.join(self.dir, "photo.tlg8")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
        stale = os.path.join(self.dir, f".photo.tlg8{fileio.TMP_TAG}{dead}-abc")
        mine = os.path.join(self.dir, f".photo.tlg8{fileio.TMP_TAG}{os.getpid()}-abc")
        for path in (stale, mine):
            open(path, "w").close()
        self.assertEqual(run("encode", self.png, "--quiet")[0], 0)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(mine))                # a live process's file stays
        self.assertTrue(os.path.exists(out))

    def test_sigterm_and_sigint_print_one_line_and_leave_nothing(self):
        big = os.path.join(self.dir, "big.png")
        Image.fromarray(random_image(2, 400, 400, 3)).save(big)
        for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            # A shell starts background jobs with SIGINT ignored, and Python then keeps it
            # so: give the child the default action, as a terminal's foreground job has.
            proc = subprocess.Popen([sys.executable, "-m", "tlg8", "encode", big, "--search",
                                     "exhaustive", "--quiet"], cwd=REPO,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                     signal.SIG_DFL))
            time.sleep(3)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=60)
            self.assertEqual((proc.returncode, err), (code, "interrupted\n"))
            self.assertEqual(sorted(os.listdir(self.dir)), ["big.png", "photo.png"])

    def test_module_and_console_script_forms(self):
        proc = subprocess.run([sys.executable, "-m", "tlg8", "--version"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.stdout.strip(), f"tlg8 {tlg8.__version__}")


if __name__ == "__main__":
    unittest.main()
