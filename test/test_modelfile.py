"""Hostile model files: every NPZ either loads or raises ModelFormatError with the reason,
sizes are checked before anything is allocated, non-finite weights are refused."""
import os
import tempfile
import tracemalloc
import unittest

import numpy as np

import multitask_model as mm
from test_selector import random_selector
from tlg8.modelfile import ModelFormatError
from tlg8_multitask.loader import load_model


class HostileModelTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.multitask = os.path.join(self.dir, "mt.npz")
        mm.MultiTaskModel(hidden_dims=(8,), seed=1).save(self.multitask)
        self.selector = os.path.join(self.dir, "sel.npz")
        random_selector(2).save(self.selector)

    def tearDown(self):
        self.tmp.cleanup()

    def variant(self, source, **changes):
        arrays = dict(np.load(source))
        for key, value in changes.items():
            if value is None:
                del arrays[key]
            else:
                arrays[key] = value
        path = os.path.join(self.dir, f"v{len(os.listdir(self.dir))}.npz")
        np.savez(path, **arrays)
        return path

    def assertRefused(self, path, reason):
        tracemalloc.start()
        try:
            with self.assertRaisesRegex(ModelFormatError, reason):
                load_model(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 50 << 20)

    def test_both_kinds_load(self):
        self.assertEqual(load_model(self.multitask).format, mm.MODEL_FORMAT)
        self.assertEqual(load_model(self.selector).candidates, 32)

    def test_sizes_from_the_metadata_are_checked_before_allocating(self):
        self.assertRefused(self.variant(self.multitask, hidden_dims=np.array([2000000])),
                           "hidden_dims")
        self.assertRefused(self.variant(self.multitask, hidden_dims=np.array([8] * 40)),
                           "hidden_dims")
        self.assertRefused(self.variant(self.multitask, trunk_weight_0=np.zeros((259, 9))),
                           "shape")
        self.assertRefused(self.variant(self.selector, ranker_0=np.zeros((35, 100000))),
                           "hidden units")

    def test_non_finite_and_wrong_types_are_refused(self):
        w = np.load(self.multitask)["head_weight"].copy()
        w[0, 0] = np.nan
        self.assertRefused(self.variant(self.multitask, head_weight=w), "non-finite")
        s = np.load(self.selector)["scan_scaler"].copy()
        s[1, 3] = np.inf
        self.assertRefused(self.variant(self.selector, scan_scaler=s), "non-finite")
        self.assertRefused(self.variant(self.selector, strategy=np.array([0, 6, 2])),
                           "strategy")
        self.assertRefused(self.variant(self.selector, format=np.array(7)), "not a string")
        self.assertRefused(self.variant(self.selector, format=np.array("tlg8-other/9")),
                           "unknown model format")
        self.assertRefused(self.variant(self.selector, ranker_1=None), "missing array")

    def test_broken_files(self):
        with open(self.selector, "rb") as f:
            data = f.read()
        cases = {"empty.npz": b"", "text.npz": b"hello", "cut.npz": data[:len(data) // 2],
                 "tail.npz": data[:-30]}
        flipped = bytearray(data)
        flipped[len(data) // 3] ^= 0xFF
        cases["flipped.npz"] = bytes(flipped)
        for name, content in cases.items():
            path = os.path.join(self.dir, name)
            with open(path, "wb") as f:
                f.write(content)
            with self.subTest(name):
                try:
                    load_model(path)
                except ModelFormatError as e:
                    self.assertIn(name, str(e))
        with self.assertRaises(FileNotFoundError):
            load_model(os.path.join(self.dir, "missing.npz"))


if __name__ == "__main__":
    unittest.main()
