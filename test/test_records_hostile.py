"""tlg8.records on hostile dumps: lines without newlines, gzip bombs, deep nesting, huge
numbers and names, floods of blank or bad lines, damaged gzip streams and cache entries.

Every case gets a problem naming the file (and line) and the reason, or a DataError under
strict checking; memory stays bounded (measured with tracemalloc, which sees the reader
thread too) and every case finishes within a few seconds. Sizes are small enough for CI; the
long version is bench/fuzz_records.py.
"""
import gzip
import os
import re
import time
import tracemalloc
import unittest
import zlib
from unittest import mock

import numpy as np

from tlg8 import records
from test_records import TempDir, line, make_record

SECONDS = 10                 # bound of every single case


def kinds(problems):
    return [p[2] for p in problems]


class Bounded(TempDir):
    def setUp(self):
        super().setUp()
        self.started = time.perf_counter()

    def tearDown(self):
        self.assertLess(time.perf_counter() - self.started, SECONDS)

    def peak_parse(self, path, **kw):
        """parse_file with the peak of the memory Python allocated meanwhile (bytes)."""
        tracemalloc.start()
        try:
            result = records.parse_file(path, **kw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return result, peak


class LongLineTest(Bounded):
    def test_newline_less_stretch_is_skipped_in_bounded_memory(self):
        rng = np.random.default_rng(1)
        good = [make_record(rng) for _ in range(3)]
        path = os.path.join(self.tmp, "long.jsonl")
        with open(path, "wb") as f:
            f.write(line(good[0]))
            f.write(b"x" * (24 << 20))               # 24 MB without a newline
            f.write(b"\n" + line(good[1]) + line(good[2]))
        (data, problems), peak = self.peak_parse(path)
        self.assertDataset(data, good)
        self.assertEqual(kinds(problems), [records.RECORD_TOO_LONG])
        self.assertEqual(problems[0][1], 2)          # the line number of the skipped stretch
        self.assertIn(f"{24 << 20} bytes", problems[0][3])
        self.assertLess(peak, 16 << 20)

    def test_newline_less_end_of_file(self):
        rng = np.random.default_rng(2)
        rec = make_record(rng)
        path = self.write("tail.jsonl", line(rec) + b"{" * (3 << 20))
        data, problems = records.parse_file(path)
        self.assertDataset(data, [rec])
        self.assertEqual([(p[1], p[2]) for p in problems], [(2, records.RECORD_TOO_LONG)])

    def test_gzip_bomb_of_zeros(self):
        # 100 MB of zeros in ~100 KB: decompressed in bounded pieces, never as a whole.
        path = os.path.join(self.tmp, "bomb.jsonl.gz")
        zeros = bytes(1 << 20)
        with gzip.open(path, "wb", compresslevel=9) as f:
            for _ in range(100):
                f.write(zeros)
        self.assertLess(os.path.getsize(path), 200_000)
        (data, problems), peak = self.peak_parse(path)
        self.assertEqual(kinds(problems), [records.RECORD_TOO_LONG])
        self.assertLess(peak, 16 << 20)

    def test_complete_lines_longer_than_the_limit(self):
        # The limit holds for lines that arrive whole too, on both paths, for valid records.
        rng = np.random.default_rng(3)
        short = make_record(rng)
        long_name = make_record(rng, name="n" * 3000)
        text = line(short) + line(long_name) + b"[" * 5000 + b"\n" + b" " * 2500 + b"\n\n"
        path = self.write("l.jsonl", text)
        for fast in (True, False):
            data, problems = records.parse_file(path, fast=fast, max_record=2000)
            self.assertDataset(data, [short])
            self.assertEqual([(p[1], p[2]) for p in problems],
                             [(n, records.RECORD_TOO_LONG) for n in (2, 3, 4)])
        data, problems = records.parse_file(path, max_record=10000)
        self.assertDataset(data, [short, long_name])

    def test_strict_names_file_and_line(self):
        path = self.write("s.jsonl", b"y" * (2 << 20) + b"\n")
        with self.assertRaisesRegex(records.DataError, r"s\.jsonl:1: line too long"):
            records.load_dumps([path], strict=True)


class ContentTest(Bounded):
    def test_deep_nesting(self):
        rng = np.random.default_rng(4)
        rec = make_record(rng)
        deep = line(rec).replace(b'"image_size":[64,64]',
                                 b'"image_size":' + b"[" * 990 + b"]" * 990)
        text = b"[" * 100000 + b"\n" + b'{"a":' * 50000 + b"\n" + deep + line(rec)
        path = self.write("deep.jsonl", text)
        for fast in (True, False):
            data, problems = records.parse_file(path, fast=fast)
            self.assertDataset(data, [rec])
            self.assertEqual(kinds(problems)[:2], [records.INVALID_JSON] * 2)
            self.assertEqual(len(problems), 3)

    def test_huge_numbers(self):
        rng = np.random.default_rng(5)
        rec = make_record(rng)
        base = line(rec)
        text = (base.replace(b'"components":', b'"components":' + b"9" * 5000 + b",\"x\":")
                + base.replace(b'"image_size":[64,', b'"image_size":[1e999,')
                + base.replace(b'"image_size":[64,', b'"image_size":[' + b"9" * 30 + b",")
                + base.replace(b'"image_size":[64,', b'"image_size":[64.0,') + base)
        data, problems = records.parse_file(self.write("n.jsonl", text))
        self.assertDataset(data, [rec])
        self.assertEqual(kinds(problems), [records.INVALID_JSON, records.NON_INTEGER,
                                           records.OUT_OF_RANGE, records.NON_INTEGER])

    def test_long_image_names_are_refused(self):
        # One long name would make the names array (fixed width, 4 bytes per character)
        # cost len(name) * 4 bytes per distinct image.
        rng = np.random.default_rng(6)
        ok = make_record(rng, name="a" * records.MAX_NAME)
        long = make_record(rng, name="b" * (records.MAX_NAME + 1))
        path = self.write("names.jsonl", line(ok) + line(long))
        for fast in (True, False):
            data, problems = records.parse_file(path, fast=fast)
            self.assertDataset(data, [ok])
            self.assertEqual(kinds(problems), [records.OUT_OF_RANGE])
            self.assertIn("'image' has 4097 bytes", problems[0][3])

    def test_blank_line_flood_in_bounded_memory(self):
        # Parsing allocates row arrays per line: 4 M newlines once meant ~1 GB of them.
        rng = np.random.default_rng(7)
        rec = make_record(rng)
        path = self.write("blank.jsonl", b"\n" * (4 << 20) + line(rec))
        (data, problems), peak = self.peak_parse(path)
        self.assertDataset(data, [rec])
        self.assertEqual(problems, [])
        self.assertLess(peak, 40 << 20)

    def test_bad_line_flood_stops_after_max_problems(self):
        rng = np.random.default_rng(8)
        rec = make_record(rng)
        path = self.write("bad.jsonl", line(rec) + b"x\n" * 200000 + line(rec))
        (data, problems), peak = self.peak_parse(path, max_problems=50)
        self.assertEqual(len(data["image"]), 1)
        self.assertEqual(kinds(problems), [records.INVALID_JSON] * 50
                         + [records.TOO_MANY_PROBLEMS])
        self.assertIn("more than 50 problems", problems[-1][3])
        self.assertLess(peak, 40 << 20)
        with self.assertRaisesRegex(records.DataError, "bad.jsonl:2: invalid JSON"):
            records.load_dumps([path], strict=True)

    def test_binary_garbage(self):
        rng = np.random.default_rng(9)
        rec = make_record(rng)
        garbage = bytes(rng.integers(0, 256, 1 << 16, np.uint8))
        path = self.write("g.jsonl", line(rec) + garbage + b"\n" + line(rec))
        data, problems = records.parse_file(path)
        self.assertEqual(len(data["image"]), 2)
        self.assertTrue(problems)


class GzipTest(Bounded):
    def test_damaged_streams_name_the_file(self):
        rng = np.random.default_rng(10)
        recs = [make_record(rng) for _ in range(40)]
        raw = gzip.compress(b"".join(map(line, recs)))
        cases = {"cut.jsonl.gz": raw[:len(raw) // 2], "head.jsonl.gz": raw[:5],
                 "crc.jsonl.gz": raw[:-8] + bytes(4) + raw[-4:],
                 "tail.jsonl.gz": raw + b"trailing garbage",
                 "plain.jsonl.gz": b"".join(map(line, recs))}
        for name, data in cases.items():
            with self.subTest(name=name):
                path = os.path.join(self.tmp, name)
                with open(path, "wb") as f:
                    f.write(data)
                _, problems = records.parse_file(path)
                self.assertIn(records.BAD_COMPRESSION, kinds(problems))
                self.assertIn(path, problems[kinds(problems).index(records.BAD_COMPRESSION)][0])
                # The first problem may be the half line before the damage.
                with self.assertRaisesRegex(records.DataError, re.escape(path) + ":"):
                    records.load_dumps([path], strict=True)

    def test_many_members_and_a_bomb_member(self):
        rng = np.random.default_rng(11)
        recs = [make_record(rng) for _ in range(5)]
        path = os.path.join(self.tmp, "m.jsonl.gz")
        bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
        with open(path, "wb") as f:
            f.write(gzip.compress(line(recs[0])))
            f.write(bomb.compress(bytes(30 << 20)) + bomb.compress(b"\n") + bomb.flush())
            for rec in recs[1:]:
                f.write(gzip.compress(line(rec)))
        (data, problems), peak = self.peak_parse(path)
        self.assertDataset(data, recs)
        self.assertEqual([(p[1], p[2]) for p in problems], [(2, records.RECORD_TOO_LONG)])
        self.assertLess(peak, 16 << 20)

    def test_unreadable_file(self):
        path = self.write("r.jsonl", line(make_record(np.random.default_rng(12))))
        with mock.patch("builtins.open", side_effect=PermissionError(13, "Permission denied")):
            data, problems = records.parse_file(path)
        self.assertEqual(kinds(problems), [records.UNREADABLE])
        self.assertIn("Permission denied", problems[0][3])


class ReaderFailureTest(Bounded):
    def test_an_error_in_the_reader_thread_is_raised_not_a_hang(self):
        path = self.write("t.jsonl", line(make_record(np.random.default_rng(13))))
        with mock.patch.object(records, "_text_pieces", side_effect=RuntimeError("boom")):
            with self.assertRaisesRegex(RuntimeError, "boom"):
                records.parse_file(path)


class CacheTest(Bounded):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(14)
        self.recs = [make_record(rng, name=f"c{i % 3}") for i in range(30)]
        self.path = self.write("c.jsonl", b"".join(map(line, self.recs)) + b"{bad\n")
        self.cache = os.path.join(self.tmp, "cache")
        self.entry = records._cache_path(self.cache, self.path)

    def load(self):
        warnings = []
        data, report = records.load_dumps([self.path], cache_dir=self.cache,
                                          warn=warnings.append)
        self.assertDataset(data, self.recs)
        return report, [p for p in warnings if p[2] == records.CACHE_WARNING]

    def damage_and_check(self, damage):
        self.load()
        with open(self.entry, "rb") as f:
            damaged = damage(f.read())
        with open(self.entry, "wb") as f:
            f.write(damaged)
        report, warned = self.load()                  # warned once, parsed again, rebuilt
        self.assertEqual(report["cached"], 0)
        self.assertEqual(len(warned), 1)
        self.assertIn(self.entry, warned[0][3])
        self.assertIn("rebuilt", warned[0][3])
        report, warned = self.load()
        self.assertEqual((report["cached"], warned), (1, []))
        self.assertEqual(report["problem_counts"], {records.INVALID_JSON: 1})

    def test_truncated_entry(self):
        for cut in (0.5, 0.99):
            with self.subTest(cut=cut):
                self.damage_and_check(lambda raw: raw[:int(len(raw) * cut)])

    def test_flipped_byte(self):
        def flip(raw):
            raw = bytearray(raw)
            raw[len(raw) // 3] ^= 0xFF
            return bytes(raw)
        self.damage_and_check(flip)

    def test_entry_with_wrong_arrays(self):
        def wrong(raw):
            path = os.path.join(self.tmp, "w.npz")
            with np.load(self.entry) as npz:
                parts = {k: npz[k] for k in npz.files}
            parts["pixels"] = parts["pixels"][:, :4]      # a shape no dataset has
            np.savez(path, **parts)
            with open(path, "rb") as f:
                return f.read()
        self.damage_and_check(wrong)

    def test_limits_are_part_of_the_key(self):
        self.load()
        data, report = records.load_dumps([self.path], cache_dir=self.cache, max_record=5000)
        self.assertEqual(report["cached"], 0)

    def test_cache_writes_are_atomic(self):
        # A failure while writing leaves the old entry and no temporary file behind.
        self.load()
        with open(self.entry, "rb") as f:
            before = f.read()
        os.utime(self.path, ns=(1, 1))                   # stale: the entry is rewritten
        with mock.patch.object(records.np, "savez", side_effect=OSError(28, "No space")):
            report, warned = self.load()
        self.assertEqual(len(warned), 1)
        self.assertIn("No space", warned[0][3])
        self.assertEqual(os.listdir(self.cache), [os.path.basename(self.entry)])
        with open(self.entry, "rb") as f:
            self.assertEqual(f.read(), before)


if __name__ == "__main__":
    unittest.main()
