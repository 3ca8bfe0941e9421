"""The decoder on bad input: every error of spec §8.6, absurd sizes, and a mutation fuzz.

Each case must raise Tlg8FormatError (never another exception, a hang or a huge
allocation); the fuzz accepts either that error or a decode of the header's shape.
"""
import os
import random
import tempfile
import unittest

import numpy as np

from tlg8 import tlgfile
from tlg8.image import block_grid
from tlg8.tlgfile import CHOICE_LIMITS, Tlg8FormatError, decode_tlg8, encode_tlg8, read_tlg8


def bits_to_bytes(bits):
    """'0'/'1' string in stream order -> bytes (LSB first), padded to a multiple of 4."""
    bits = bits.replace(" ", "")
    bits += "0" * (-len(bits) % 32)
    return bytes(int(bits[i:i + 8][::-1], 2) for i in range(0, len(bits), 8))


def with_u64(data, offset, value):
    return data[:offset] + value.to_bytes(8, "little") + data[offset + 8:]


def replace_payload(data, payload, offset=225):
    """The first tile's payload replaced (single-tile files)."""
    return data[:offset] + len(payload).to_bytes(4, "little") + payload


def header_1x1(ncomp=3):
    samples = np.full((1, 1, ncomp), 7, np.uint8)
    return encode_tlg8(samples, [[0, 0, 0, 0, 0]])[:225]


