"""The compiled decoder (tlg8.decode_kernels) against the NumPy decoder (tlgfile.py): the
same pixels, component count and choices for every valid file, and the same error (class
and message) for every damaged one.

Skipped when the kernels are not in use (numba not installed, or TLG8_NO_JIT set): then
decode_tlg8 runs the NumPy decoder alone, which the other decoder tests cover.
"""
import os
import random
import unittest

import numpy as np

from shared_data import IMAGES, TLGCONV, require_shared
from test_tlgfile import random_choices
import test_tlgfile_robustness as robustness
from test_tlgfile_robustness import bits_to_bytes, fuzz_bases, header_1x1, mutate, replace_payload
from tlg8 import Tlg8Error, jit, stages, tlgfile
from tlg8.image import block_grid, read_image
from tlg8.tlgfile import Tlg8FormatError, decode_tlg8, encode_tlg8


def setUpModule():
    if not jit.available():
        raise unittest.SkipTest("compiled kernels not in use (numba not installed or "
                                "TLG8_NO_JIT set): nothing to compare the NumPy decoder with")


def outcome(data, compiled, **kw):
    """("ok", samples, C, choices) or ("error", class, message) of one decoder."""
    try:
        return ("ok",) + decode_tlg8(data, compiled=compiled, **kw)
    except Tlg8Error as e:
        return "error", type(e), str(e)


class Comparison(unittest.TestCase):
    def assert_same(self, data, **kw):
        """Both decoders agree on data; returns the outcome."""
        fast, numpy = outcome(data, True, **kw), outcome(data, False, **kw)
        self.assertEqual(fast[0], numpy[0], f"compiled: {fast[1:] if fast[0] == 'error' else 'ok'}; "
                                            f"NumPy: {numpy[1:] if numpy[0] == 'error' else 'ok'}")
        if fast[0] == "error":
            self.assertEqual(fast[1:], numpy[1:])
        else:
            np.testing.assert_array_equal(fast[1], numpy[1])
            self.assertEqual(fast[1].dtype, numpy[1].dtype)
            self.assertEqual(fast[2], numpy[2])
            np.testing.assert_array_equal(fast[3], numpy[3])
            self.assertEqual(fast[3].dtype, numpy[3].dtype)
        return fast


class SharedFiles(Comparison):
    def test_reference_files(self):
        require_shared("data/tlgconv", "data/images")
        names = sorted(f[:-5] for f in os.listdir(TLGCONV) if f.endswith(".tlg8"))
        self.assertTrue(names, f"no .tlg8 files in {TLGCONV}")
        for name in names:
            with self.subTest(name=name):
                with open(os.path.join(TLGCONV, name + ".tlg8"), "rb") as f:
                    result = self.assert_same(f.read())
                self.assertEqual(result[0], "ok")
                samples, ncomp = read_image(os.path.join(IMAGES, name + ".bmp"))
                np.testing.assert_array_equal(result[1], samples)
                self.assertEqual(result[2], ncomp)


class SyntheticFiles(Comparison):
    def test_random_images_and_choices(self):
        rng = np.random.default_rng(77)
        for i in range(24):
            height, width = (int(v) for v in rng.integers(1, [100, 90]))
            ncomp = 3 + i % 2
            if i % 3 == 0:                               # noise: escape codes
                samples = rng.integers(0, 256, (height, width, ncomp), dtype=np.uint8)
            elif i % 3 == 1:                             # flat: long zero runs
                samples = np.full((height, width, ncomp), rng.integers(0, 256), np.uint8)
            else:
                y, x = np.mgrid[:height, :width]
                base = (x * 3 + y * 2)[..., None] + np.arange(ncomp) * 40
                samples = ((base + rng.integers(-3, 4, base.shape)) % 256).astype(np.uint8)
            choices = random_choices(rng, len(block_grid(width, height)), sticky=i % 2 == 0)
            with self.subTest(i=i, size=(height, width), ncomp=ncomp):
                result = self.assert_same(encode_tlg8(samples, choices))
                np.testing.assert_array_equal(result[1], samples)
                np.testing.assert_array_equal(result[3], choices)

    def test_tile_sizes_tables_and_k_indices(self):
        rng = np.random.default_rng(78)
        samples = rng.integers(0, 256, (29, 23, 4), dtype=np.uint8)
        for tile in ((1, 1), (13, 7), (5, 100), (23, 3)):
            nblocks = sum(len(tlgfile._tile_blocks(tw, th))
                          for tw, th in tlgfile._tiles(23, 29, *tile)[:, 2:].tolist())
            with self.subTest(tile=tile):
                self.assert_same(encode_tlg8(samples, random_choices(rng, nblocks),
                                             tile_size=tile))
        table = [(16, 1, (0,) * 8 + (1024,))] + list(stages.DEFAULT_GOLOMB_TABLE[1:])
        table[7] = (1, 16, (1024,) + (0,) * 8)
        self.assert_same(encode_tlg8(samples, random_choices(rng, 12), golomb_table=table))
        # k indices past 1024 (k = 0, §11), in a plain and a run-length row
        spikes = np.zeros((8, 64, 3), np.uint8)
        spikes[:, 0::2, 0] = 255
        spikes[:, 1::2, 1] = 255
        for choice in ([4, 12, 0, 0, 0], [4, 12, 0, 1, 1]):
            self.assert_same(encode_tlg8(spikes, np.tile(choice, (8, 1))))
        # two tile columns (x = 8192)
        wide = rng.integers(0, 256, (3, 8203, 3), dtype=np.uint8)
        self.assert_same(encode_tlg8(wide, random_choices(rng, len(block_grid(8203, 3)),
                                                          sticky=True)))

    def test_huge_residuals_clamp_alike(self):
        # Row 6 of a 1 x 1 image: an escape with a 31-zero gamma (|v| ~ 2^31), then two
        # small values: a valid file whose residuals only the clamp of §8.5 brings back.
        side = "00" * 5 + "0000" + "0111100" + "0000" + "00" + "10"     # p 0, f 30, i = 1
        big = "0" * 16 + "0" * 31 + "1" + "1" * 31
        for tail in ("1" + "1", "1" + "0" + "001" + "0"):
            data = replace_payload(header_1x1(), bits_to_bytes(side + "000" + big + tail * 2))
            with self.subTest(tail=tail):
                self.assertEqual(self.assert_same(data)[0], "ok")


