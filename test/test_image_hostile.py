"""tlg8.image.read_image on hostile and unusual input: every PNG type converted exactly as
spec §1.1 says (16 bits -> the high byte), everything else refused with ImageError naming the
file and the reason, sizes checked from the header before any pixel is decoded.

The PNGs are built here byte by byte (Pillow cannot write most of these types), and the
expected pixels are computed from the raw samples with libpng's rules, independently of
tlg8.image. Every case is small and must finish within a few seconds.
"""
import contextlib
import io
import os
import shutil
import struct
import tempfile
import time
import unittest
import zlib

import numpy as np
from PIL import Image

from tlg8 import dump, image
from tlg8.image import ImageError, read_image

SECONDS = 5                  # bound of every single case


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width, height, ctype, depth, rows=(), extra=b"", idat=None):
    """A PNG with filter type 0 on every row; `rows` are the packed rows, `idat` replaces
    the compressed data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"".join(b"\0" + r for r in rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def pack_rows(raw, depth):
    """raw (H, W * samples) ints -> PNG rows (big-endian, sub-byte samples packed)."""
    if depth == 16:
        return [r.astype(">u2").tobytes() for r in raw]
    if depth == 8:
        return [r.astype(np.uint8).tobytes() for r in raw]
    bits = np.unpackbits(raw.astype(np.uint8)[..., None], axis=-1)[..., 8 - depth:]
    return [np.packbits(r.ravel()).tobytes() for r in bits]


SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def expected_argb(ctype, depth, raw, palette=None, trns=None):
    """What libpng gives the reference (strip_16, expand, tRNS to alpha, filler 255), as
    A, R, G, B; raw is (H, W, samples)."""
    def eight(v):
        if depth == 16:
            return v >> 8
        return v * 255 // ((1 << depth) - 1) if ctype != 3 else v
    h, w, _ = raw.shape
    a = np.full((h, w), 255)
    if ctype == 3:
        rgb = palette[raw[..., 0]]
        if trns is not None:
            table = np.full(256, 255)
            table[:len(trns)] = trns
            a = table[raw[..., 0]]
    elif ctype in (0, 4):
        rgb = np.repeat(eight(raw[..., :1]), 3, axis=2)
        if ctype == 4:
            a = eight(raw[..., 1])
    else:
        rgb = eight(raw[..., :3])
        if ctype == 6:
            a = eight(raw[..., 3])
    if trns is not None and ctype in (0, 2):
        a = np.where((raw == np.array(trns)).all(axis=2), 0, 255)
    return np.concatenate([a[..., None], rgb], axis=2).astype(np.uint8)


def bmp_bytes(width, height, bpp=24, pixels=None, offset=54, header_size=40, compression=0):
    stride = width * 4 if bpp == 32 else (abs(width) * 3 + 3) & ~3
    if pixels is None:
        pixels = bytes(max(stride, 0) * abs(height))
    head = (b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
            + struct.pack("<IiiHHIIiiII", header_size, width, height, 1, bpp, compression,
                          len(pixels), 0, 0, 0, 0))
    return head + bytes(max(offset - len(head), 0)) + pixels


class Case(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_image_hostile_")
        self.addCleanup(shutil.rmtree, self.tmp)
        self.started = time.perf_counter()

    def tearDown(self):
        self.assertLess(time.perf_counter() - self.started, SECONDS)

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def refused(self, data, *fragments, name="bad.png", **kw):
        path = self.write(name, data)
        with self.assertRaises(ImageError) as cm:
            read_image(path, **kw)
        message = str(cm.exception)
        self.assertIn(path, message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class PngTypesTest(Case):
    """Every colour type and bit depth PNG allows, with and without tRNS (exact values)."""

    def check(self, ctype, depth, trns, rng):
        h, w = 5, 7
        raw = rng.integers(0, 1 << depth, (h, w, SAMPLES[ctype]))
        extra, palette, key = b"", None, None
        if ctype == 3:
            entries = 1 << depth if depth < 8 else 200
            raw %= entries
            palette = rng.integers(0, 256, (entries, 3))
            extra = chunk(b"PLTE", palette.astype(np.uint8).tobytes())
            if trns:
                key = rng.integers(0, 256, min(entries, 3))
                extra += chunk(b"tRNS", key.astype(np.uint8).tobytes())
        elif trns:
            key = raw[1, 2]                  # a colour that occurs: some pixels get A = 0
            extra = chunk(b"tRNS", key.astype(">u2").tobytes())
        path = self.write(f"t{ctype}_{depth}.png", png_bytes(
            w, h, ctype, depth, pack_rows(raw.reshape(h, -1), depth), extra))
        if trns and ctype == 2 and depth == 16:
            with self.assertRaisesRegex(ImageError, "16-bit RGB PNG with a transparent"):
                read_image(path)
            return
        samples, ncomp = read_image(path, "A8R8G8B8")
        want = expected_argb(ctype, depth, raw, palette, key)
        np.testing.assert_array_equal(samples, want, err_msg=f"type {ctype} depth {depth}")
        self.assertEqual(ncomp, 4)
        auto, c = read_image(path)
        self.assertEqual(c, 4 if (want[..., 0] != 255).any() else 3)
        np.testing.assert_array_equal(auto, want if c == 4 else want[..., 1:])

    def test_every_type_and_depth(self):
        rng = np.random.default_rng(1)
        for ctype, depths in ((0, (1, 2, 4, 8, 16)), (2, (8, 16)), (3, (1, 2, 4, 8)),
                              (4, (8, 16)), (6, (8, 16))):
            for depth in depths:
                for trns in (False, True) if ctype in (0, 2, 3) else (False,):
                    with self.subTest(ctype=ctype, depth=depth, trns=trns):
                        self.check(ctype, depth, trns, rng)

    def test_16_bit_grey_is_the_high_byte_not_white(self):
        # Pillow's "I;16" converted with convert("RGBA") clips every value to 255.
        raw = np.array([[0x0000, 0x00FF, 0x0100, 0x7F80, 0xFFFF]])
        path = self.write("g16.png", png_bytes(5, 1, 0, 16, pack_rows(raw, 16)))
        samples, ncomp = read_image(path)
        self.assertEqual(ncomp, 3)
        np.testing.assert_array_equal(samples[0, :, 0], [0, 0, 1, 0x7F, 0xFF])

    def test_pillow_modes_that_are_not_expected_are_refused_by_name(self):
        for mode, ctype, depth in (("I;16B", 0, 16), ("F", 0, 16), ("CMYK", 2, 8),
                                   ("YCbCr", 2, 8), ("L", 6, 8), ("RGB", 0, 8)):
            with self.subTest(mode=mode):
                with self.assertRaisesRegex(ImageError, f"x.png: .*mode '{mode}'"):
                    image._png_rgba("x.png", Image.new(mode, (2, 2)), ctype, depth, None, None)

    def test_other_formats_are_refused(self):
        for mode, fmt in (("CMYK", "JPEG"), ("YCbCr", "JPEG"), ("F", "TIFF"), ("I;16", "TIFF"),
                          ("RGB", "GIF"), ("RGBA", "WEBP")):
            with self.subTest(mode=mode, fmt=fmt):
                buf = io.BytesIO()
                try:
                    Image.new(mode, (4, 4)).save(buf, fmt)
                except (OSError, KeyError, ValueError):
                    continue                  # this Pillow cannot write it
                self.refused(buf.getvalue(), "not a BMP or PNG", name=f"x.{fmt.lower()}")


class PngHostileTest(Case):
    def test_huge_declared_size_is_refused_from_the_header(self):
        # ~100 bytes claiming 100000 x 100000: today Pillow raises DecompressionBombError.
        data = png_bytes(100000, 100000, 2, 8, idat=zlib.compress(b"\0" * 64))
        self.assertLess(len(data), 120)
        self.refused(data, "100000 x 100000", "max_pixels")

    def test_pillows_bomb_error_is_reported(self):
        data = png_bytes(100000, 100000, 2, 8, idat=zlib.compress(b"\0" * 64))
        self.refused(data, "decompression bomb", max_pixels=1 << 40)

    def test_max_pixels_is_a_parameter(self):
        raw = np.zeros((40, 40 * 3), int)
        path = self.write("p.png", png_bytes(40, 40, 2, 8, pack_rows(raw, 8)))
        with self.assertRaisesRegex(ImageError, "1600 pixels, more than the limit of 1000"):
            read_image(path, max_pixels=1000)
        self.assertEqual(read_image(path, max_pixels=1600)[0].shape, (40, 40, 3))

    def test_zero_size(self):
        self.refused(png_bytes(0, 5, 2, 8, [b""] * 5), "zero width or height")

    def test_truncated_everywhere(self):
        raw = np.arange(8 * 24).reshape(8, 24) % 256
        data = png_bytes(8, 8, 2, 8, pack_rows(raw, 8))
        for cut in range(0, len(data) - 1, 3):
            with self.subTest(cut=cut):
                self.refused(data[:cut], name=f"cut{cut}.png")

    def test_bad_crc(self):
        raw = np.arange(8 * 24).reshape(8, 24) % 256
        data = bytearray(png_bytes(8, 8, 2, 8, pack_rows(raw, 8)))
        at = data.index(b"IDAT") + 10
        data[at] ^= 0x40
        self.refused(bytes(data), "'IDAT' has a bad CRC")

    def test_corrupt_or_short_image_data(self):
        self.refused(png_bytes(8, 8, 2, 8, idat=b"not zlib data"), "cannot decode PNG")
        self.refused(png_bytes(8, 8, 2, 8, idat=zlib.compress(b"\0" * 10)), "cannot decode PNG")

    def test_structure(self):
        ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        sig = b"\x89PNG\r\n\x1a\n"
        self.refused(sig + ihdr + chunk(b"IEND", b""), "no IDAT")
        self.refused(sig + chunk(b"tEXt", b"a\0b") + ihdr, "does not start with an IHDR")
        self.refused(sig + ihdr[:8] + b"\xff" * 4, "truncated PNG")
        huge = struct.pack(">I", 0xFFFFFFF0) + b"tEXt"
        self.refused(sig + ihdr + huge, "invalid length")
        self.refused(sig + ihdr + struct.pack(">I", 5000) + b"PLTE" + bytes(5000), "'PLTE'")
        self.refused(png_bytes(2, 2, 2, 4, [b"\0"] * 2), "colour type 2 with bit depth 4")
        self.refused(png_bytes(2, 2, 7, 8, [b"\0"] * 2), "colour type 7")

    def test_palette_and_trns_errors(self):
        rows = pack_rows(np.array([[0, 5]]), 8)
        plte = chunk(b"PLTE", bytes(range(12)))                  # 4 entries
        self.refused(png_bytes(2, 1, 3, 8, rows), "without a valid PLTE")
        self.refused(png_bytes(2, 1, 3, 8, rows, plte), "palette entry 5 of a palette with 4")
        self.refused(png_bytes(2, 1, 3, 8, pack_rows(np.array([[0, 1]]), 8),
                               plte + chunk(b"tRNS", bytes(5))), "5 entries for a palette of 4")
        self.refused(png_bytes(2, 1, 0, 4, pack_rows(np.array([[0, 1]]), 4),
                               chunk(b"tRNS", struct.pack(">H", 16))), "does not fit 4 bits")
        self.refused(png_bytes(1, 1, 6, 8, [bytes(4)], chunk(b"tRNS", bytes(6))),
                     "invalid tRNS")


class BmpTest(Case):
    def test_24_and_32_bit_exact(self):
        rng = np.random.default_rng(2)
        for bpp, width, height in ((24, 5, 3), (24, 5, -3), (32, 3, 4), (32, 3, -4)):
            with self.subTest(bpp=bpp, height=height):
                nchan = bpp // 8
                stride = width * 4 if bpp == 32 else (width * 3 + 3) & ~3
                rows = abs(height)
                data = rng.integers(0, 256, (rows, stride), np.uint8)
                px = data[:, :width * nchan].reshape(rows, width, nchan)
                if height > 0:
                    px = px[::-1]
                path = self.write("b.bmp", bmp_bytes(width, height, bpp, data.tobytes()))
                samples, ncomp = read_image(path, "A8R8G8B8")
                alpha = px[..., 3] if bpp == 32 else np.full(px.shape[:2], 255, np.uint8)
                want = np.stack([alpha, px[..., 2], px[..., 1], px[..., 0]], axis=2)
                np.testing.assert_array_equal(samples, want)
                np.testing.assert_array_equal(read_image(path, "R8G8B8")[0], want[..., 1:])

    def test_hostile_headers(self):
        self.refused(b"BM" + bytes(20), "truncated BMP header", name="h.bmp")
        self.refused(bmp_bytes(100000, 100000, pixels=b""), "100000 x 100000", "max_pixels",
                     name="bomb.bmp")
        self.refused(bmp_bytes(-4, 4), "negative width", name="neg.bmp")
        self.refused(bmp_bytes(0, 4), "zero width or height", name="zw.bmp")
        self.refused(bmp_bytes(4, 0), "zero width or height", name="zh.bmp")
        self.refused(bmp_bytes(4, 4)[:-1], "truncated BMP pixel data", name="short.bmp")
        self.refused(bmp_bytes(4, 4, offset=20), "points into the headers", name="o1.bmp")
        self.refused(bmp_bytes(4, 4, offset=54)[:54] + bytes(10), "truncated", name="o2.bmp")
        data = bytearray(bmp_bytes(4, 4))
        data[10:14] = struct.pack("<I", 1 << 30)                  # offset past the end
        self.refused(bytes(data), "truncated BMP pixel data", name="o3.bmp")
        self.refused(bmp_bytes(4, 4, header_size=12), "header of 12 bytes", name="core.bmp")
        self.refused(bmp_bytes(4, 4, bpp=16), "16 bits per pixel", name="b16.bmp")
        self.refused(bmp_bytes(4, 4, bpp=32, compression=3), "compression 3", name="bf.bmp")
        self.refused(bmp_bytes(4, -(1 << 31), pixels=b""), "max_pixels", name="minint.bmp")

    def test_not_images(self):
        self.refused(b"", "not a BMP or PNG", name="empty.png")
        self.refused(b"GIF89a" + bytes(50), "not a BMP or PNG", name="x.gif")
        self.refused(b"hello\n", "not a BMP or PNG", name="text.bmp")
        with self.assertRaisesRegex(ImageError, "cannot open"):
            read_image(os.path.join(self.tmp, "missing.png"))
        with self.assertRaisesRegex(ImageError, "cannot"):
            read_image(self.tmp)                                   # a directory


class MutationTest(Case):
    def test_mutated_files_give_image_error_or_an_image(self):
        # Byte flips and truncations of valid files: read_image either returns an image
        # or raises ImageError, nothing else.
        rng = np.random.default_rng(3)
        raw = rng.integers(0, 256, (6, 6 * 4))
        seeds = [png_bytes(6, 6, 6, 8, pack_rows(raw, 8)),
                 png_bytes(6, 6, 3, 4, pack_rows(raw[:, :6] % 16, 4),
                           chunk(b"PLTE", bytes(48)) + chunk(b"tRNS", bytes(3))),
                 bmp_bytes(6, 6, 24, bytes(rng.integers(0, 256, 6 * 20, np.uint8))),
                 bmp_bytes(6, -6, 32, bytes(rng.integers(0, 256, 6 * 24, np.uint8)))]
        path = os.path.join(self.tmp, "m.img")
        for i in range(400):
            data = bytearray(seeds[i % len(seeds)])
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            if rng.random() < 0.3:
                data = data[:int(rng.integers(len(data)))]
            with open(path, "wb") as f:
                f.write(data)
            try:
                samples, ncomp = read_image(path)
            except ImageError as e:
                self.assertIn(path, str(e))
            else:
                self.assertEqual(samples.shape[2], ncomp)


class MultiImageCallerTest(Case):
    def test_dump_goes_on_after_a_bomb(self):
        bomb = self.write("bomb.png", png_bytes(100000, 100000, 2, 8,
                                                idat=zlib.compress(b"\0" * 64)))
        good = self.write("good.png", png_bytes(8, 8, 2, 8, [bytes(24)] * 8))
        out = os.path.join(self.tmp, "out.jsonl")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = dump.main([bomb, good, "--out", out, "--quiet"])
        self.assertEqual(status, 1)
        self.assertIn("bomb.png: image is 100000 x 100000", err.getvalue())
        self.assertNotIn("Traceback", err.getvalue())
        with open(out) as f:
            self.assertEqual(len(f.read().splitlines()), 1)


if __name__ == "__main__":
    unittest.main()
