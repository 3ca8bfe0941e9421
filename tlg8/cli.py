"""What every command-line front end shares: the progress bar, error lines, interrupts,
argument types, and the one way to a trained model.

* `progress(total, quiet)`: a tqdm bar on stderr, shown only on a terminal, never with
  --quiet;
* `error(message)`: one line "error: ..." on stderr;
* `run(body)`: runs a command's work; the package's own errors (Tlg8Error) and OS errors
  become one error line and exit 1, SIGINT prints "interrupted" and exits 130, SIGTERM
  exits 143; temporary files are removed on the way out (fileio.atomic_write);
* `load_model(path)`: a model file of any kind, through the model side's one loader
  (tlg8_multitask.loader). The codec library never imports the model side; only this
  front-end helper does, and only when a command is given a model file.
"""
import argparse
import signal
import sys

from . import Tlg8Error

EXIT_ERROR = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanups run as for KeyboardInterrupt."""


def progress(total, quiet=False, **options):
    """A tqdm progress bar on stderr (unit "block" unless given); hidden when not a TTY."""
    from tqdm import tqdm
    options.setdefault("unit", "block")
    return tqdm(total=total, disable=True if quiet else None, file=sys.stderr,
                dynamic_ncols=True, **options)


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
    130 on SIGINT, 143 on SIGTERM (one line "interrupted")."""
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
    except OSError as e:
        error(os_error(e))
        return EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)


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
