"""Optional compiled kernels: numba, when installed (the `fast` extra).

TLG8's inner loops (a Golomb row's adaptive state, the decoder's bit reading) are
sequential per value; NumPy can only run many of them side by side. numba compiles the
plain scalar loop instead. It is optional: without it, or with TLG8_NO_JIT=1 in the
environment, every caller uses its NumPy path, which gives identical results (tests compare
the two).

numba is imported on the first call of a kernel, not when this module is imported, so
code that never runs a kernel (`tlg8 --version`, an encode without kernels) does not pay
for it; this module is the only one that imports numba. Compiled code is cached on disk
(numba's cache=True: in __pycache__ beside the source, or numba's user cache directory), so
only the first run after an install compiles. A kernel may call other kernels (compiled as
direct calls, or inlined). numba re-compiles a cached kernel only when its own source file
changes: keep a kernel and the kernels it calls in one module.
"""

import importlib.util
import os
import sys
import types

_DISABLED = os.environ.get("TLG8_NO_JIT", "") not in ("", "0")
_AVAILABLE = None
_NUMBA = None           # the numba module, once imported by _import_numba


def available():
    """True when kernels run compiled: numba is installed and TLG8_NO_JIT is not set."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = not _DISABLED and importlib.util.find_spec("numba") is not None
    return _AVAILABLE


def _import_numba():
    """numba, imported and its CPU target initialised, once.

    Two optional packages numba imports cost a decode command more than all its decoding,
    for nothing it uses; unless the process has imported them already, they are hidden
    (`import` raises ImportError) while numba starts:
    * SciPy: the target's initialisation imports numba.np.arraymath, which imports
      scipy.linalg (0.3-0.4 s) only to decide whether np.convolve and np.correlate may
      call BLAS. numba's np.convolve then uses its own loop in this process; what needs
      SciPy (np.dot, np.linalg) still imports it when compiled.
    * PyYAML (about 0.05 s): numba.core.config reads a .numba_config.yaml in the working
      directory with it, so it is hidden only when there is no such file.
    """
    global _NUMBA
    if _NUMBA is not None:
        return _NUMBA
    hidden = [name for name in ("scipy", "yaml") if name not in sys.modules]
    if os.path.exists(".numba_config.yaml") and "yaml" in hidden:
        hidden.remove("yaml")
    for name in hidden:
        sys.modules[name] = None
    try:
        import numba
        from numba.core.registry import cpu_target
        cpu_target.target_context.refresh()
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    _NUMBA = numba
    return numba


class _Kernel:
    """A function compiled by numba on its first call (see the module docstring)."""

    def __init__(self, fn, inline=False, allocates=True):
        self.py_func = fn
        self._options = {"cache": True, "nogil": True,
                         "inline": "always" if inline else "never", "_nrt": allocates}
        self._compiled = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def compiled(self):
        """The numba dispatcher (imports numba and compiles, or loads the cache, once)."""
        if self._compiled is None:
            numba = _import_numba()
            self._compiled = numba.njit(**self._options)(self._with_compiled_globals())
        return self._compiled

    def _with_compiled_globals(self):
        """py_func reading the kernels it calls as their numba dispatchers, which numba
        can call directly (and inline), instead of as _Kernel objects."""
        fn = self.py_func
        names = {name: value.compiled() for name, value in fn.__globals__.items()
                 if name in fn.__code__.co_names and isinstance(value, _Kernel)}
        if not names:
            return fn
        copy = types.FunctionType(fn.__code__, {**fn.__globals__, **names}, fn.__name__,
                                  fn.__defaults__, fn.__closure__)
        copy.__qualname__, copy.__module__ = fn.__qualname__, fn.__module__
        return copy

    def __call__(self, *args):
        return self.compiled()(*args)


def kernel(fn=None, *, inline=False, allocates=True):
    """Decorator: fn, compiled with numba on first call. Call it only if available().

    inline=True: kernels that call it get its body inlined (numba's inline="always"); for
    small helpers in inner loops, where a call costs more than the work.
    allocates=False: the kernel allocates no arrays (views of its arguments are fine), so
    numba leaves out its reference counting (numba's _nrt=False): the atomic updates of
    array reference counts around inlined helpers otherwise cost more than a Golomb code.
    numba refuses to compile such a kernel if it does allocate.
    """
    if fn is None:
        return lambda f: _Kernel(f, inline, allocates)
    return _Kernel(fn, inline, allocates)
