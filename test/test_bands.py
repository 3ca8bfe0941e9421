"""--jobs: an image coded in bands of whole tile rows, one process each (codec.encode_blocks)."""
import multiprocessing
import os
import time
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
    """The shipped model, but in a process forked by the encoder (where="child") or in
    the caller's own (where="here") it raises (how="raise") or ends (how="exit")."""

    def __init__(self, how, where="child"):
        self.model, self.how, self.where, self.pid = default_model(), how, where, os.getpid()

    def choose_image(self, *args, **options):
        if (os.getpid() == self.pid) == (self.where == "here"):
            if self.how == "exit":
                os._exit(3)
            raise Tlg8Error("this band is refused")
        time.sleep(0.01)            # so that the other process takes some blocks too
        return self.model.choose_image(*args, **options)


class Bands(unittest.TestCase):
    @unittest.mock.patch.object(codec, "SELECT_CHUNK", 8)      # chunks across tiles
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

    def test_more_bands_than_processes_give_the_same_bytes(self):
        # 20 x 600 = 12,000 pixels in bands of at most 4,000: three bands, taken one
        # after another by one process, or two and one by two.
        rgb = tall_image()
        want = codec.encode_blocks(rgb)
        reference = codec.encode_samples(rgb[:300], search="reference")    # 4 tile rows
        with unittest.mock.patch.object(codec, "BAND_PIXELS", 4000), \
                unittest.mock.patch.object(codec, "SELECT_CHUNK", 8):
            for jobs in (1, 2):
                with unittest.mock.patch.object(codec, "_run_parts",
                                                wraps=codec._run_parts) as parts:
                    got = codec.encode_blocks(rgb, jobs=jobs)
                self.assertEqual(got[0], want[0], jobs)
                for a, b in zip(got[1:], want[1:]):
                    np.testing.assert_array_equal(a, b)
                # this process's calls: every stage on its own parts (3, or 2 of 3)
                self.assertEqual({len(call.args[2]) for call in parts.call_args_list},
                                 {3 if jobs == 1 else 2})
            for jobs in (1, 2):
                self.assertEqual(codec.encode_samples(rgb[:300], search="reference",
                                                      jobs=jobs), reference)

    def test_a_model_trying_configurations_out_of_range_is_refused(self):
        # What the file pass reads is kept in int16 and indexes the kernels' tables: a
        # model whose "tried" holds filter 300 or reorder 8 gets an error, never a wrapped
        # or wild value.
        class WildModel:
            def __init__(self, key, index, value):
                self.model, self.key, self.index, self.value = default_model(), key, index, value

            def choose_image(self, *args, **options):
                sel = self.model.choose_image(*args, **options)
                sel[self.key][self.index] = self.value
                return sel
        rgb = tall_image()
        for key, index, value in (("tried", (0, 0, 1), 300), ("tried", (5, 2, 2), 8),
                                  ("tried", (5, 2, 0), -1), ("tried_entropy", (3, 1), 2)):
            for band_pixels in (codec.BAND_PIXELS, 4000):           # one band, three
                with self.subTest(key=key, value=value, band_pixels=band_pixels), \
                        unittest.mock.patch.object(codec, "BAND_PIXELS", band_pixels):
                    with self.assertRaisesRegex(Tlg8Error, "tried configurations out of"):
                        codec.encode_blocks(rgb, model=WildModel(key, index, value))

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
        grid = codec.block_grid(20, 600, 200)
        self.assertEqual([p["band"] for p in codec._parts(grid, codec._bands(20, 600, 200, 2))],
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

    @unittest.mock.patch.object(codec, "SELECT_CHUNK", 8)
    def test_a_bands_error_reaches_the_caller_and_no_process_is_left(self):
        rgb = tall_image()
        for how, where, message in (("raise", "child", "this band is refused"),
                                    ("exit", "child", "ended before its band was done"),
                                    ("raise", "here", "this band is refused")):
            with self.assertRaisesRegex(Tlg8Error, message):
                codec.encode_samples(rgb, model=FailingModel(how, where), jobs=2)
            self.assertEqual(multiprocessing.active_children(), [])

if __name__ == "__main__":
    unittest.main()
