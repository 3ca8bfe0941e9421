"""The .tlg8 encoder/decoder: spec test vectors, bit-level pieces, round trips."""
import os
import unittest

import numpy as np

from shared_data import IMAGES, TLGCONV, require_shared
from tlg8 import Tlg8Error, stages, tlgfile
from tlg8.image import block_grid, read_image
from tlg8.tlgfile import (CHOICE_LIMITS, Tlg8FormatError, decode_tlg8, encode_tlg8,
                          read_header, read_tlg8)

# File spec §10.1: the whole 241-byte file of a 1 x 1 image (89, 113, 118).
VECTOR_1X1 = bytes.fromhex("""
54 4C 47 38 2E 30 00 72 61 77 1A 03 01 B0 00 00 08 00 20 00 00 00 00 00 00 50 00 00 00 00 00 00
00 01 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 0C 00 06 00 01 00 03 00 04 00 09 00 1B 00 5E
00 0B 01 E0 01 8B 00 09 00 06 00 02 00 03 00 03 00 0E 00 7A 00 60 00 E5 00 B3 01 78 00 07 00 05
00 03 00 01 00 06 00 08 00 70 00 6C 00 02 01 9E 01 72 00 0C 00 08 00 02 00 03 00 03 00 0A 00 0F
00 5C 00 FD 00 09 02 7D 00 0E 00 06 00 02 00 03 00 03 00 0B 00 47 00 5F 00 18 01 C4 01 6B 00 0A
00 09 00 03 00 02 00 06 00 05 00 65 00 38 00 05 01 A6 01 A8 00 06 00 05 00 03 00 02 00 05 00 08
00 2F 00 78 00 FA 00 EC 01 61 00 03 00 05 00 03 00 04 00 02 00 0B 00 1B 00 6E 00 F8 00 E7 01 84
00 0C 00 00 00 00 80 07 08 00 00 80 A3 7D 02 00 00
""")
# §10.2: an 8 x 8 grey image; its tile record (L, payload).
VECTOR_GREY_RECORD = bytes.fromhex("0C 00 00 00 00 C0 11 0A 01 00 00 C2 07 EC 01 00")


def bit_string(values, lengths):
    """Fields as the spec lists them: each value LSB first."""
    return "".join(format(int(v), f"0{n}b")[::-1] if n else ""
                   for v, n in zip(values, lengths))


def plain_adaptive_k(ms, row, table):
    """k before each value of one Golomb row, straight from spec §7.1-7.2."""
    up, down, counts = table[row]
    bounds = np.cumsum(counts)
    out, a = [], 0
    for m in ms:
        idx = (a + 8) >> 4
        out.append(int(np.searchsorted(bounds, idx, side="right")) if idx < 1024 else 0)
        rho = up if a < m else down
        a = ((16 * m) * rho + a * (16 - rho) + 8) >> 4
    return out


def random_choices(rng, nblocks, sticky=False):
    """Random (N, 5) choices; sticky ones repeat the previous block's value often, so the
    SameAsPrevious and RunLength stream modes occur."""
    ch = np.stack([rng.integers(0, limit, nblocks) for limit in CHOICE_LIMITS], axis=1)
    if sticky:
        keep = rng.random((nblocks, 5)) < 0.8
        for b in range(1, nblocks):
            ch[b, keep[b]] = ch[b - 1, keep[b]]
    return ch


