#!/usr/bin/env python3
"""Long mutation fuzz of the dump reader (tlg8.records), for hostile input.

    python3 bench/fuzz_records.py [--seconds 300] [--seed 1] [--big-every 50]

Each case mutates a small valid dump (random truncations, byte flips, inserted and deleted
bytes, huge numbers, deep nesting, long names, newlines removed, binary junk, a gzip member
that is a bomb of zeros or of one repeated byte, damaged gzip streams, damaged cache
entries), writes it as .jsonl or .jsonl.gz and reads it with load_dumps, with and without
the cache and --strict. Every `--big-every`-th case is a large one (tens of MB of text
without newlines, or a gzip bomb).

Checked for every case: only the package's own errors occur (DataError; bad records are
problems), the fast and the json.loads paths give the same records and problems, a cached
result equals a fresh one, and the case time. Printed: cases by mutation, total and slowest
case time, peak RSS, and every exception type other than DataError (the goal is none).
"""
import argparse
import gzip
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tlg8 import records  # noqa: E402


def base_record(rng, i):
    w, h = (8, 8) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(1, 9, 2))
    c = int(rng.choice([3, 4]))
    cand = lambda: {"predictor": int(rng.integers(8)), "filter": int(rng.integers(96)),
                    "reorder": int(rng.integers(8)), "interleave": int(rng.integers(2)),
                    "entropy": int(rng.integers(2)), "bits": int(rng.integers(0, 5000))}
    rec = {"image": f"img{i % 3}.bmp", "image_size": [64, 64], "tile_origin": [0, 0],
           "block_origin": [8 * (i % 7), 8 * (i % 5)], "block_size": [w, h], "components": c,
           "pixels": rng.integers(0, 256, w * h * c).tolist(), "best": cand(),
           "second": cand() if rng.random() < 0.9 else None}
    return (json.dumps(rec, separators=(",", ":")) + "\n").encode()


def mutate_text(rng, text):
    """One or more text mutations; returns (name, text)."""
    b = bytearray(text)
    op = int(rng.integers(10))
    pos = lambda: int(rng.integers(len(b) + 1))
    if op == 0:
        name = "flip"
        for _ in range(int(rng.integers(1, 20))):
            if b:
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
    elif op == 1:
        name = "truncate"
        b = b[:pos()]
    elif op == 2:
        name = "insert-delete"
        for _ in range(int(rng.integers(1, 20))):
            p = pos()
            if rng.random() < 0.5:
                b[p:p] = bytes([int(rng.choice(list(b'0123456789,:[]{}"-.e \n\\u')))])
            else:
                del b[p:p + 1]
    elif op == 3:
        name = "huge-number"
        p = pos()
        b[p:p] = (b"-" if rng.random() < 0.2 else b"") + b"9" * int(rng.integers(10, 20000)) \
            + (b".5e999" if rng.random() < 0.2 else b"")
    elif op == 4:
        name = "deep-nesting"
        p = pos()
        depth = int(rng.integers(100, 200000))
        opener = b"[" if rng.random() < 0.5 else b'{"a":'
        b[p:p] = opener * depth + (b"]" * depth if opener == b"[" and rng.random() < 0.5 else b"")
    elif op == 5:
        name = "no-newlines"
        b = bytearray(bytes(b).replace(b"\n", b"" if rng.random() < 0.5 else b" "))
    elif op == 6:
        name = "long-name"
        p = bytes(b).find(b'"image":"')
        if p >= 0:
            b[p + 9:p + 9] = b"n" * int(rng.integers(4000, 300000))
    elif op == 7:
        name = "binary-junk"
        p = pos()
        b[p:p] = bytes(rng.integers(0, 256, int(rng.integers(1, 100000)), np.uint8))
    elif op == 8:
        name = "blank-flood"
        p = bytes(b).find(b"\n") + 1
        b[p:p] = rng.choice([b"\n", b"\r\n", b" \n", b"\t \n"]) * int(rng.integers(1, 300000))
    else:
        name = "bad-line-flood"
        b += rng.choice([b"x\n", b"{}\n", b"[1]\n", b'{"image":1}\n']) * int(rng.integers(1, 5000))
    return name, bytes(b)


