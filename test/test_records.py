"""tlg8.records: reading training dumps, every kind of bad record, the cache."""
import gzip
import json
import os
import shutil
import tempfile
import unittest
from unittest import mock

import numpy as np

from tlg8 import records
from shared_data import TLGCONV, require_shared


def make_record(rng, name="img.bmp", size=None, ncomp=None, second=True, origin=(0, 0)):
    w, h = size or ((8, 8) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(1, 9, 2)))
    ncomp = ncomp or int(rng.choice([3, 4]))
    cand = lambda: {"predictor": int(rng.integers(8)), "filter": int(rng.integers(96)),
                    "reorder": int(rng.integers(8)), "interleave": int(rng.integers(2)),
                    "entropy": int(rng.integers(2)), "bits": int(rng.integers(0, 5000))}
    return {"image": name, "image_size": [origin[0] + 64, origin[1] + 64], "tile_origin": [0, 0],
            "block_origin": list(origin), "block_size": [w, h], "components": ncomp,
            "pixels": rng.integers(0, 256, w * h * ncomp).tolist(),
            "best": cand(), "second": cand() if second else None}


def line(rec):
    """The reference's byte layout: keys in order, no whitespace."""
    return (json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def expected(recs):
    """The dataset arrays the records should give (written out independently)."""
    n = len(recs)
    out = records._empty_arrays(n)
    for i, r in enumerate(recs):
        w, h = r["block_size"]
        c = r["components"]
        out["pixels"][i, :h, :w, :c] = np.array(r["pixels"]).reshape(h, w, c)
        out["size"][i] = (w, h, c)
        out["origin"][i] = r["block_origin"]
        out["best"][i] = [r["best"][k] for k in records.CANDIDATE_KEYS]
        out["bits"][i, 0] = r["best"]["bits"]
        if r["second"] is not None:
            out["second"][i] = [r["second"][k] for k in records.CANDIDATE_KEYS]
            out["bits"][i, 1] = r["second"]["bits"]
    return out


class TempDir(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_records_")
        self.addCleanup(shutil.rmtree, self.tmp)

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if name.endswith(".gz"):
            with gzip.open(path, "wb") as f:
                f.write(data)
        else:
            with open(path, "wb") as f:
                f.write(data)
        return path

    def assertDataset(self, data, recs):
        want = expected(recs)
        for k in records.DATASET_KEYS[:-1]:
            np.testing.assert_array_equal(data[k], want[k], err_msg=k)
        self.assertEqual([data["names"][i] for i in data["image"]], [r["image"] for r in recs])


class ParseTest(TempDir):
    def test_round_trip_plain_and_gzip(self):
        rng = np.random.default_rng(1)
        recs = [make_record(rng, name=f"im{i % 3}.bmp", second=i % 5 != 0) for i in range(300)]
        text = b"".join(line(r) for r in recs)
        for name in ("a.jsonl", "b.jsonl.gz"):
            data, problems = records.parse_file(self.write(name, text))
            self.assertEqual(problems, [])
            self.assertDataset(data, recs)
            self.assertEqual(data["names"].tolist(), ["im0.bmp", "im1.bmp", "im2.bmp"])

    def test_fast_path_takes_canonical_lines(self):
        # The fast path must accept the reference's layout itself, not leave it to json.loads.
        rng = np.random.default_rng(2)
        recs = [make_record(rng, second=i % 4 != 0) for i in range(50)]
        data = b"".join(line(r) for r in recs)
        arrays, ids, accepted = records._fast_parse(data, {}, 0)
        self.assertTrue(accepted.all())

    def test_fast_and_slow_paths_agree_on_mutations(self):
        rng = np.random.default_rng(3)
        base = [line(make_record(rng, second=i % 3 != 0)) for i in range(6)]
        alphabet = b'0123456789,:[]{}"-. \nabenlptux'
        mutated = []
        for i in range(3000):
            b = bytearray(base[i % len(base)][:-1])
            for _ in range(1 + rng.integers(3)):
                pos = int(rng.integers(len(b)))
                op = rng.integers(4)
                if op == 0:
                    b[pos] = alphabet[rng.integers(len(alphabet))]
                elif op == 1:
                    del b[pos]
                elif op == 2:
                    b.insert(pos, alphabet[rng.integers(len(alphabet))])
                else:                  # a digit next to a digit: values and lengths change
                    b.insert(pos, ord("0") + int(rng.integers(10)))
            mutated.append(bytes(b).replace(b"\n", b"") + b"\n")
        data = b"".join(mutated)
        fast_names, slow_names = {}, {}
        fast, fast_problems, _ = records.parse_chunk(data, 1, fast_names)
        slow, slow_problems, _ = records.parse_chunk(data, 1, slow_names, fast=False)
        self.assertEqual(fast_problems, slow_problems)
        for k in records.DATASET_KEYS[:-1]:
            np.testing.assert_array_equal(fast[k], slow[k], err_msg=k)
        # Name ids may be numbered differently; the names of the records must agree, and
        # no name comes from a rejected line only.
        self.assertEqual([list(fast_names)[i] for i in fast["image"]],
                         [list(slow_names)[i] for i in slow["image"]])
        self.assertEqual(set(fast_names), set(slow_names))
        # Both kinds occur, so the comparison covers accepted and rejected lines.
        self.assertGreater(len(slow_problems), 500)
        self.assertGreater(len(slow["image"]), 200)

    def test_valid_json_in_other_layouts_is_accepted(self):
        rng = np.random.default_rng(4)
        recs = [make_record(rng, name='we"ird\\name\u00e9\n'), make_record(rng, second=False),
                make_record(rng)]
        lines = [json.dumps(recs[0]).encode() + b"\n",                    # spaces, escapes
                 json.dumps(dict(reversed(list(recs[1].items())))).encode() + b"\r\n",
                 line(recs[2])[:-1]]                                      # no final newline
        data, problems = records.parse_file(self.write("x.jsonl", b"".join(lines)))
        self.assertEqual(problems, [])
        self.assertDataset(data, recs)

    def test_raw_non_utf8_name_bytes(self):
        rng = np.random.default_rng(5)
        rec = make_record(rng, name="NAME")
        raw = line(rec).replace(b"NAME", b"caf\xe9")          # bytes >= 0x80 are copied raw
        names_fast, names_slow = {}, {}
        fast, _, _ = records.parse_chunk(raw, 1, names_fast)
        slow, _, _ = records.parse_chunk(raw, 1, names_slow, fast=False)
        self.assertEqual((len(fast["image"]), len(slow["image"])), (1, 1))
        self.assertEqual(list(names_fast), ["caf\\xe9"])
        self.assertEqual(names_fast, names_slow)

    def test_edge_blocks_and_four_components(self):
        rng = np.random.default_rng(6)
        recs = [make_record(rng, size=(w, h), ncomp=c)
                for w in (1, 3, 8) for h in (1, 5, 8) for c in (3, 4)]
        data, problems = records.parse_file(self.write("e.jsonl", b"".join(map(line, recs))))
        self.assertEqual(problems, [])
        self.assertDataset(data, recs)

    def test_chunks_keep_line_numbers(self):
        rng = np.random.default_rng(7)
        lines = [line(make_record(rng)) for _ in range(400)]
        lines[123] = b"{broken\n"
        lines[350] = b"{broken\n"
        path = self.write("c.jsonl.gz", b"".join(lines))
        with mock.patch.object(records, "_CHUNK", 4096):
            data, problems = records.parse_file(path)
        self.assertEqual([p[1] for p in problems], [124, 351])
        self.assertEqual(len(data["image"]), 398)

    def test_reader_thread_ends_when_parsing_fails(self):
        import threading
        rng = np.random.default_rng(18)
        path = self.write("r.jsonl.gz", b"".join(line(make_record(rng)) for _ in range(300)))
        before = threading.active_count()
        with mock.patch.object(records, "_CHUNK", 2048), \
                mock.patch.object(records, "parse_chunk", side_effect=RuntimeError("boom")):
            with self.assertRaisesRegex(RuntimeError, "boom"):
                records.parse_file(path)
        self.assertEqual(threading.active_count(), before)

    def test_memory_per_block(self):
        rng = np.random.default_rng(8)
        recs = [make_record(rng) for _ in range(100)]
        data, _ = records.parse_file(self.write("m.jsonl", b"".join(map(line, recs))))
        self.assertLessEqual(records.dataset_nbytes(data) / len(recs), 400)


class BadRecordTest(TempDir):
    def problems_of(self, text, name="bad.jsonl"):
        data, problems = records.parse_file(self.write(name, text))
        return data, problems

    def test_each_kind(self):
        rng = np.random.default_rng(9)
        good = make_record(rng)

        def edit(**changes):
            rec = json.loads(json.dumps(good))
            for key, value in changes.items():
                target = rec
                if "__" in key:
                    outer, key = key.split("__")
                    target = rec[outer]
                if value is KeyError:
                    del target[key]
                else:
                    target[key] = value
            return line(rec)

        cases = [
            (b'{"image": "x", oops}\n', records.INVALID_JSON),
            (edit(pixels=KeyError), records.MISSING_KEY),
            (edit(best__bits=KeyError), records.MISSING_KEY),
            (edit(pixels=good["pixels"][:-1]), records.PIXEL_COUNT),
            (edit(best__filter=96), records.LABEL_RANGE),
            (edit(second__predictor=8), records.LABEL_RANGE),
            (edit(best__interleave=-1), records.LABEL_RANGE),
            (edit(best__reorder=1.5), records.NON_INTEGER),
            (edit(best__entropy=True), records.NON_INTEGER),
            (edit(components="3"), records.NON_INTEGER),
            (edit(pixels=[1.0] + good["pixels"][1:]), records.NON_INTEGER),
            (edit(pixels=[256] + good["pixels"][1:]), records.OUT_OF_RANGE),
            (edit(components=2), records.OUT_OF_RANGE),
            (edit(block_size=[9, 8]), records.OUT_OF_RANGE),
            (edit(block_origin=[60, 0]), records.OUT_OF_RANGE),
            (edit(second=[1, 2]), records.WRONG_TYPE),
            (b"[1, 2, 3]\n", records.WRONG_TYPE),
        ]
        text = line(good) + b"".join(c for c, _ in cases) + line(good)
        data, problems = self.problems_of(text)
        self.assertEqual(len(data["image"]), 2)
        self.assertEqual([p[2] for p in problems], [k for _, k in cases])
        self.assertEqual([p[1] for p in problems], list(range(2, 2 + len(cases))))
        for p in problems:
            self.assertTrue(p[3])                        # a reason, not just a kind
        self.assertIn("best.filter", problems[4][3])
        self.assertIn("96", problems[4][3])

    def test_truncated_last_line(self):
        rng = np.random.default_rng(10)
        whole = line(make_record(rng))
        data, problems = self.problems_of(whole + whole[:57])
        self.assertEqual(len(data["image"]), 1)
        self.assertEqual([(p[1], p[2]) for p in problems], [(2, records.TRUNCATED_LINE)])

    def test_empty_file(self):
        for text in (b"", b"\n\n"):
            data, problems = self.problems_of(text)
            self.assertEqual(len(data["image"]), 0)
            self.assertEqual([p[2] for p in problems], [records.EMPTY_FILE])
        data, problems = self.problems_of(b"", "empty.jsonl.gz")
        self.assertEqual([p[2] for p in problems], [records.EMPTY_FILE])

    def test_truncated_and_corrupt_gzip(self):
        rng = np.random.default_rng(11)
        text = b"".join(line(make_record(rng)) for _ in range(50))
        path = self.write("t.jsonl.gz", text)
        with open(path, "rb") as f:
            raw = f.read()
        with open(path, "wb") as f:
            f.write(raw[:len(raw) // 2])
        data, problems = records.parse_file(path)
        kinds = [p[2] for p in problems]
        self.assertIn(records.BAD_COMPRESSION, kinds)
        self.assertGreater(len(data["image"]), 0)
        self.assertLess(len(data["image"]), 50)
        with open(path, "wb") as f:
            f.write(b"this is not gzip at all")
        data, problems = records.parse_file(path)
        self.assertEqual([p[2] for p in problems], [records.BAD_COMPRESSION])

    def test_concatenated_gzip_members(self):
        rng = np.random.default_rng(12)
        recs = [make_record(rng) for _ in range(10)]
        path = os.path.join(self.tmp, "multi.jsonl.gz")
        with open(path, "wb") as f:
            f.write(gzip.compress(b"".join(map(line, recs[:4]))))
            f.write(gzip.compress(b"".join(map(line, recs[4:]))))
        data, problems = records.parse_file(path)
        self.assertEqual(problems, [])
        self.assertDataset(data, recs)

    def test_directory_without_dumps_and_missing_path(self):
        os.makedirs(os.path.join(self.tmp, "empty", "sub"))
        self.write("empty/sub/readme.txt", b"hello")
        rng = np.random.default_rng(13)
        good = self.write("d/x.jsonl", line(make_record(rng)))
        data, report = records.load_dumps([os.path.join(self.tmp, "empty"), good])
        self.assertEqual(report["problem_counts"], {records.NO_DATA_FILES: 1})
        with self.assertRaises(records.DataError):
            records.load_dumps([os.path.join(self.tmp, "empty")])      # no data at all
        with self.assertRaisesRegex(records.DataError, "no such file"):
            records.load_dumps([os.path.join(self.tmp, "nope.jsonl")])

    def test_strict_names_file_and_line(self):
        rng = np.random.default_rng(14)
        path = self.write("s.jsonl", line(make_record(rng)) + b"{bad\n")
        with self.assertRaisesRegex(records.DataError, r"s\.jsonl:2: invalid JSON"):
            records.load_dumps([path], strict=True)
        data, report = records.load_dumps([path])
        self.assertEqual(report["records"], 1)
        self.assertEqual(report["problem_counts"], {records.INVALID_JSON: 1})


class FilesAndCacheTest(TempDir):
    def test_directories_are_searched_recursively(self):
        rng = np.random.default_rng(15)
        a = self.write("root/a.jsonl", line(make_record(rng, name="a")))
        b = self.write("root/deep/er/b.jsonl.gz", line(make_record(rng, name="b")))
        self.write("root/deep/notes.json", b"{}")
        files, problems = records.find_dump_files([os.path.join(self.tmp, "root")])
        self.assertEqual(sorted(files), sorted([a, b]))
        self.assertEqual(problems, [])
        data, report = records.load_dumps([os.path.join(self.tmp, "root")])
        self.assertEqual(sorted(data["names"].tolist()), ["a", "b"])

    def test_cache_hit_and_invalidation(self):
        rng = np.random.default_rng(16)
        recs = [make_record(rng, name=f"n{i % 2}") for i in range(20)]
        path = self.write("c.jsonl", b"".join(map(line, recs)) + b"{bad\n")
        cache = os.path.join(self.tmp, "cache")
        first, r1 = records.load_dumps([path], cache_dir=cache)
        second, r2 = records.load_dumps([path], cache_dir=cache)
        self.assertEqual((r1["cached"], r2["cached"]), (0, 1))
        self.assertEqual(r1["problems"], r2["problems"])     # warnings come back from the cache
        for k in records.DATASET_KEYS + ("names",):
            np.testing.assert_array_equal(first[k], second[k])
        with self.assertRaises(records.DataError):           # --strict fails the same way
            records.load_dumps([path], cache_dir=cache, strict=True)
        # A changed file (size and mtime differ) is parsed again.
        more = recs + [make_record(rng, name="n2")]
        with open(path, "wb") as f:
            f.write(b"".join(map(line, more)))
        third, r3 = records.load_dumps([path], cache_dir=cache)
        self.assertEqual(r3["cached"], 0)
        self.assertDataset(third, more)
        # Same size, new mtime: parsed again too.
        os.utime(path, ns=(1, 1))
        self.assertEqual(records.load_dumps([path], cache_dir=cache)[1]["cached"], 0)

    def test_corrupt_or_unwritable_cache_is_not_fatal(self):
        rng = np.random.default_rng(17)
        path = self.write("u.jsonl", line(make_record(rng)))
        cache = os.path.join(self.tmp, "cache")
        records.load_dumps([path], cache_dir=cache)
        entry = records._cache_path(cache, path)
        with open(entry, "wb") as f:
            f.write(b"garbage")
        data, report = records.load_dumps([path], cache_dir=cache)
        self.assertEqual((report["records"], report["cached"]), (1, 0))
        blocker = os.path.join(self.tmp, "file_not_dir")
        open(blocker, "w").close()
        data, report = records.load_dumps([path], cache_dir=os.path.join(blocker, "x"), strict=True)
        self.assertEqual(report["records"], 1)
        self.assertEqual([p[2] for p in report["problems"]], ["cache"])
        self.assertEqual(report["problem_counts"], {})

    def test_default_cache_dir_is_overridable(self):
        with mock.patch.dict(os.environ, {"TLG8_CACHE_DIR": "/x/y"}):
            self.assertEqual(records.default_cache_dir(), "/x/y")
        with mock.patch.dict(os.environ, {"TLG8_CACHE_DIR": "", "XDG_CACHE_HOME": "/c"}):
            self.assertEqual(records.default_cache_dir(), "/c/tlg8-multitask")


class SharedDumpTest(unittest.TestCase):
    def test_reference_dump_fast_equals_slow(self):
        require_shared("data/tlgconv/dko_sss.jsonl.gz")
        path = os.path.join(TLGCONV, "dko_sss.jsonl.gz")
        data, problems = records.parse_file(path)
        self.assertEqual((len(data["image"]), problems), (625, []))
        slow, _ = records.parse_file(path, fast=False)
        for k in records.DATASET_KEYS + ("names",):
            np.testing.assert_array_equal(data[k], slow[k])
        # 200 x 200: the last column and row of blocks are 8 x 8 (200 = 25 * 8).
        self.assertTrue((data["size"] == [8, 8, 3]).all())


if __name__ == "__main__":
    unittest.main()