class SpecVectors(unittest.TestCase):
    def test_1x1_file_bytes(self):
        samples = np.array([[[89, 113, 118]]], np.uint8)
        self.assertEqual(encode_tlg8(samples, [[0, 30, 0, 1, 0]]), VECTOR_1X1)

    def test_1x1_decodes(self):
        samples, ncomp, choices = decode_tlg8(VECTOR_1X1)
        self.assertEqual(ncomp, 3)
        self.assertEqual(samples.tolist(), [[[89, 113, 118]]])
        self.assertEqual(choices.tolist(), [[0, 30, 0, 1, 0]])

    def test_grey_runlength_record(self):
        samples = np.full((8, 8, 3), 128, np.uint8)
        data = encode_tlg8(samples, [[0, 71, 0, 1, 1]])
        self.assertEqual(data[225:], VECTOR_GREY_RECORD)
        self.assertEqual(data[:225], VECTOR_1X1[:33] + (8).to_bytes(8, "little") * 2
                         + VECTOR_1X1[49:225])
        out, _, choices = decode_tlg8(data)
        np.testing.assert_array_equal(out, samples)
        self.assertEqual(choices.tolist(), [[0, 71, 0, 1, 1]])

    def test_header_and_table_serialisation(self):
        hdr = read_header(VECTOR_1X1)
        self.assertEqual((hdr["ncomp"], hdr["width"], hdr["height"], hdr["tile_w"],
                          hdr["tile_h"], hdr["offset"]), (3, 1, 1, 8192, 80, 225))
        self.assertEqual(hdr["golomb_table"], stages.DEFAULT_GOLOMB_TABLE)
        self.assertEqual(tlgfile._table_bytes(stages.DEFAULT_GOLOMB_TABLE)[:22],
                         bytes.fromhex("0C 00 06 00 01 00 03 00 04 00 09 00 1B 00 5E 00 "
                                       "0B 01 E0 01 8B 00"))

    def test_choice_stream_modes(self):
        # §10.3: values, width, chosen mode, bits written.
        cases = [
            ([0] * 212, 4, 2, "0000" "11001011" "10000000"),
            ([5, 5, 5, 2, 2, 7], 4, 1, "1010" "1" "1" "00100" "1" "01110"),
            ([71, 71, 86, 71, 71, 71, 7, 7], 7, 1,
             "1110001" "1" "00110101" "01110001" "1" "1" "01110000" "1"),
            ([1, 0, 1, 1, 0, 1], 2, 0, "10" "00" "10" "10" "00" "10"),
        ]
        for values, width, mode, bits in cases:
            with self.subTest(values=values[:8]):
                got_mode, vals, lens = tlgfile._stream_fields(np.array(values), width)
                self.assertEqual(got_mode, mode)
                self.assertEqual(bit_string(vals, lens), bits)

    def test_single_block_stream_is_raw(self):
        self.assertEqual(tlgfile._stream_fields(np.array([3]), 4)[0], 0)