class DamagedFiles(Comparison):
    def test_spec_errors(self):
        # The malformed files of test_tlgfile_robustness, through both decoders.
        cases = robustness.MalformedFiles()
        cases.setUp()
        checked = []

        def assert_bad(data, fragment=""):
            result = self.assert_same(data)
            checked.append(result[0] == "error" and fragment in result[2])
        cases.assert_bad = assert_bad
        for name in ("test_magic_and_version", "test_component_count", "test_mode_3",
                     "test_choice_values_out_of_range", "test_side_information_runs",
                     "test_golomb_rows", "test_payload_length_beyond_file",
                     "test_absurd_dimensions_fail_fast", "test_table_values"):
            getattr(cases, name)()
        self.assertGreater(len(checked), 15)
        self.assertTrue(all(checked))

    def test_every_truncation(self):
        rng = np.random.default_rng(79)
        samples = rng.integers(0, 256, (90, 21, 4), dtype=np.uint8)
        data = encode_tlg8(samples, random_choices(rng, len(block_grid(21, 90)), sticky=True))
        for n in range(225, len(data)):
            with self.subTest(length=n):
                self.assertEqual(self.assert_same(data[:n])[0], "error")

    def test_mutated_files(self):
        # The fuzz corpus of test_tlgfile_robustness (bench/fuzz_decoder.py runs it long).
        rnd = random.Random(4321)
        bases = fuzz_bases()
        seen = {"ok": 0, "error": 0}
        for i in range(1500):
            data = mutate(rnd.choice(bases), rnd)
            with self.subTest(i=i):
                seen[self.assert_same(data)[0]] += 1
        self.assertGreater(seen["error"], 300)
        self.assertGreater(seen["ok"], 30)

    def test_boundaries_and_precedence(self):
        """Hand-made payloads at the edges the fuzz rarely hits (each decoder must give
        the expected outcome, not only the other's)."""
        head = header_1x1()
        side_plain = "00" * 5 + "0000" "0111100" "0000" "00" "10" + "000"  # row 6, 32 bits
        side_rl = "00" * 5 + "0000" "0000000" "0000" "10" "10" + "000"     # row 7
        cases = [
            # the last code ends on the payload's last bit: valid
            (bits_to_bytes(side_plain)[:4] + bytes([0b11100000]), None),
            # an escape whose gamma starts at the payload's end / before it
            (bits_to_bytes(side_plain)[:4] + bytes(2), "past the end"),
            (bits_to_bytes(side_plain)[:4] + bytes(3), "gamma"),
            # flag 0, a zero run of 1, then a run length with a bad gamma: the
            # placeholder length 3 goes past the row's 3 values first
            (bits_to_bytes(side_rl + "0" + "0" + "11" + "0" * 40), "run of 3 goes past"),
            (bits_to_bytes(side_rl + "1" + "11" + "0" * 40), "gamma"),
        ]
        # SameAsPrevious predictor stream whose third flag would be read at the end
        wide = encode_tlg8(np.zeros((8, 32, 3), np.uint8), np.zeros((4, 5), np.int64))[:225]
        sap = bits_to_bytes("10" + "00" * 4 + "0000" + "11")[:2]
        for data, fragment in [(replace_payload(head, p), f) for p, f in cases] + \
                [(replace_payload(wide, sap), "predictor stream runs past the end")]:
            with self.subTest(fragment=fragment):
                result = self.assert_same(data)
                if fragment is None:
                    self.assertEqual(result[0], "ok")
                else:
                    self.assertEqual(result[0], "error")
                    self.assertIn(fragment, result[2])

    def test_pixel_limit(self):
        data = fuzz_bases()[3]                           # 90 x 17
        self.assertEqual(self.assert_same(data, max_pixels=90 * 17 - 1)[0], "error")
        self.assertEqual(self.assert_same(data, max_pixels=90 * 17)[0], "ok")


if __name__ == "__main__":
    unittest.main()
