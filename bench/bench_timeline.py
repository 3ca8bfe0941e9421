"""Where the time of one `tlg8 encode --jobs N` goes, and which of it is serial.

    python3 bench/bench_timeline.py IMAGE [--jobs 2] [--repeat 3] [--effort 3]

Runs the encode command in a child process (as `python3 -m tlg8 encode IMAGE OUT --quiet
--jobs N` does) with its stages timed by wrappers: the interpreter's start (before the
first line of the child), the NumPy and package imports, reading the image, loading the
model and the compiled kernels, forking, each process's encode stages (codec._select,
_row_costs, _pass, _finish), the Golomb-table fits, the join of the bands' files, the
write, and the exit after it (measured by this process). Every process is busy except
while it waits on a pipe (Connection.recv) or, for a band process, between stages.

A moment is serial when fewer than N processes are busy; each serial moment is put down
to what the command's first process is doing then (or, while it waits, to the stage
that the last busy process runs: a band that ends later than the others). Prints each
serial stage's seconds and share of the command's wall time (medians of --repeat runs),
the largest, and the Amdahl fraction of the whole run's serial time. The clock is
CLOCK_MONOTONIC (time.perf_counter), which all processes share.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("_select", "_row_costs", "_pass", "_finish")
LABELS = {"_select": "model's choices", "_row_costs": "row costs", "_pass": "file pass",
          "_finish": "band's file", "numpy": "import NumPy", "package": "import tlg8",
          "read": "read image", "model": "load model", "kernels": "load kernels",
          "fork": "fork", "fit": "fit tables", "join": "join bands", "write": "write file",
          "python": "interpreter start", "exit": "exit", None: "command (other)"}


def child(events_path, argv):
    """The instrumented command; each event is one line "pid name t0 t1" appended to
    events_path (a write under PIPE_BUF bytes is atomic)."""
    first = time.perf_counter()
    fd = os.open(events_path, os.O_WRONLY | os.O_APPEND)

    def mark(name, t0, t1):
        os.write(fd, f"{os.getpid()} {name} {t0!r} {t1!r}\n".encode())

    def timed(owner, attr, name):
        fn = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                mark(name, t0, time.perf_counter())
        wrapper.__name__, wrapper.__qualname__ = fn.__name__, fn.__qualname__
        wrapper.__module__ = getattr(fn, "__module__", None)
        setattr(owner, attr, wrapper)

    mark("main", first, first)
    sys.path.insert(0, ROOT)
    from tlg8 import cli
    cli.one_blas_thread()
    t0 = time.perf_counter()
    import numpy  # noqa: F401  (timed apart from the package)
    t1 = time.perf_counter()
    mark("numpy", t0, t1)
    import multiprocessing.connection
    import multiprocessing.process
    from tlg8 import codec, encode, golombfit, jit, selector
    mark("package", t1, time.perf_counter())
    for stage in STAGES:
        timed(codec, stage, stage)
    timed(encode, "read_image", "read")
    timed(selector, "default_model", "model")
    timed(jit, "load", "kernels")
    timed(multiprocessing.process.BaseProcess, "start", "fork")
    timed(multiprocessing.connection.Connection, "recv", "wait")
    timed(golombfit, "fit", "fit")
    timed(codec, "join_bands", "join")
    timed(encode, "atomic_write", "write")
    try:
        status = encode.main(argv)
    finally:
        end = time.perf_counter()
        mark("exit", end, end)
    cli.skip_final_collection()         # as the `tlg8` program ends
    sys.exit(status)


def run_once(image, jobs, effort, tmp, env=None):
    """One instrumented run in environment `env` (default this one's): (wall seconds,
    {label: serial seconds}, events)."""
    events_path = os.path.join(tmp, "events")
    open(events_path, "w").close()
    argv = [image, os.path.join(tmp, "out.tlg8"), "--quiet", "--jobs", str(jobs),
            "--effort", str(effort)]
    env = dict(env or os.environ, PYTHONPATH=ROOT)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", events_path,
                           "--"] + argv, env=env, stderr=subprocess.PIPE, text=True)
    end = time.perf_counter()
    if proc.returncode:
        sys.exit(f"failed: {proc.stderr.strip()}")
    events = []
    with open(events_path) as f:
        for line in f:
            pid, name, t0, t1 = line.split()
            events.append((int(pid), name, float(t0), float(t1)))
    return end - start, serial_stages(events, start, end, jobs), events


def serial_stages(events, start, end, jobs):
    """{label: seconds} of the moments in [start, end] when fewer than `jobs` processes
    are busy (see the module's doc)."""
    main_pid = next(pid for pid, name, _, _ in events if name == "main")
    first = next(t0 for _, name, t0, _ in events if name == "main")
    last = next(t0 for _, name, t0, _ in events if name == "exit")
    spans = [(0 if pid == main_pid else 1, pid, name, t0, t1) for pid, name, t0, t1 in events
             if t1 > t0]
    waits = [(t0, t1) for _, pid, name, t0, t1 in spans if pid == main_pid and name == "wait"]
    stages = [(pid, name, t0, t1) for _, pid, name, t0, t1 in spans
              if pid != main_pid and name in STAGES]
    cuts = sorted({start, end, first, last, *(t for s in spans for t in s[3:])})
    serial = {}
    for a, b in zip(cuts, cuts[1:]):
        mid = (a + b) / 2
        waiting = any(t0 <= mid < t1 for t0, t1 in waits)
        busy = (not waiting) + sum(t0 <= mid < t1 for _, _, t0, t1 in stages)
        if busy >= jobs:
            continue
        if mid < first:
            label = "python"
        elif mid >= last:
            label = "exit"
        elif waiting:
            running = [name for _, name, t0, t1 in stages if t0 <= mid < t1]
            label = running[0] if running else None
        else:   # the innermost of the first process's own spans (not its waits)
            inner = [(t1 - t0, name) for _, pid, name, t0, t1 in spans
                     if pid == main_pid and name not in ("wait", "main") and t0 <= mid < t1]
            label = min(inner)[1] if inner else None
        serial[label] = serial.get(label, 0.0) + (b - a)
    return serial


def profile(image, jobs, effort=3, repeat=3, env=None):
    """(median wall seconds, {label: median serial seconds}, median of all serial seconds)
    of `repeat` instrumented runs."""
    walls, serials = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            wall, serial, _ = run_once(os.path.abspath(image), jobs, effort, tmp, env)
            walls.append(wall)
            serials.append(serial)
    labels = {k for s in serials for k in s}
    medians = {k: statistics.median(s.get(k, 0.0) for s in serials) for k in labels}
    return (statistics.median(walls), medians,
            statistics.median(sum(s.values()) for s in serials))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("--jobs", type=int, default=2, help="processes, at least 2")
    parser.add_argument("--effort", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="runs (medians printed)")
    args = parser.parse_args()
    if args.jobs < 2:
        parser.error("--jobs: at least 2 (with one process every moment is serial)")
    wall, medians, total = profile(args.image, args.jobs, args.effort, args.repeat)
    print(f"{os.path.basename(args.image)}, --jobs {args.jobs}: {wall:.2f} s "
          f"(median of {args.repeat}); serial stages:")
    for k in sorted(medians, key=lambda k: -medians[k]):
        print(f"  {LABELS[k]:20s} {medians[k]:6.3f} s {100 * medians[k] / wall:5.1f} %")
    top = max(medians, key=lambda k: medians[k])
    print(f"largest serial stage: {LABELS[top]}, {100 * medians[top] / wall:.1f} % of the "
          f"time; all serial moments {total:.3f} s, {100 * total / wall:.1f} %")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child" and sys.argv[3] == "--":
        child(sys.argv[2], sys.argv[4:])
    else:
        main()