def gzip_case(rng, text, big):
    """(name, raw .gz bytes): a valid, damaged or bomb gzip file of `text`."""
    op = 4 if big else int(rng.integers(4))
    raw = gzip.compress(text, 6)
    if op == 0:
        return "gz", raw
    if op == 1:
        return "gz-truncated", raw[:int(rng.integers(len(raw) + 1))]
    if op == 2:
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        return "gz-flip", bytes(b)
    if op == 3:
        cut = int(rng.integers(len(text) + 1))
        return "gz-members", gzip.compress(text[:cut]) + gzip.compress(text[cut:])
    # A bomb member between two valid ones: ~1000x expansion of one repeated byte.
    fill = bytes([int(rng.choice([0, ord("x"), ord("\n"), ord(" ")]))])
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    mb = int(rng.integers(50, 400))
    piece = fill * (1 << 20)
    bomb = b"".join(comp.compress(piece) for _ in range(mb)) + comp.compress(b"\n") + comp.flush()
    return f"gz-bomb({fill!r}, {mb} MB)", gzip.compress(text[:1000]) + bomb + gzip.compress(text)


def same(a, b):
    """Same records; the two paths may number the image names differently."""
    return (all(np.array_equal(a[k], b[k]) for k in records.DATASET_KEYS[:-1])
            and np.array_equal(a["names"][a["image"]], b["names"][b["image"]]))


def run_case(rng, tmp, cache, text, big, counts, failures):
    gz = rng.random() < 0.3 or big and rng.random() < 0.5
    if gz:
        name, raw = gzip_case(rng, text if big else mutate_text(rng, text)[1], big)
        path = os.path.join(tmp, "case.jsonl.gz")
    else:
        name, raw = ("big-no-newline", text[:3000]) if big else mutate_text(rng, text)
        path = os.path.join(tmp, "case.jsonl")
    with open(path, "wb") as f:
        f.write(raw)
        if name == "big-no-newline":          # written in pieces: the RSS is the reader's
            for _ in range(int(rng.integers(8, 64))):
                f.write(b"y" * (1 << 20))
            f.write(b"\n" + text)
    counts[name.split("(")[0]] = counts.get(name.split("(")[0], 0) + 1
    started = time.perf_counter()
    try:
        fresh, problems = records.parse_file(path)
        if not gz and not big:
            slow, slow_problems = records.parse_file(path, fast=False)
            if problems != slow_problems or not same(fresh, slow):
                failures.append((name, "fast and slow paths differ", raw[:200]))
        for strict in (False, True):
            try:
                data, report = records.load_dumps([path], cache_dir=cache, strict=strict)
                if not same(data, fresh):
                    failures.append((name, "load_dumps/cache differs from parse_file", raw[:200]))
            except records.DataError:
                pass
        if rng.random() < 0.2:                       # damage the cache entry, read again
            entry = records._cache_path(cache, path)
            if os.path.exists(entry):
                with open(entry, "rb") as f:
                    b = bytearray(f.read())
                if rng.random() < 0.5:
                    b = b[:int(rng.integers(len(b) + 1))]
                else:
                    for _ in range(int(rng.integers(1, 5))):
                        b[int(rng.integers(len(b)))] = int(rng.integers(256))
                with open(entry, "wb") as f:
                    f.write(b)
                try:
                    data, report = records.load_dumps([path], cache_dir=cache)
                    if not same(data, fresh):
                        failures.append((name, "damaged cache gave other data", raw[:200]))
                except records.DataError:
                    pass
    except Exception as e:          # noqa: BLE001 - what the fuzz is looking for
        failures.append((name, f"{type(e).__name__}: {e}"[:300], traceback.format_exc()))
    return name, time.perf_counter() - started


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--big-every", type=int, default=50)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    tmp = tempfile.mkdtemp(prefix="fuzz_records_")
    cache = os.path.join(tmp, "cache")
    counts, failures = {}, []
    slowest = (0.0, "")
    started = time.perf_counter()
    cases = 0
    try:
        while time.perf_counter() - started < args.seconds:
            text = b"".join(base_record(rng, i) for i in range(int(rng.integers(1, 30))))
            big = cases % args.big_every == args.big_every - 1
            name, seconds = run_case(rng, tmp, cache, text, big, counts, failures)
            slowest = max(slowest, (seconds, name))
            cases += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"cases: {cases} in {total:.0f} s (seed {args.seed}); slowest case "
          f"{slowest[0]:.2f} s ({slowest[1]}); peak RSS {peak:.0f} MB")
    for name, n in sorted(counts.items()):
        print(f"  {name:16s} {n}")
    kinds = {}
    for name, what, _ in failures:
        kinds.setdefault(what.split(":")[0], []).append(name)
    print(f"failures (exceptions other than DataError, disagreements): {len(failures)}")
    for what, names in sorted(kinds.items()):
        print(f"  {what}: {len(names)} (mutations: {', '.join(sorted(set(names)))})")
    for name, what, detail in failures[:5]:
        print(f"--- {name}: {what}\n{detail!r}"[:2000])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