class MalformedFiles(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(11)
        self.samples = rng.integers(0, 256, (90, 21, 4), dtype=np.uint8)
        nblocks = len(block_grid(21, 90))
        self.choices = np.stack([rng.integers(0, n, nblocks) for n in CHOICE_LIMITS], axis=1)
        self.data = encode_tlg8(self.samples, self.choices)
        self.vector = encode_tlg8(np.array([[[89, 113, 118]]], np.uint8), [[0, 30, 0, 1, 0]])

    def assert_bad(self, data, fragment=""):
        with self.assertRaises(Tlg8FormatError) as ctx:
            decode_tlg8(data)
        self.assertIn(fragment, str(ctx.exception))

    def test_every_truncation(self):
        for n in range(len(self.data)):
            with self.subTest(length=n):
                self.assert_bad(self.data[:n])

    def test_magic_and_version(self):
        self.assert_bad(b"", "magic")
        self.assert_bad(b"TLG5.0\x00raw\x1a" + self.data[11:], "magic")
        self.assert_bad(b"TLG8.1" + self.data[6:], "magic")
        self.assert_bad(tlgfile.SDS_MAGIC + b"\0\0\0\0" + b"TLG7.0\x00raw\x1a" + self.data[11:],
                        "magic")
        self.assert_bad(self.data[:30], "truncated header")

    def test_component_count(self):
        for ncomp in (0, 1, 2, 5, 255):
            self.assert_bad(self.data[:11] + bytes([ncomp]) + self.data[12:], "component")

    def test_sizes_out_of_range(self):
        for offset, name in ((17, "tile width"), (25, "tile height"), (33, "width"),
                             (41, "height")):
            for value in (0, 1 << 32, (1 << 64) - 1):
                with self.subTest(field=name, value=value):
                    self.assert_bad(with_u64(self.data, offset, value), name)

    def test_table_flag_and_length(self):
        self.assert_bad(self.data[:13] + (175).to_bytes(3, "little") + self.data[16:],
                        "table length")
        self.assert_bad(self.data[:12] + b"\x00" + self.data[13:], "table length")

    def test_table_values(self):
        table = bytearray(self.data[49:225])
        for pos, value, why in ((0, 0, "ratio"), (2, 17, "ratio"), (4, 2, "1024")):
            bad = bytearray(table)
            bad[pos:pos + 2] = value.to_bytes(2, "little")
            self.assert_bad(self.data[:49] + bytes(bad) + self.data[225:], why)

    def test_mode_3(self):
        payload = bytearray(self.vector[229:])
        payload[0] |= 3
        self.assert_bad(replace_payload(self.vector, bytes(payload)), "mode 3")

    def test_choice_values_out_of_range(self):
        # 1 x 1 vector: p at bits 10-13, f at 14-20, e at 25-26 (file spec §10.1).
        for byte, mask, what in ((1, 0x20, "predictor"), (2, 0x18, "filter"),
                                 (3, 0x04, "entropy")):
            payload = bytearray(self.vector[229:])
            payload[byte] |= mask
            with self.subTest(stream=what):
                self.assert_bad(replace_payload(self.vector, bytes(payload)), what)

    def test_side_information_runs(self):
        head = header_1x1()
        raw_rest = "0000" "0000000" "0000" "00" "00"
        # predictor stream in RunLength mode: varuint of 5 groups all with bit 7 set.
        varuint = "01" + "00" * 4 + "0000" + "11111111" * 5
        self.assert_bad(replace_payload(head, bits_to_bytes(varuint + "0" * 64)), "varuint")
        # a run of 2 with a single block
        run = "01" + "00" * 4 + "0000" + "10000000" + raw_rest[4:]
        self.assert_bad(replace_payload(head, bits_to_bytes(run + "1" * 64)), "goes past")

    def test_golomb_rows(self):
        side = self.vector[229:233]             # the 1 x 1 vector's side information
        self.assert_bad(replace_payload(self.vector, side), "past the end")
        self.assert_bad(replace_payload(self.vector, side + bytes(8)), "gamma")
        self.assert_bad(replace_payload(self.vector, side + b"\x01"), "past the end")
        # run-length row 7 (e = 1, i = 1) holds 3 values; flag 0 then a zero run of 5.
        head = header_1x1()
        side_rl = "00" * 5 + "0000" "0000000" "0000" "10" "10"
        self.assert_bad(replace_payload(head, bits_to_bytes(side_rl + "000" + "0" + "11" "011")),
                        "goes past")

    def test_first_broken_tile_is_named(self):
        # Tile 0 breaks in its last row, tile 1 in its first: the NumPy decoder finds
        # tile 1's error in an earlier round, but must report tile 0's, as a decoder
        # going through the tiles in order (the compiled one) does.
        data = bytearray(self.data)
        (s0, l0), (s1, _) = tlgfile.tile_records(self.data)
        data[s0 + l0 - 12:s0 + l0 - 4] = bytes(8)
        data[s1 + 60:s1 + 68] = bytes(8)
        for compiled in (False, None):
            with self.subTest(compiled=compiled), self.assertRaises(Tlg8FormatError) as ctx:
                decode_tlg8(bytes(data), compiled=compiled)
            self.assertTrue(str(ctx.exception).startswith("tile 0: Golomb row"),
                            str(ctx.exception))

    def test_payload_length_beyond_file(self):
        self.assert_bad(self.vector[:225] + b"\xff\xff\xff\xff" + self.vector[229:], "truncated")

    def test_absurd_dimensions_fail_fast(self):
        huge = (1 << 32) - 1
        cases = [
            with_u64(with_u64(self.data, 33, huge), 41, huge),          # 2^64 pixels
            with_u64(with_u64(self.data, 33, 8192 * 100), 41, 80),      # 100 tiles, one record
            with_u64(with_u64(with_u64(with_u64(self.data, 17, 1), 25, 1), 33, 1000), 41, 1000),
            with_u64(with_u64(with_u64(self.data, 17, huge), 33, 100000), 41, 1),  # long tile
            with_u64(with_u64(self.data, 25, huge), 41, 60000),         # tall tile
            with_u64(with_u64(with_u64(with_u64(self.data, 17, huge), 25, huge), 33, 3000),
                     41, 3000),                                         # one 9 M pixel tile
        ]
        for i, data in enumerate(cases):
            with self.subTest(case=i):
                self.assert_bad(data)

    def test_tile_count_limit(self):
        # 1 x 1 tiles over 300 x 300 pixels: 90 000 tiles; the records are all there.
        data = with_u64(with_u64(with_u64(with_u64(self.data, 17, 1), 25, 1), 33, 300), 41, 300)
        self.assert_bad(data[:225] + b"\x01\x00\x00\x00\x00" * 90000, "limit of 65536 tiles")

    def test_pixel_limit_parameter(self):
        with self.assertRaises(Tlg8FormatError):
            decode_tlg8(self.data, max_pixels=21 * 90 - 1)
        out, _, _ = decode_tlg8(self.data, max_pixels=21 * 90)
        np.testing.assert_array_equal(out, self.samples)


class CountingFile:
    """A file that counts the bytes read from it."""

    def __init__(self, path, mode):
        self.file = open(path, mode)
        self.bytes_read = 0

    def read(self, n=-1):
        data = self.file.read(n)
        self.bytes_read += len(data)
        return data

    def seek(self, *args):
        return self.file.seek(*args)

    def fileno(self):
        return self.file.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


class ReadFromPath(unittest.TestCase):
    """read_tlg8 checks the header and the record lengths before reading the rest."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        rng = np.random.default_rng(13)
        self.samples = rng.integers(0, 256, (90, 21, 3), dtype=np.uint8)
        nblocks = len(block_grid(21, 90))
        self.choices = np.stack([rng.integers(0, n, nblocks) for n in CHOICE_LIMITS], axis=1)
        self.data = encode_tlg8(self.samples, self.choices)       # two tiles (rows 0-79, 80-89)
        self.opened = []
        tlgfile.open = self.counting_open
        self.addCleanup(delattr, tlgfile, "open")

    def counting_open(self, path, mode="r"):
        f = CountingFile(path, mode)
        self.opened.append(f)
        return f

    def bytes_read(self):
        return sum(f.bytes_read for f in self.opened)

    def write(self, data, size=None):
        """A file holding data, made `size` bytes long by a sparse zero tail."""
        path = os.path.join(self.dir.name, "f.tlg8")
        with open(path, "wb") as f:
            f.write(data)
            if size is not None:
                f.truncate(size)
        return path

    def assert_bad(self, path, fragment):
        with self.assertRaises(Tlg8FormatError) as ctx:
            read_tlg8(path)
        self.assertIn(fragment, str(ctx.exception))

    def test_decodes_like_bytes(self):
        out, ncomp, choices = read_tlg8(self.write(self.data))
        np.testing.assert_array_equal(out, self.samples)
        np.testing.assert_array_equal(choices, self.choices)
        self.assertEqual(ncomp, 3)
        # The whole file once, plus the two records' lengths read ahead.
        self.assertEqual(self.bytes_read(), len(self.data) + 2 * 4)

    def test_large_file_that_is_not_tlg8(self):
        path = self.write(b"GIF89a" + bytes(500), size=2 << 30)          # 2 GiB, sparse
        self.assert_bad(path, "magic")
        self.assertLessEqual(self.bytes_read(), tlgfile.LONGEST_HEADER)

    def test_trailing_data_is_not_read(self):
        out, _, _ = read_tlg8(self.write(self.data, size=1 << 30))
        np.testing.assert_array_equal(out, self.samples)
        self.assertEqual(self.bytes_read(), len(self.data) + 2 * 4)

    def test_header_declaring_a_huge_image(self):
        huge = (1 << 32) - 1
        self.assert_bad(self.write(with_u64(with_u64(self.data, 33, huge), 41, huge)),
                        "exceeds the decoder's limit")
        # Within the limits, but the records of 1 x 1 tiles cannot all be in the file.
        self.assert_bad(self.write(with_u64(with_u64(self.data, 17, 1), 25, 1)), "cannot fit")
        self.assertLessEqual(self.bytes_read(), 2 * tlgfile.LONGEST_HEADER)

    def test_record_longer_than_the_file(self):
        data = self.data[:225] + b"\xff\xff\xff\xff" + self.data[229:]
        self.assert_bad(self.write(data, size=1 << 30), "truncated")
        self.assertLessEqual(self.bytes_read(), tlgfile.LONGEST_HEADER + 4)

    def test_truncated_files(self):
        for n in (0, 10, 48, 100, 224, 226, 229, 240, len(self.data) // 2, len(self.data) - 1):
            with self.subTest(length=n):
                self.assert_bad(self.write(self.data[:n]), "")


def fuzz_bases():
    """Valid files covering C = 3 and 4, all stream modes, both row codes, several tiles,
    a custom tile size and no stored table."""
    rng = np.random.default_rng(99)
    bases = []
    for height, width, ncomp, sticky in ((1, 1, 3, False), (8, 8, 3, True), (30, 20, 4, True),
                                         (90, 17, 3, False), (12, 40, 4, True)):
        y, x = np.mgrid[:height, :width]
        samples = ((x * 5 + y * 3)[..., None] + np.arange(ncomp) * 60
                   + rng.integers(0, 3, (height, width, ncomp))).astype(np.uint8)
        nblocks = len(block_grid(width, height))
        choices = np.stack([rng.integers(0, n, nblocks) for n in CHOICE_LIMITS], axis=1)
        if sticky:
            choices[:] = choices[0]
            choices[nblocks // 2:, 3:] = 1
        bases.append(encode_tlg8(samples, choices))
    samples = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    bases.append(encode_tlg8(samples, np.zeros((6, 5), np.int64), tile_size=(5, 6)))
    data = bases[2]
    bases.append(data[:12] + b"\x00\x00\x00\x00" + data[16:49] + data[225:])
    return bases


def mutate(data, rnd):
    data = bytearray(data)
    kind = rnd.randrange(7)
    if kind == 0:                                   # flip bits
        for _ in range(rnd.randint(1, 4)):
            pos = rnd.randrange(len(data))
            data[pos] ^= 1 << rnd.randrange(8)
    elif kind == 1:                                 # overwrite bytes
        for _ in range(rnd.randint(1, 3)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
    elif kind == 2:                                 # truncate
        del data[rnd.randrange(len(data)):]
    elif kind == 3:                                 # insert or delete inside
        pos = rnd.randrange(len(data))
        if rnd.random() < 0.5:
            del data[pos:pos + rnd.randint(1, 8)]
        else:
            data[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
    elif kind == 4:                                 # a header size field
        offset = rnd.choice((17, 25, 33, 41))
        value = rnd.choice((0, 1, 2, 7, 8, 9, 79, 81, 8191, 8193, 1 << 20, (1 << 32) - 1,
                            rnd.randrange(1 << 64)))
        data[offset:offset + 8] = value.to_bytes(8, "little")
    elif kind == 5:                                 # the payload start: side information
        start = 229 if data[12] & 1 else 53
        for _ in range(rnd.randint(1, 3)):
            pos = start + rnd.randrange(8)
            if pos < len(data):
                data[pos] = rnd.randrange(256)
    else:                                           # a tile length
        start = 225 if data[12] & 1 else 49
        if start + 4 <= len(data):
            length = int.from_bytes(data[start:start + 4], "little")
            length = max(0, length + rnd.choice((-4, -1, 1, 4, 1 << 20)))
            data[start:start + 4] = length.to_bytes(4, "little")[:4] if length < 1 << 32 \
                else b"\xff\xff\xff\xff"
    return bytes(data)


class Fuzz(unittest.TestCase):
    ITERATIONS = 3000

    def test_mutated_files(self):
        rnd = random.Random(12345)
        bases = fuzz_bases()
        outcomes = {"error": 0, "decoded": 0}
        for i in range(self.ITERATIONS):
            data = mutate(rnd.choice(bases), rnd)
            try:
                samples, ncomp, choices = decode_tlg8(data)
            except Tlg8FormatError:
                outcomes["error"] += 1
                continue
            except Exception as e:          # anything else is a decoder bug
                self.fail(f"iteration {i}: {type(e).__name__}: {e}; input {data.hex()}")
            hdr = tlgfile.read_header(data)
            self.assertEqual(samples.shape, (hdr["height"], hdr["width"], hdr["ncomp"]))
            self.assertEqual(choices.shape[1], 5)
            outcomes["decoded"] += 1
        # The mutations must exercise both outcomes, or the test proves little.
        self.assertGreater(outcomes["error"], self.ITERATIONS // 4)
        self.assertGreater(outcomes["decoded"], self.ITERATIONS // 50)


if __name__ == "__main__":
    unittest.main()
