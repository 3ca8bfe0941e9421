"""The file-cost model (tlg8.filecost) against the bytes encode_tlg8 writes, and the
file-bytes selection."""
import os
import unittest

import numpy as np

from shared_data import IMAGES, TLGCONV, require_shared
from test_tlgfile import random_choices
from tlg8 import cost, filecost, stages, synth, tlgfile
from tlg8.image import block_batches, block_grid, block_workspaces, read_image


def payload_lengths(data):
    """L of every tile record of a .tlg8 file (§3.3)."""
    pos = filecost.HEADER_BYTES
    out = []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "little")
        out.append(length)
        pos += 4 + length
    return out


def encoder_golomb_bits(samples, choices):
    """Bits of each tile's Golomb rows as the encoder writes them (tlgfile's own fields)."""
    height, width, ncomp = samples.shape
    tiles = tlgfile._tiles(width, height, filecost.TILE_W, filecost.TILE_H)
    starts = filecost.tile_starts(block_grid(width, height))
    out = []
    for t, tile in enumerate(tiles):
        blocks = tlgfile._chunk_blocks(tile[None])
        flat, _, rows = tlgfile._coded_values(tlgfile._canvas(samples, tile[None]), blocks,
                                              choices[starts[t]:starts[t + 1]])
        seqs = [(r, flat[rows == r]) for r in range(8) if (rows == r).any()]
        ms = [tlgfile._magnitudes(v, tlgfile._RUNLENGTH_ROW[r]) for r, v in seqs]
        ks = tlgfile._adaptive_k(ms, [r for r, _ in seqs], stages.DEFAULT_GOLOMB_TABLE)
        out.append(sum(int(tlgfile._row_fields(v, m, k, tlgfile._RUNLENGTH_ROW[r])[1].sum())
                       for (r, v), m, k in zip(seqs, ms, ks)))
    return out


def components(rgba, ncomp):
    return np.ascontiguousarray(rgba[..., :3] if ncomp == 3 else
                                np.concatenate([rgba[..., 3:], rgba[..., :3]], axis=2))


