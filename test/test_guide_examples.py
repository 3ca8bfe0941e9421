"""Every bash and python example of docs/multitask_runtime_guide.md runs, in document order.

Bash blocks run in a scratch directory laid out like the repository (the scripts, tlg8/ and
data/sample.jsonl.gz); python blocks run in one shared namespace, so later examples use the
model and variables of earlier ones, as a reader following the guide would. The training
data is data/sample.jsonl.gz, else a shared reference dump; without either the test skips.
"""
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from shared_data import TLGCONV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(REPO, "docs", "multitask_runtime_guide.md")
LINKED = ("train_multitask.py", "multitask_model.py", "beam_search_runtime.py", "tlg8",
          "tlg8_multitask")


def code_blocks(text):
    return re.findall(r"^```(bash|python)\n(.*?)^```", text, re.M | re.S)


def training_data():
    for path in (os.path.join(REPO, "data", "sample.jsonl.gz"),
                 os.path.join(TLGCONV, "dko_sss.jsonl.gz")):
        if os.path.exists(path):
            return path
    raise unittest.SkipTest("no training data: neither data/sample.jsonl.gz nor the shared "
                            f"reference dumps ({TLGCONV}) exist; skipped")


class GuideExamplesTest(unittest.TestCase):
    def test_examples_run_in_order(self):
        with open(GUIDE, encoding="utf-8") as f:
            text = f.read()
        # The user's original example must stay verbatim.
        for verbatim in ('features = np.load("sample_block_features.npy")  # shape = (259,)',
                         "logits = model.predict_logits(features[None, :])",
                         "topk = model.predict_topk(features[None, :], k=2)",
                         'print(topk["head_predictor"])  # [(class_id, logprob), ...]'):
            self.assertIn(verbatim, text)
        blocks = code_blocks(text)
        self.assertGreaterEqual(len(blocks), 10)
        data = training_data()
        tmp = tempfile.mkdtemp(prefix="guide_")
        self.addCleanup(shutil.rmtree, tmp)
        for name in LINKED:
            os.symlink(os.path.join(REPO, name), os.path.join(tmp, name))
        os.makedirs(os.path.join(tmp, "data"))
        os.symlink(data, os.path.join(tmp, "data", "sample.jsonl.gz"))
        bin_dir = os.path.join(tmp, "bin")
        os.makedirs(bin_dir)
        # A wrapper, not a symlink: a symlinked interpreter outside its venv loses the venv's
        # site-packages (pyvenv.cfg is looked up beside the link).
        wrapper = os.path.join(bin_dir, "python3")
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        os.chmod(wrapper, 0o755)
        env = dict(os.environ, TLG8_CACHE_DIR=os.path.join(tmp, "cache"),
                   PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
        namespace = {"__name__": "__guide__"}
        sys.path.insert(0, REPO)
        self.addCleanup(sys.path.remove, REPO)
        cwd = os.getcwd()
        os.chdir(tmp)
        self.addCleanup(os.chdir, cwd)
        for i, (lang, code) in enumerate(blocks):
            if "unittest discover" in code:
                continue            # the test command itself: running it here would recurse
            if lang == "bash":
                proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp, env=env,
                                      capture_output=True, text=True, timeout=600)
                self.assertEqual(proc.returncode, 0,
                                 f"bash example {i} failed:\n{code}\n{proc.stdout}\n{proc.stderr}")
            else:
                out = io.StringIO()
                try:
                    with contextlib.redirect_stdout(out):
                        exec(compile(code, f"<guide example {i}>", "exec"), namespace)
                except Exception as e:
                    self.fail(f"python example {i} failed: {e!r}\n{code}\n{out.getvalue()}")
        self.assertTrue(os.path.exists(os.path.join(tmp, "out", "multitask", "metrics.json")))
        self.assertTrue(os.path.exists(os.path.join(tmp, "out", "finetuned", "multitask_best.npz")))
        self.assertLessEqual(namespace["trials"].max(), 16)


if __name__ == "__main__":
    unittest.main()
