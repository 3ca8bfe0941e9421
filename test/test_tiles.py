"""Tiles taller than the reference's 80 rows: the model search's files (codec.tile_height)."""
import unittest

import numpy as np

from tlg8 import codec, synth, tlgfile
from tlg8.image import BLOCK, TILE_H, TILE_W, block_batches, block_grid, block_workspaces


def plain_workspace(samples, row, tile_h):
    """Spec §2.4 literally: the block's row above and a column each side, samples outside
    the block's tile read as 0."""
    ox, oy, bx, by, w, h = row
    height, width, ncomp = samples.shape
    tw, th = min(TILE_W, width - ox), min(tile_h, height - oy)
    ws = np.zeros((ncomp, h + 1, w + 2), np.int32)
    for y in range(-1, h):
        for x in range(-1, w + 1):
            if ox <= bx + x < ox + tw and oy <= by + y < oy + th:
                ws[:, y + 1, x + 1] = samples[by + y, bx + x]
    return ws


class TallTiles(unittest.TestCase):
    def test_block_order_matches_the_file(self):
        for width, height, tile_h in ((75, 93, 16), (17, 600, 256), (8203, 30, 24)):
            tiles = tlgfile._tiles(width, height, TILE_W, tile_h)
            blocks = tlgfile._chunk_blocks(tiles)
            grid = block_grid(width, height, tile_h)
            np.testing.assert_array_equal(tiles[blocks[:, 0], :2] + blocks[:, 1:3],
                                          grid[:, 2:4])
            np.testing.assert_array_equal(blocks[:, 3:5], grid[:, 4:6])
            np.testing.assert_array_equal(tiles[blocks[:, 0], :2], grid[:, :2])

    def test_workspaces_see_up_to_the_tile_top(self):
        rng = np.random.default_rng(1)
        samples = rng.integers(0, 256, (90, 21, 3), dtype=np.uint8)
        for tile_h in (80, 40, 88):
            grid = block_grid(21, 90, tile_h)
            for part in block_batches(grid):
                ws = block_workspaces(samples, grid[part])
                for n, row in zip(range(len(part)), grid[part].tolist()):
                    np.testing.assert_array_equal(ws[n], plain_workspace(samples, row, tile_h),
                                                  (tile_h, row))

    def test_tile_height(self):
        for (width, height), want in {(1024, 1024): 256, (827, 1024): 256, (200, 200): 200,
                                      (750, 755): 256, (3000, 3000): 216, (20, 600): 200,
                                      (9000, 2000): TILE_H, (1, 5): TILE_H}.items():
            rows = codec.tile_height(width, height)
            with self.subTest(size=(width, height)):
                self.assertEqual(rows, want)
                self.assertEqual(codec.tile_height(width, height, "reference"), TILE_H)
                self.assertEqual(codec.tile_height(width, height, "exhaustive"), TILE_H)
                self.assertEqual(rows % BLOCK, 0)
                # Within the reference's largest tile, and no tile row nearly empty.
                self.assertLessEqual(min(width, TILE_W) * rows,
                                     max(codec.MAX_TILE_PIXELS, min(width, TILE_W) * TILE_H))
                last = height - (-(-height // rows) - 1) * rows
                self.assertTrue(height <= rows or last > rows - BLOCK * -(-height // rows))

    def test_model_files_use_tall_tiles_and_decode(self):
        rgba = synth.make_images()["gradients"]
        samples = codec.to_tlg8_order(np.concatenate([rgba[..., :3]] * 2, axis=0))
        data = codec.encode_samples(samples, effort=2)
        self.assertEqual(tlgfile.read_header(data)["tile_h"],
                         codec.tile_height(samples.shape[1], samples.shape[0]))
        self.assertGreater(tlgfile.read_header(data)["tile_h"], TILE_H)
        out, _, _ = tlgfile.decode_tlg8(data)
        np.testing.assert_array_equal(out, samples)
        reference = codec.encode_samples(samples, search="reference")
        self.assertEqual(tlgfile.read_header(reference)["tile_h"], TILE_H)


if __name__ == "__main__":
    unittest.main()
