"""Optional compiled kernels: numba, when installed (the `fast` extra).

TLG8's inner loops (a Golomb row's adaptive state, the decoder's bit reading) are
sequential per value; NumPy can only run many of them side by side. numba compiles the
plain scalar loop instead. It is optional: without it, or with TLG8_NO_JIT=1 in the
environment, every caller uses its NumPy path, which gives identical results (tests compare
the two).

numba is imported on the first call of a kernel, not when this module is imported, so
commands that never run a kernel (`tlg8 info`, `--version`) do not pay for it. Compiled code
is cached on disk (numba's cache=True), so only the first run after an install compiles.
"""

import importlib.util
import os

_DISABLED = os.environ.get("TLG8_NO_JIT", "") not in ("", "0")
_AVAILABLE = None


def available():
    """True when kernels run compiled: numba is installed and TLG8_NO_JIT is not set."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = not _DISABLED and importlib.util.find_spec("numba") is not None
    return _AVAILABLE


class _Kernel:
    """A function compiled by numba on its first call (see the module docstring)."""

    def __init__(self, fn):
        self.py_func = fn
        self._compiled = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        if self._compiled is None:
            import numba
            self._compiled = numba.njit(cache=True, nogil=True)(self.py_func)
        return self._compiled(*args)


def kernel(fn):
    """Decorator: fn, compiled with numba on first call. Call it only if available()."""
    return _Kernel(fn)