class BitPieces(unittest.TestCase):
    def test_pack_lsb_first(self):
        # §4: the 2-bit value 2 then the 3-bit value 5 give the byte 0x16.
        self.assertEqual(tlgfile._pack([2, 5], [2, 3]), b"\x16")
        self.assertEqual(tlgfile._pack([], []), b"")

    def test_pack_long_fields_across_bytes(self):
        rng = np.random.default_rng(3)
        lengths = rng.integers(1, 58, 500)
        values = [int(rng.integers(0, 1 << int(n))) for n in lengths]
        expected = sum(v << int(s) for v, s in zip(values, np.cumsum(lengths) - lengths))
        nbytes = (int(lengths.sum()) + 7) // 8
        self.assertEqual(tlgfile._pack(values, lengths), expected.to_bytes(nbytes, "little"))

    def test_varuint(self):
        for x, groups in ((0, [0]), (5, [5]), (211, [0xD3, 0x01]), (1279, [0xFF, 0x09])):
            self.assertEqual(tlgfile._varuint_groups(x), groups)

    def test_gamma(self):
        # §7.3 examples.
        for g, bits in ((1, "1"), (4, "00100"), (6, "00101"), (163, "0000000" "1" "1100010")):
            vals, lens = tlgfile._gamma_fields(np.array([g]))
            self.assertEqual(bit_string(vals, lens), bits)

    def test_rice_codes(self):
        vals, lens = tlgfile._rice_fields(np.array([178, 29, 9, 0]), np.array([0, 5, 4, 2]))
        self.assertEqual(bit_string(vals[:1], lens[:1]), "0" * 16 + "0000000" "1" "1100010")
        self.assertEqual(bit_string(vals[1:], lens[1:]), "1" "10111" "1" "1001" "1" "00")

    def test_run_length_codes(self):
        vals, lens = tlgfile._run_fields(np.array([1, 2, 3, 191]))
        self.assertEqual(bit_string(vals, lens),
                         "0" "10" "11" "1" "11" "0000000" "1" "1011110")

    def test_k_index_beyond_table_is_zero(self):
        krow = stages.k_table()[1].tolist()
        (ks,) = tlgfile._adaptive_k([np.full(6, 1273)], [1], stages.DEFAULT_GOLOMB_TABLE)
        # a reaches 16 * 1273 after a few values: idx > 1024 -> k = 0 (§11).
        self.assertEqual(ks[0], krow[0])
        self.assertEqual(ks[-1], 0)
        self.assertEqual(ks.tolist(), plain_adaptive_k([1273] * 6, 1, stages.DEFAULT_GOLOMB_TABLE))

    def test_vectorised_k_equals_plain_loop(self):
        rng = np.random.default_rng(9)
        slow = [(1, 1, (0, 0, 0, 0, 0, 0, 0, 0, 1024))] + [(1, 2, (1024,) + (0,) * 8)] * 7
        for table, span, limit in ((stages.DEFAULT_GOLOMB_TABLE, 256, 4),
                                   (stages.DEFAULT_GOLOMB_TABLE, 7, 4),
                                   (stages.DEFAULT_GOLOMB_TABLE, 16, 1),
                                   (slow, 32, 1), (slow, 5, 2)):
            ms, rows = [], []
            for _ in range(int(rng.integers(1, 30))):
                n = int(rng.choice([0, 1, 2, 50, 400, 3000]))
                scale = rng.choice([2, 40, 1300])
                ms.append(rng.integers(0, scale, n) * (rng.random(n) < rng.random()))
                rows.append(int(rng.integers(0, 8)))
            got = tlgfile._adaptive_k(ms, rows, table, span=span, lockstep_limit=limit)
            for m, r, k in zip(ms, rows, got):
                self.assertEqual(k.tolist(), plain_adaptive_k(m.tolist(), r, table),
                                 (span, limit, r, len(m)))

    def test_golomb_rows_round_trip(self):
        # A plain row then a run-length row of the same values, read straight on: the
        # second row must start exactly where the first one ends. Long rows take the
        # lockstep lanes, short ones the one-by-one path.
        rng = np.random.default_rng(5)
        table = stages.DEFAULT_GOLOMB_TABLE
        for trial in range(40):
            n = int(rng.choice([1, 2, 30, 400, 3000, 20000]))
            v = rng.integers(-300, 301, n) * (rng.random(n) < rng.random())
            fields = []
            for row in (0, 3):
                runlength = tlgfile._RUNLENGTH_ROW[row]
                m = tlgfile._magnitudes(v, runlength)
                (k,) = tlgfile._adaptive_k([m], [row], table)
                fields.append(tlgfile._row_fields(v, m, k, runlength))
            payload = tlgfile._pack(np.concatenate([f[0] for f in fields]),
                                    np.concatenate([f[1] for f in fields]))
            win = tlgfile._windows(payload + bytes(tlgfile.WINDOW_PAD))
            counts = [[n, 0, 0, n, 0, 0, 0, 0]]
            (rows,) = tlgfile._golomb_rows(win, [0], [8 * len(payload)], counts, table, 0)
            with self.subTest(trial=trial, n=n):
                np.testing.assert_array_equal(rows[0], v)
                np.testing.assert_array_equal(rows[3], v)
                self.assertTrue(all(len(rows[r]) == 0 for r in (1, 2, 4, 5, 6, 7)))


