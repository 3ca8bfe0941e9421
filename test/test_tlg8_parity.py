"""Byte parity with the reference encoder's .tlg8 files (../shared/data/tlgconv).

For NAME with images/NAME.bmp, tlgconv/NAME.tlg8 and tlgconv/NAME.jsonl.gz: encoding the
image with the dump's `best` choices gives the reference file byte for byte, and decoding
the reference file gives the image's pixels and those choices. CI checks every small
image, dko_sss, and two photos with edge blocks (dko_t, img3); bench/parity_tlg8.py checks
every file.
"""
import os
import unittest

import numpy as np

from shared_data import IMAGES, TLGCONV, parity_names, require_shared
from tlg8 import records
from tlg8.image import block_grid, read_image
from tlg8.tlgfile import decode_tlg8, encode_tlg8

SMALL_PIXELS = 64 * 64
CI_PHOTOS = ("dko_sss", "dko_t", "img3")


def reference_case(name):
    """(samples, C, choices from the dump's `best`, reference file bytes)."""
    samples, ncomp = read_image(os.path.join(IMAGES, name + ".bmp"))
    dump, problems = records.parse_file(os.path.join(TLGCONV, name + ".jsonl.gz"))
    if problems:
        raise AssertionError(f"{name}: unreadable dump: {problems[:3]}")
    grid = block_grid(samples.shape[1], samples.shape[0])
    if not np.array_equal(dump["origin"], grid[:, 2:4]):
        raise AssertionError(f"{name}: dump records are not in block order")
    with open(os.path.join(TLGCONV, name + ".tlg8"), "rb") as f:
        return samples, ncomp, dump["best"].astype(np.int64), f.read()


def ci_names():
    names = []
    for name in parity_names():
        if not os.path.exists(os.path.join(TLGCONV, name + ".tlg8")):
            continue
        with open(os.path.join(IMAGES, name + ".bmp"), "rb") as f:
            head = f.read(26)
        pixels = abs(int.from_bytes(head[18:22], "little", signed=True)
                     * int.from_bytes(head[22:26], "little", signed=True))
        if pixels <= SMALL_PIXELS or name in CI_PHOTOS:
            names.append(name)
    return names


class ReferenceParity(unittest.TestCase):
    def setUp(self):
        require_shared("data/images", "data/tlgconv")

    def test_files(self):
        names = ci_names()
        self.assertTrue(names, "no reference .tlg8 files with images found")
        for name in names:
            with self.subTest(name=name):
                samples, ncomp, choices, reference = reference_case(name)
                data = encode_tlg8(samples, choices)
                self.assertEqual(len(data), len(reference))
                if data != reference:
                    first = next(i for i, (a, b) in enumerate(zip(data, reference)) if a != b)
                    self.fail(f"{name}: first differing byte at offset {first}")
                out, got_ncomp, got_choices = decode_tlg8(reference)
                self.assertEqual(got_ncomp, ncomp)
                np.testing.assert_array_equal(out, samples)
                np.testing.assert_array_equal(got_choices, choices)


if __name__ == "__main__":
    unittest.main()
