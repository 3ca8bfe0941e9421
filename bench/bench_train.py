#!/usr/bin/env python3
"""Training-side speed: the NumPy trainer's step vs a PyTorch CPU loop, and dump loading.

    python3 bench/bench_train.py [--batch-size 512] [--hidden-dims 1024 512 256]
                                 [--steps 20] [--rounds 5] [--data DUMP...]

Training: samples/s of one optimisation step (forward, six-head soft-target loss, backward,
AdamW) on the same batches, for the NumPy model and, when torch is importable, an
equivalent torch.nn model (same layers, ReLU then dropout, AdamW with decay on the weight
matrices only). Runs alternate between the two (`--rounds`) so that load from other
processes hits both alike; the median step time of each is reported. torch uses as many
threads as NumPy's BLAS is allowed (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, else all cores).

Loading (--data): records/s of tlg8.records.load_dumps without the cache (cold), with an
empty cache (parse + write) and from the cache, and the resident bytes per block.
The project does not depend on torch; without it only the NumPy figures are printed.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import multitask_model as mm  # noqa: E402
from tlg8 import records  # noqa: E402


def blas_threads():
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return os.cpu_count() or 1


def batches(rng, n, batch):
    x = rng.standard_normal((n, batch, mm.N_FEATURES)).astype(np.float32)
    labels = rng.integers(0, 1 << 30, (n, batch, 2, 6)) % mm.HEAD_SIZES
    t = np.stack([mm.soft_targets(lab[:, 0], lab[:, 1], 0.2) for lab in labels])
    return x, t


def numpy_runner(args, x, t):
    model = mm.MultiTaskModel(args.hidden_dims, dropout=0.1, seed=0)
    opt = model.make_optimizer(1e-3, 1e-4)
    rng = np.random.default_rng(0)

    def run(steps):
        for i in range(steps):
            model.train_batch(x[i % len(x)], t[i % len(t)], opt, rng)
    return run


def torch_runner(args, x, t):
    import torch

    torch.set_num_threads(blas_threads())
    torch.manual_seed(0)
    layers, fan_in = [], mm.N_FEATURES
    for d in args.hidden_dims:
        layers += [torch.nn.Linear(fan_in, d), torch.nn.ReLU(), torch.nn.Dropout(0.1)]
        fan_in = d
    layers.append(torch.nn.Linear(fan_in, mm.N_OUTPUTS))
    net = torch.nn.Sequential(*layers)
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    xs = [torch.from_numpy(b) for b in x]
    ts = [torch.from_numpy(b) for b in t]
    bounds = [(int(a), int(a + n)) for a, n in zip(mm.HEAD_OFFSETS, mm.HEAD_SIZES)]

    def run(steps):
        for i in range(steps):
            logits = net(xs[i % len(xs)])
            target = ts[i % len(ts)]
            loss = sum(-(target[:, a:b] * torch.log_softmax(logits[:, a:b], 1)).sum(1).mean()
                       for a, b in bounds)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def bench_training(args):
    rng = np.random.default_rng(1)
    x, t = batches(rng, 4, args.batch_size)
    runners = {"numpy": numpy_runner(args, x, t)}
    try:
        import torch
        runners["torch"] = torch_runner(args, x, t)
        torch_note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch_note = "torch not installed: NumPy only"
    print(f"training step, batch {args.batch_size}, hidden {' '.join(map(str, args.hidden_dims))}, "
          f"BLAS threads {blas_threads()}; {torch_note}")
    for run in runners.values():
        run(args.warmup)
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(args.steps)
            times[name].append((time.perf_counter() - start) / args.steps)
    rate = {}
    for name, ts in times.items():
        rate[name] = args.batch_size / float(np.median(ts))
        print(f"  {name:6s} {rate[name]:9.0f} samples/s  (median step {np.median(ts) * 1e3:.1f} ms, "
              f"rounds: {' '.join(f'{v * 1e3:.0f}' for v in ts)} ms)")
    if "torch" in rate:
        print(f"  numpy / torch = {rate['numpy'] / rate['torch']:.2f}x")


def bench_loading(args):
    files, _ = records.find_dump_files(args.data)
    cold = []
    for _ in range(args.load_repeats):
        start = time.perf_counter()
        data, report = records.load_dumps(files)
        cold.append(time.perf_counter() - start)
    n = report["records"]
    cache = tempfile.mkdtemp(prefix="bench_cache_")
    try:
        start = time.perf_counter()
        records.load_dumps(files, cache_dir=cache)
        first = time.perf_counter() - start
        cached = []
        for _ in range(args.load_repeats):
            start = time.perf_counter()
            records.load_dumps(files, cache_dir=cache)
            cached.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(cache)
    print(f"loading {n} records from {len(files)} files")
    print(f"  cold (no cache)        {n / min(cold):10.0f} records/s  (best of "
          f"{len(cold)}: {min(cold):.3f} s; all: {' '.join(f'{c:.2f}' for c in cold)})")
    print(f"  parse + write cache    {n / first:10.0f} records/s  ({first:.3f} s)")
    print(f"  from the cache         {n / min(cached):10.0f} records/s  ({min(cached):.3f} s)")
    print(f"  resident memory        {records.dataset_nbytes(data) / n:10.1f} bytes/block")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--hidden-dims", type=int, nargs="+", default=list(mm.DEFAULT_HIDDEN))
    p.add_argument("--steps", type=int, default=20, help="steps per round and framework")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--data", nargs="+", metavar="DUMP", help="also measure loading these dumps")
    p.add_argument("--load-repeats", type=int, default=3)
    p.add_argument("--no-train", action="store_true", help="only the loading benchmark")
    args = p.parse_args(argv)
    if args.data:
        bench_loading(args)
    if not args.no_train:
        bench_training(args)


if __name__ == "__main__":
    main()