class Geometry(unittest.TestCase):
    def test_block_order_matches_block_grid(self):
        for width, height in ((1, 1), (75, 93), (8203, 12), (17, 161)):
            tiles = tlgfile._tiles(width, height, 8192, 80)
            blocks = tlgfile._chunk_blocks(tiles)
            origin = tiles[blocks[:, 0], :2] + blocks[:, 1:3]
            grid = block_grid(width, height)
            np.testing.assert_array_equal(origin, grid[:, 2:4])
            np.testing.assert_array_equal(blocks[:, 3:5], grid[:, 4:6])


class RoundTrip(unittest.TestCase):
    def check(self, samples, choices, **kw):
        data = encode_tlg8(samples, choices, **kw)
        out, ncomp, got = decode_tlg8(data)
        np.testing.assert_array_equal(out, samples)
        self.assertEqual(ncomp, samples.shape[2])
        np.testing.assert_array_equal(got, choices)
        return data

    def test_random_images_and_choices(self):
        rng = np.random.default_rng(20240601)
        sizes = [(1, 1), (1, 70), (90, 1), (2, 3), (8, 8), (9, 7), (16, 16), (70, 90),
                 (81, 33), (80, 64)]
        sizes += [tuple(rng.integers(1, [91, 71])) for _ in range(30)]
        for i, (height, width) in enumerate(sizes):
            ncomp = 3 + i % 2
            kind = ("smooth", "noise", "flat")[i % 3]
            if kind == "noise":
                samples = rng.integers(0, 256, (height, width, ncomp), dtype=np.uint8)
            elif kind == "flat":
                samples = np.full((height, width, ncomp), rng.integers(0, 256), np.uint8)
            else:
                y, x = np.mgrid[:height, :width]
                base = (x * 3 + y * 2)[..., None] + np.arange(ncomp) * 40
                samples = ((base + rng.integers(-3, 4, base.shape)) % 256).astype(np.uint8)
            if ncomp == 4:               # alpha: opaque, transparent, or varying
                samples[..., 0] = (255, 0, samples[..., 0])[i % 3 if i % 3 < 2 else 2]
            nblocks = len(block_grid(width, height))
            with self.subTest(size=(height, width), ncomp=ncomp, kind=kind):
                self.check(samples, random_choices(rng, nblocks, sticky=i % 2 == 0))

    def test_edge_block_reorder_stored_as_given(self):
        samples = np.random.default_rng(1).integers(0, 256, (13, 11, 3), dtype=np.uint8)
        choices = np.array([[1, 5, 6, 0, 1], [2, 7, 3, 1, 0], [3, 9, 7, 0, 0], [4, 11, 5, 1, 1]])
        self.check(samples, choices)

    def test_tile_column_boundary(self):
        rng = np.random.default_rng(2)
        samples = rng.integers(0, 256, (3, 8203, 4), dtype=np.uint8)
        self.check(samples, random_choices(rng, len(block_grid(8203, 3)), sticky=True))

    def test_custom_tile_sizes(self):
        rng = np.random.default_rng(4)
        samples = rng.integers(0, 256, (29, 23, 3), dtype=np.uint8)
        for tile in ((1, 1), (13, 7), (8, 8), (16, 24), (5, 100)):
            tiles = tlgfile._tiles(23, 29, *tile)
            nblocks = sum(len(tlgfile._tile_blocks(tw, th)) for tw, th in tiles[:, 2:].tolist())
            with self.subTest(tile=tile):
                data = self.check(samples, random_choices(rng, nblocks), tile_size=tile)
                self.assertEqual((read_header(data)["tile_w"], read_header(data)["tile_h"]),
                                 tile)

    def test_custom_golomb_table(self):
        table = [(16, 1, (0, 0, 0, 0, 0, 0, 0, 0, 1024))] + list(stages.DEFAULT_GOLOMB_TABLE[1:])
        table[7] = (1, 16, (1024, 0, 0, 0, 0, 0, 0, 0, 0))
        rng = np.random.default_rng(6)
        samples = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        choices = random_choices(rng, 9)
        data = self.check(samples, choices, golomb_table=table)
        self.assertEqual(read_header(data)["golomb_table"], tuple(table))
        self.assertNotEqual(data, encode_tlg8(samples, choices))

    def test_large_k_index(self):
        # R and G swap between 0 and 255 pixel to pixel: predictor 4 (left) and filter
        # primary 3 give |F1| = 637, so the row state reaches idx > 1024 (k = 0, §11).
        samples = np.zeros((8, 64, 3), np.uint8)
        samples[:, 0::2, 0] = 255
        samples[:, 1::2, 1] = 255
        choices = np.tile([4, 12, 0, 0, 0], (8, 1))       # filter 12: perm 0, primary 3
        res = stages.color_filter(np.array([[[255] * 4, [-255] * 4, [0] * 4]]), 12)
        self.assertEqual(res[0, 1, 0], -637)
        self.check(samples, choices)
        self.check(samples, np.tile([4, 12, 0, 1, 1], (8, 1)))

    def test_bad_encoder_input(self):
        samples = np.zeros((8, 8, 3), np.uint8)
        for bad in ([[8, 0, 0, 0, 0]], [[0, 96, 0, 0, 0]], [[0, 0, 0, 2, 0]],
                    [[0, 0, 0, 0, -1]], [[0, 0, 0, 0, 0]] * 2, [[0.0, 0, 0, 0, 0]]):
            with self.assertRaises(ValueError):
                encode_tlg8(samples, bad)
        with self.assertRaises(ValueError):
            encode_tlg8(np.zeros((8, 8, 2), np.uint8), [[0] * 5])
        with self.assertRaises(ValueError):
            encode_tlg8(samples.astype(np.int16), [[0] * 5])
        with self.assertRaises(ValueError):
            encode_tlg8(samples, [[0] * 5], golomb_table=[(0, 1, (1024,) + (0,) * 8)] * 8)


