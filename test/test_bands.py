"""--jobs: an image coded in bands of whole tile rows, one process each (codec.encode_blocks)."""
import multiprocessing
import os
import unittest
import unittest.mock

import numpy as np

from tlg8 import Tlg8Error, codec, tlgfile
from tlg8.selector import default_model

def tall_image(rows=600, width=20, seed=4):
    """Three tiles of 200 rows (codec.tile_height): bands of two tile rows and one."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(120, 30, (rows, width, 3)), 0, 255).astype(np.uint8)


class FailingModel:
    """The shipped model, but the process choosing the image's first block (where="first")
    or any other process (where="later") raises (how="raise") or ends (how="exit")."""

    def __init__(self, how, where="later"):
        self.model, self.how, self.where = default_model(), how, where

    def choose_image(self, samples, *args, grid=None, **options):
        if (grid[0, 2:4] == 0).all() == (self.where == "first"):
            if self.how == "exit":
                os._exit(3)
            raise Tlg8Error("this band is refused")
        return self.model.choose_image(samples, *args, grid=grid, **options)


class Bands(unittest.TestCase):
    def test_any_jobs_give_the_same_bytes_and_choices(self):
        rgb = tall_image()
        for effort in (1, 3):
            one = codec.encode_blocks(rgb, effort=effort)
            self.assertEqual(tlgfile.read_header(one[0])["tile_h"], 200)
            np.testing.assert_array_equal(tlgfile.decode_tlg8(one[0])[0], rgb)
            for jobs in (2, 3, 8):
                got = codec.encode_blocks(rgb, effort=effort, jobs=jobs)
                self.assertEqual(got[0], one[0], (effort, jobs))
                for a, b in zip(got[1:], one[1:]):
                    np.testing.assert_array_equal(a, b)
        self.assertEqual(codec.encode_samples(rgb[:90], search="reference", jobs=2),
                         codec.encode_samples(rgb[:90], search="reference"))

    def test_without_fork_the_bands_run_here(self):
        rgb = tall_image()
        want = codec.encode_samples(rgb)
        with unittest.mock.patch("multiprocessing.get_all_start_methods",
                                 return_value=["spawn"]):
            self.assertEqual(codec.encode_samples(rgb, jobs=2), want)

    def test_bands_are_whole_tile_rows_of_about_equal_size(self):
        self.assertEqual(codec._bands(20, 600, 200, 2), [(0, 400), (400, 600)])
        self.assertEqual(codec._bands(20, 600, 200, 9), [(0, 200), (200, 400), (400, 600)])
        self.assertEqual(codec._bands(20, 1024, 256, 2), [(0, 512), (512, 1024)])
        self.assertEqual(codec._bands(20, 70, 80, 4), [(0, 70)])
        # The model's blocks are shared out evenly; the other searches keep whole tiles.
        grid = codec.block_grid(20, 600, 200)
        bands = codec._bands(20, 600, 200, 2)
        self.assertEqual([p["band"] for p in codec._parts(grid, bands, "model")],
                         [(0, 150), (150, 225)])
        self.assertEqual([p["select"] for p in codec._parts(grid, bands, "model")],
                         [(0, 112), (112, 225)])
        self.assertEqual([p["select"] for p in codec._parts(grid, bands, "reference")],
                         [(0, 150), (150, 225)])

    def test_join_bands_is_the_whole_files_header_over_the_band_records(self):
        rgb = tall_image(rows=90)
        choices = codec.choose_blocks(rgb, search="reference")[0]
        whole = tlgfile.encode_tlg8(rgb, choices, tile_size=(8192, 40))
        # blocks of the first band: its two tile rows of 40, in block order
        first = len(codec.block_grid(20, 80, 40))
        parts = [tlgfile.encode_tlg8(rgb[:80], choices[:first], tile_size=(8192, 40)),
                 tlgfile.encode_tlg8(rgb[80:], choices[first:], tile_size=(8192, 40))]
        self.assertEqual(tlgfile.join_bands(parts), whole)
        with self.assertRaisesRegex(ValueError, "not whole tiles"):
            tlgfile.join_bands(parts[::-1])
        other = tlgfile.encode_tlg8(rgb[80:], choices[first:], tile_size=(8192, 40),
                                    fit_table=True)
        with self.assertRaisesRegex(ValueError, "golomb_table"):
            tlgfile.join_bands([parts[0], other])

    def test_a_bands_error_reaches_the_caller_and_no_process_is_left(self):
        rgb = tall_image()
        for how, message in (("raise", "this band is refused"),
                             ("exit", "ended before its band was done")):
            with self.assertRaisesRegex(Tlg8Error, message):
                codec.encode_samples(rgb, model=FailingModel(how), jobs=2)
            self.assertEqual(multiprocessing.active_children(), [])
        # Here, in the first part, the error is the same.
        with self.assertRaisesRegex(Tlg8Error, "this band is refused"):
            codec.encode_samples(rgb, model=FailingModel("raise", "first"), jobs=2)
        self.assertEqual(multiprocessing.active_children(), [])

if __name__ == "__main__":
    unittest.main()