class FileBitsMatchEncoder(unittest.TestCase):
    def check(self, samples, choices, golomb_table=None, tile_h=filecost.TILE_H):
        data = tlgfile.encode_tlg8(samples, choices, golomb_table, (filecost.TILE_W, tile_h))
        side, golomb = filecost.file_bits(samples, choices, golomb_table, tile_h)
        starts = filecost.tile_starts(block_grid(samples.shape[1], samples.shape[0], tile_h))
        side_t = np.add.reduceat(side.sum(1), starts[:-1])
        golomb_t = np.add.reduceat(golomb, starts[:-1])
        self.assertEqual(filecost.payload_bytes(side_t, golomb_t).tolist(),
                         payload_lengths(data))
        self.assertEqual(filecost.file_size(samples, side, golomb, tile_h), len(data))
        return data, side, golomb_t

    def test_taller_tiles(self):
        rng = np.random.default_rng(9)
        for name in ("gradients", "texture", "alpha"):
            samples = components(synth.make_images()[name], 4 if name == "alpha" else 3)
            n = len(block_grid(samples.shape[1], samples.shape[0]))
            for tile_h in (96, 128, 256):
                with self.subTest(image=name, tile_h=tile_h):
                    data, _, _ = self.check(samples, random_choices(rng, n, True),
                                            tile_h=tile_h)
                    self.assertEqual(tlgfile.read_header(data)["tile_h"], tile_h)

    def test_synthetic_images_random_choices(self):
        rng = np.random.default_rng(5)
        for name, rgba in synth.make_images().items():
            for ncomp in (3, 4):
                samples = components(rgba, ncomp)
                n = len(block_grid(samples.shape[1], samples.shape[0]))
                for sticky in (False, True):
                    with self.subTest(image=name, ncomp=ncomp, sticky=sticky):
                        choices = random_choices(rng, n, sticky)
                        _, side, golomb_t = self.check(samples, choices)
                        self.assertEqual(golomb_t.tolist(),
                                         encoder_golomb_bits(samples, choices))
                        starts = filecost.tile_starts(block_grid(samples.shape[1], samples.shape[0]))
                        for t0, t1 in zip(starts[:-1], starts[1:]):
                            for s, (col, width) in enumerate(zip(tlgfile.STREAM_COLUMNS,
                                                                 tlgfile.STREAM_BITS)):
                                self.assertEqual(int(side[t0:t1, s].sum()), min(
                                    tlgfile._stream_costs(choices[t0:t1, col], width)))

    def test_fitted_and_other_golomb_tables(self):
        rng = np.random.default_rng(8)
        for name in ("texture", "edges", "alpha"):
            samples = components(synth.make_images()[name], 4 if name == "alpha" else 3)
            choices = random_choices(rng, len(block_grid(samples.shape[1],
                                                         samples.shape[0])), True)
            fitted = tlgfile.read_header(tlgfile.encode_tlg8(samples, choices,
                                                             fit_table=True))["golomb_table"]
            slow = [(3, 14, counts) for _, _, counts in fitted]      # other ratios too
            for label, table in (("fitted", fitted), ("other ratios", slow)):
                with self.subTest(image=name, table=label):
                    self.check(samples, choices, table)

    def test_flat_image_long_runs(self):
        # One zero run across every block of a tile (run-length rows, 2-group varuints).
        samples = np.full((80, 1100, 3), 77, np.uint8)
        n = len(block_grid(1100, 80))
        choices = np.tile([0, 71, 0, 1, 1], (n, 1))
        self.check(samples, choices)
        choices[:, 3] = 0
        self.check(samples, choices)

    def test_shared_photo_reference_choices(self):
        require_shared("data/images/dko_sss.bmp", "data/tlgconv/dko_sss.tlg8")
        samples, _ = read_image(os.path.join(IMAGES, "dko_sss.bmp"))
        with open(os.path.join(TLGCONV, "dko_sss.tlg8"), "rb") as f:
            reference = f.read()
        _, _, choices = tlgfile.decode_tlg8(reference)
        data, _, _ = self.check(samples, choices)
        self.assertEqual(data, reference)


class Pieces(unittest.TestCase):
    def test_stream_bits_spec_vectors(self):
        # File spec §10.3: the chosen mode's cost, split over the blocks.
        for values, width, mode, total in (([0] * 212, 4, 2, 20),
                                           ([5, 5, 5, 2, 2, 7], 4, 1, 17),
                                           ([71, 71, 86, 71, 71, 71, 7, 7], 7, 1, 35),
                                           ([1, 0, 1, 1, 0, 1], 2, 0, 12)):
            bits = filecost.stream_bits(np.array(values), width, mode)
            self.assertEqual(int(bits.sum()), total)
            self.assertEqual(tlgfile._stream_mode(np.array(values), width), mode)
        # A run of 129 needs a second varuint group, at its 129th block.
        bits = filecost.stream_bits(np.zeros(20000, np.int64), 4, 2)
        self.assertEqual(np.flatnonzero(bits).tolist(), [0, 128, 16384])
        self.assertEqual(int(bits.sum()), 4 + 8 * 3)

    def test_lane_bits_from_a_state(self):
        rng = np.random.default_rng(2)
        values = rng.integers(-40, 41, (30, 50)).astype(np.int16)
        values[rng.random(values.shape) < 0.4] = 0
        start = rng.integers(0, 3000, 50)
        up, down, counts = stages.DEFAULT_GOLOMB_TABLE[4]
        bounds = np.cumsum(counts)
        for entropy in (0, 1):
            end = np.zeros(50, np.int64)
            bits = cost.lane_bits(values, 4, entropy, start=start, end=end)
            for lane in range(50):
                a, total = int(start[lane]), 0
                for v in values[:, lane].tolist():
                    if entropy == 1 and v == 0:
                        continue
                    m = (2 * v if v >= 0 else -2 * v - 1) if entropy == 0 else \
                        (2 * v - 1 if v > 0 else -2 * v - 2)
                    k = int(np.searchsorted(bounds, (a + 8) >> 4, side="right"))
                    total += cost.golomb_cost(m, k)
                    rho = up if a < m else down
                    a = (16 * m * rho + a * (16 - rho) + 8) >> 4
                if entropy == 1:
                    nonzero = values[:, lane] != 0
                    runs = np.diff(np.flatnonzero(np.concatenate(
                        [[True], nonzero[1:] != nonzero[:-1], [True]])))
                    total += 1 + sum(cost.run_cost(int(r)) for r in runs)
                self.assertEqual((int(bits[lane]), int(end[lane])), (total, a))

    def test_chained_states_reach_the_exact_ones(self):
        rgba = synth.make_images()["texture"]
        samples = components(rgba, 3)
        grid = block_grid(samples.shape[1], samples.shape[0])
        choices = random_choices(np.random.default_rng(3), len(grid), sticky=True)
        exact = filecost.entering_states(samples, choices)
        classes = list(filecost._size_classes(samples, grid))
        starts = filecost.tile_starts(block_grid(samples.shape[1], samples.shape[0]))
        states = np.zeros_like(exact)
        for _ in range(20):
            states = filecost._chain_states(filecost._exit_states(classes, choices, states),
                                            starts)
        np.testing.assert_array_equal(states, exact)