class HeaderVariants(unittest.TestCase):
    """What the decoder accepts besides the encoder's own output (§3.4)."""

    def setUp(self):
        rng = np.random.default_rng(7)
        self.samples = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
        self.choices = random_choices(rng, 4)
        self.data = encode_tlg8(self.samples, self.choices)

    def assert_decodes(self, data):
        out, _, choices = decode_tlg8(data)
        np.testing.assert_array_equal(out, self.samples)
        np.testing.assert_array_equal(choices, self.choices)

    def test_sds_wrapper(self):
        self.assert_decodes(tlgfile.SDS_MAGIC + b"\x12\x34\x56\x78" + self.data)

    def test_trailing_bytes(self):
        self.assert_decodes(self.data + b"\xff" * 37)

    def test_other_flag_bits_and_reserved_byte(self):
        data = bytearray(self.data)
        data[12] |= 0xF0
        data[16] = 0x55
        self.assert_decodes(bytes(data))

    def test_no_stored_table(self):
        data = self.data[:12] + b"\x00\x00\x00\x00" + self.data[16:49] + self.data[225:]
        self.assertFalse(read_header(data)["table_stored"])
        self.assert_decodes(data)

    def test_error_class(self):
        self.assertTrue(issubclass(Tlg8FormatError, Tlg8Error))


class SharedReferenceFiles(unittest.TestCase):
    """read_tlg8 on the reference encoder's files gives the source images (the parity test
    also checks the choices, from bytes)."""

    def test_reference_files_from_path(self):
        require_shared("data/images", "data/tlgconv")
        names = sorted(f[:-5] for f in os.listdir(TLGCONV) if f.endswith(".tlg8")
                       and os.path.getsize(os.path.join(TLGCONV, f)) < 60000
                       and os.path.exists(os.path.join(IMAGES, f[:-5] + ".bmp")))
        self.assertIn("dko_sss", names)
        for name in names:
            with self.subTest(name=name):
                samples, ncomp = read_image(os.path.join(IMAGES, name + ".bmp"))
                out, got_ncomp, _ = read_tlg8(os.path.join(TLGCONV, name + ".tlg8"))
                self.assertEqual(got_ncomp, ncomp)
                np.testing.assert_array_equal(out, samples)


if __name__ == "__main__":
    unittest.main()
