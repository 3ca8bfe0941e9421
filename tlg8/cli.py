"""What every command-line front end shares: the progress bar, error lines, interrupts,
argument types, and the one way to a trained model.

* `progress(total, quiet)`: a tqdm bar on stderr, shown only on a terminal, never with
  --quiet;
* `error(message)`: one line "error: ..." on stderr;
* `skip_final_collection()`: at the end of a command's process, spares the interpreter's
  shutdown a last garbage collection (slow with numba loaded);
* `run(body)`: runs a command's work; the package's own errors (Tlg8Error) and OS errors
  become one error line and exit 1, SIGINT prints "interrupted" and exits 130, SIGTERM
  exits 143; temporary files are removed on the way out (fileio.atomic_write);
* `load_model(path)`: a model file of any kind, through the model side's one loader
  (tlg8_multitask.loader). The codec library never imports the model side; only this
  front-end helper does, and only when a command is given a model file.
"""
import argparse
import gc
import os
import signal
import sys

from . import Tlg8Error
from .fileio import check_writable

EXIT_ERROR = 1
# Environment variables that cap the BLAS library's threads (OpenBLAS, MKL, OpenMP).
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def one_blas_thread():
    """Before NumPy is imported by a command: let its BLAS run on one thread unless the
    user says otherwise. The models' matrix products are small; a pool of BLAS threads only
    costs the command its start-up and, on a busy machine, waits (0.2-0.3 s of a 1-2 s
    encode, measured). The thread count does not change the products (BLAS splits them by
    rows and columns, never along a sum)."""
    if "numpy" not in sys.modules:
        for name in BLAS_THREADS:
            os.environ.setdefault(name, "1")
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_SIGPIPE = 141


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanups run as for KeyboardInterrupt."""


def progress(total, quiet=False, **options):
    """A tqdm progress bar on stderr (unit "block" unless given); hidden when not a TTY.
    A hidden bar is a stand-in that does nothing, so that a command without one does not
    import tqdm (a few per cent of a small image's encode)."""
    if quiet or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return _NoBar(total)
    from tqdm import tqdm
    options.setdefault("unit", "block")
    return tqdm(total=total, file=sys.stderr, dynamic_ncols=True, **options)


class _NoBar:
    """What a disabled tqdm bar does: count (n), print through write, nothing else."""

    def __init__(self, total):
        self.total = total
        self.n = 0

    def update(self, n=1):
        self.n += n

    @staticmethod
    def write(text, file=None, end="\n"):
        (file or sys.stdout).write(text + end)

    def __getattr__(self, name):            # set_description, set_postfix, close, ...
        return lambda *args, **kwargs: None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def skip_final_collection():
    """For a command's process that is about to exit: gc.freeze(), so that the
    interpreter's shutdown does not run one more full garbage collection over every object
    still alive. With numba loaded that collection takes about 0.3 s on the development
    machine, a third of a decode command. Frozen objects are never collected, hence only
    at the very end of a process (never in a test or a caller's process)."""
    gc.freeze()


def error(message):
    print(f"error: {message}", file=sys.stderr, flush=True)


def os_error(e):
    """One line for an OSError: the file and the reason."""
    name = e.filename if e.filename is not None else ""
    return f"{name}: {e.strerror or e}" if name else str(e.strerror or e)


def _terminate(signum, frame):
    raise Terminated()


def run(body):
    """Exit status of body(): 0 or its own, 1 on a Tlg8Error or OSError (one line),
    130 on SIGINT, 143 on SIGTERM (one line "interrupted"), 141 when stdout is closed."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return body() or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print("interrupted", file=sys.stderr)
        return EXIT_SIGTERM
    except Tlg8Error as e:
        error(e)
        return EXIT_ERROR
    except BrokenPipeError:
        # stdout was closed (`tlg8 info *.tlg8 | head`): stop quietly, as a filter does,
        # and keep the interpreter's last flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGPIPE
    except OSError as e:
        error(os_error(e))
        return EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)


def output_pairs(args, parser, extensions, default_extension):
    """[(input, output)] of a one-output-per-input command (args.inputs, args.output,
    args.out_dir). With exactly two inputs and no -o, a second one ending in one of
    `extensions` is the output (the classic `cmd IN OUT`). Otherwise each output is named
    after its input with `default_extension`, beside it or in --out-dir. Usage errors exit
    via parser.error."""
    inputs = list(args.inputs)
    if args.output is None and len(inputs) == 2 and \
            os.path.splitext(inputs[1])[1].lower() in extensions:
        args.output = inputs.pop()
    if args.output is not None:
        if len(inputs) != 1 or args.out_dir:
            parser.error("-o/--output takes one input and no --out-dir")
        if os.path.splitext(args.output)[1].lower() not in extensions:
            parser.error(f"{args.output}: output must end in {' or '.join(extensions)}")
        return [(inputs[0], args.output)]
    pairs = [(path, os.path.join(args.out_dir or os.path.dirname(path),
                                 os.path.splitext(os.path.basename(path))[0] + default_extension))
             for path in inputs]
    if len({out for _, out in pairs}) != len(pairs):
        parser.error("two inputs would write the same output name; use --out-dir or -o")
    return pairs


def prepare_outputs(out_dir, pairs):
    """Create --out-dir and check that every output can be written, before any work."""
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    for _, out in pairs:
        check_writable(out)


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def load_model(path):
    """A trained model of any kind from its NPZ (ModelFormatError / FileNotFoundError)."""
    from tlg8_multitask.loader import load_model as load
    return load(path)
