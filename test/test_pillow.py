"""tlg8.pillow: TLG8 through Pillow's open and save, in the style of Pillow's plugin tests."""
import io
import os
import tempfile
import unittest

import numpy as np
from PIL import Image, UnidentifiedImageError

import tlg8.pillow  # noqa: F401  (registers the format)
from shared_data import IMAGES, TLGCONV, parity_names
from test_features import random_image


def roundtrip(im, **params):
    out = io.BytesIO()
    im.save(out, format="TLG8", **params)
    out.seek(0)
    return Image.open(out)


class PillowPluginTest(unittest.TestCase):
    def test_rgb_and_rgba_round_trip_exactly(self):
        for mode, ncomp in (("RGB", 3), ("RGBA", 4)):
            pixels = random_image(ncomp, 19, 21, ncomp)
            back = roundtrip(Image.fromarray(pixels, mode))
            self.assertEqual((back.format, back.mode, back.size), ("TLG8", mode, (21, 19)))
            np.testing.assert_array_equal(np.asarray(back), pixels)

    def test_save_parameters_and_extensions(self):
        pixels = random_image(5, 16, 16, 3)
        im = Image.fromarray(pixels)
        ref = roundtrip(im, search="reference")
        few = roundtrip(im, max_trials=1)
        for back in (ref, few):
            np.testing.assert_array_equal(np.asarray(back), pixels)
        with tempfile.TemporaryDirectory() as tmp:
            for ext in (".tlg8", ".tlg"):
                path = os.path.join(tmp, "x" + ext)
                im.save(path)                        # the format from the extension
                with Image.open(path) as back:
                    self.assertEqual(back.format, "TLG8")
                    np.testing.assert_array_equal(np.asarray(back), pixels)
            # jobs: the same file from two processes (a tall image: several tile rows)
            tall = Image.fromarray(random_image(6, 520, 12, 3))
            files = []
            for jobs in (1, 2):
                path = os.path.join(tmp, f"j{jobs}.tlg8")
                tall.save(path, jobs=jobs)
                with open(path, "rb") as f:
                    files.append(f.read())
            self.assertEqual(files[0], files[1])

    def test_other_modes_are_converted(self):
        grey = Image.fromarray(random_image(2, 8, 9, 1)[..., 0], "L")
        back = roundtrip(grey)
        self.assertEqual(back.mode, "RGB")
        np.testing.assert_array_equal(np.asarray(back), np.asarray(grey.convert("RGB")))

    def test_reference_files_open_equal_to_their_images(self):
        for name in parity_names()[:8] + ["dko_sss"]:
            with Image.open(os.path.join(TLGCONV, name + ".tlg8")) as im, \
                    Image.open(os.path.join(IMAGES, name + ".bmp")) as bmp:
                self.assertEqual(im.format, "TLG8")
                np.testing.assert_array_equal(np.asarray(im), np.asarray(bmp.convert(im.mode)))

    def test_invalid_files_are_refused_as_pillow_refuses_them(self):
        good = io.BytesIO()
        Image.fromarray(random_image(3, 8, 8, 3)).save(good, format="TLG8")
        data = good.getvalue()
        with self.assertRaises(UnidentifiedImageError):
            Image.open(io.BytesIO(b"not an image at all"))
        with self.assertRaises(UnidentifiedImageError):        # magic, broken header
            Image.open(io.BytesIO(data[:20]))
        im = Image.open(io.BytesIO(data[:-8]))                # valid header, cut payload
        with self.assertRaises(OSError):
            im.load()


if __name__ == "__main__":
    unittest.main()