def candidate_lists(samples, n_configs, seed):
    """Per block: n_configs random configurations (reorder 0 on edge blocks) with their
    estimated bits and better entropy, as pair_selector.select_blocks reports them."""
    grid = block_grid(samples.shape[1], samples.shape[0])
    rng = np.random.default_rng(seed)
    tried = np.stack([rng.integers(0, limit, (len(grid), n_configs))
                      for limit in (8, 96, 8, 2)], axis=2)
    tried[(grid[:, 4] < 8) | (grid[:, 5] < 8), :, 2] = 0
    bits = np.zeros(tried.shape[:2], np.int64)
    entropy = np.zeros(tried.shape[:2], np.int64)
    for part in block_batches(grid):
        bits[part], entropy[part] = cost.configs_bits(block_workspaces(samples, grid[part]),
                                                      tried[part])
    return grid, tried, bits, entropy


class ChooseForFile(unittest.TestCase):
    def test_smaller_valid_files(self):
        for name in ("texture", "edges", "alpha"):
            samples = components(synth.make_images()[name], 4 if name == "alpha" else 3)
            grid, tried, bits, entropy = candidate_lists(samples, 12, seed=1)
            rows = np.arange(len(grid))
            best = bits.argmin(1)
            baseline = np.concatenate([tried[rows, best], entropy[rows, best, None]], 1)
            choices = filecost.choose_for_file(samples, grid, tried, bits, entropy)
            with self.subTest(image=name):
                self.assertEqual(choices.shape, (len(grid), 5))
                full = (grid[:, 4] == 8) & (grid[:, 5] == 8)
                # Every choice is one of the block's own tried configurations (edge
                # blocks may store another reorder, which they do not use).
                same = (tried == choices[:, None, :4]) | \
                    ((np.arange(4) == 2) & ~full[:, None, None])
                self.assertTrue(same.all(2).any(1).all())
                data = tlgfile.encode_tlg8(samples, choices)
                self.assertLess(len(data), len(tlgfile.encode_tlg8(samples, baseline)))
                decoded, _, _ = tlgfile.decode_tlg8(data)
                np.testing.assert_array_equal(decoded, samples)

    def test_edge_blocks_repeat_the_previous_reorder(self):
        samples = components(synth.make_images()["gradients"], 3)
        grid, tried, bits, entropy = candidate_lists(samples, 6, seed=2)
        choices = filecost.choose_for_file(samples, grid, tried, bits, entropy)
        starts = filecost.tile_starts(block_grid(samples.shape[1], samples.shape[0]))
        edge = (grid[:, 4] < 8) | (grid[:, 5] < 8)
        first = np.isin(np.arange(len(grid)), starts)
        self.assertTrue(edge.any())
        later = np.flatnonzero(edge & ~first)
        np.testing.assert_array_equal(choices[later, 2], choices[later - 1, 2])


if __name__ == "__main__":
    unittest.main()
