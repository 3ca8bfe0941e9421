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

Kernels that Python calls directly can instead be exported with a signature (`export`):
their module's exports are compiled once ahead of time into one extension module, which
later processes load in milliseconds without importing numba (see below).
"""

import importlib.util
import os
import sys
import time
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


# ---------------------------------------------------------------------------------------
# Exported kernels: a module's kernels compiled ahead of time into one extension module
#
# numba's JIT costs every process that uses it about 0.6 s and 110 MB before the first
# compiled call (LLVM and numba's typing tables start up even when the code comes from
# its cache), more than the whole default encode of a small image. Kernels declared with
# `export(signature)` are instead compiled once, with numba's ahead-of-time compiler
# (numba.pycc), into a plain extension module of the whole kernel module, cached on disk;
# later processes load it like any extension (a few ms, no LLVM, no numba import). The
# first call of any of them builds the library in a child process (a C compiler is
# needed, as for any extension), or, if that fails, compiles the kernels with numba's JIT
# (cache=True) as `kernel` does. TLG8_NO_AOT=1 skips the ahead-of-time library (then JIT);
# TLG8_CACHE_DIR sets where the library is kept (default: __pycache__ beside the module,
# else ~/.cache/tlg8).

_AOT_DISABLED = os.environ.get("TLG8_NO_AOT", "") not in ("", "0")
_LIBRARIES = {}
_BUILD_VERSION = "1"        # bump when the way libraries are built changes


class _Export:
    """A kernel with a numba signature, part of its module's library (see above)."""

    def __init__(self, fn, signature, library):
        self.py_func = fn
        self.signature = signature
        self._library = library
        self._compiled = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        if self._compiled is None:
            self._library.resolve()
        if self._check:
            self._check_args(args)
        return self._compiled(*args)

    def _check_args(self, args):
        """TypeError unless the arrays match the signature. numba's JIT refuses others;
        an ahead-of-time function would read a non-contiguous array as if it were one."""
        if self._specs is None:
            self._specs = _array_specs(self.signature)
        if len(args) != len(self._specs):
            raise TypeError(f"{self.__name__} takes {len(self._specs)} arguments, "
                            f"not {len(args)}")
        for k, (arg, spec) in enumerate(zip(args, self._specs)):
            if spec is None:
                continue
            dtype, ndim, contiguous = spec
            if not (isinstance(arg, _ndarray()) and arg.dtype == dtype and
                    arg.ndim == ndim and (arg.flags.c_contiguous or not contiguous)):
                raise TypeError(f"{self.__name__}: argument {k} must be a "
                                f"{'C-contiguous ' if contiguous else ''}{dtype} array "
                                f"of {ndim} dimensions, not {getattr(arg, 'dtype', type(arg))}"
                                f" {getattr(arg, 'shape', '')}")

    _check = True
    _specs = None


def _ndarray():
    import numpy as np
    return np.ndarray


def _array_specs(signature):
    """Per argument of a numba signature string, (dtype, ndim, C-contiguous) for arrays
    ("int16[:, ::1]") and None for scalars."""
    import numpy as np
    inner = signature[signature.index("(") + 1:signature.rindex(")")]
    args, depth, part = [], 0, ""
    for ch in inner:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            args.append(part.strip())
            part = ""
        else:
            part += ch
    if part.strip():
        args.append(part.strip())
    specs = []
    for arg in args:
        if "[" not in arg:
            specs.append(None)
            continue
        name, dims = arg[:arg.index("[")].strip(), arg[arg.index("[") + 1:-1].split(",")
        specs.append((np.dtype(name), len(dims), dims[-1].strip() == "::1"))
    return specs


class _Library:
    """The exported kernels of one module and how they were compiled ("aot" or "jit")."""

    def __init__(self, module):
        self.module = module
        self.exports = {}
        self.mode = None

    def resolve(self):
        if self.mode is None:
            functions, mode = None, "jit"
            if not _AOT_DISABLED:
                functions = self._aot()
                mode = "aot"
            if functions is None:
                functions, mode = self._jit(), "jit"
            for name, fn in functions.items():
                self.exports[name]._compiled = fn
            self.mode = mode
        return self.mode

    # -- the ahead-of-time library -----------------------------------------------------

    def _name(self):
        """Extension module name: the module's last part and a hash of everything the
        compiled code depends on (sources, numba, Python, CPU)."""
        import hashlib
        import importlib.machinery
        digest = hashlib.sha256()
        for path in (sys.modules[self.module].__file__, __file__):
            with open(path, "rb") as f:
                digest.update(f.read())
        spec = importlib.util.find_spec("numba")
        numba_stamp = os.stat(spec.origin).st_mtime_ns if spec and spec.origin else 0
        for part in (_BUILD_VERSION, spec.origin if spec else "", numba_stamp, sys.version,
                     importlib.machinery.EXTENSION_SUFFIXES[0], _cpu_identity()):
            digest.update(repr(part).encode())
        return f"_{self.module.rsplit('.', 1)[-1]}_{digest.hexdigest()[:16]}"

    def _aot(self):
        """The exported functions from the cached library, built first if missing; None
        if it cannot be built or loaded."""
        import importlib.machinery
        import warnings
        name = self._name()
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        path = None
        for directory in _cache_dirs(sys.modules[self.module].__file__):
            candidate = os.path.join(directory, name + suffix)
            if os.path.exists(candidate):
                path = candidate
                break
        if path is None:
            path, error = _build(self.module, name, suffix)
            if path is None:
                warnings.warn(f"tlg8: the compiled kernels of {self.module} could not be "
                              f"built ahead of time ({error}); numba's JIT compiles them "
                              f"in every process instead", RuntimeWarning, stacklevel=3)
                return None
        try:
            loader = importlib.machinery.ExtensionFileLoader(name, path)
            spec = importlib.util.spec_from_file_location(name, path, loader=loader)
            library = importlib.util.module_from_spec(spec)
            loader.exec_module(library)
            return {export: getattr(library, export) for export in self.exports}
        except (ImportError, AttributeError, OSError) as e:
            warnings.warn(f"tlg8: cannot load {path} ({e}); numba's JIT compiles the "
                          f"kernels instead", RuntimeWarning, stacklevel=3)
            return None

    # -- numba's JIT -------------------------------------------------------------------

    def _jit(self):
        numba = _import_numba()
        compiled = {}
        return {name: numba.njit(export.signature, cache=True, nogil=True)(
                    _rebound(export.py_func, compiled, jit=True))
                for name, export in self.exports.items()}


def export(signature):
    """Decorator: fn becomes a kernel of its module's library (see above), with the numba
    signature `signature` (e.g. "int64(int16[:, ::1], int64)"): callers must pass exactly
    these types (arrays of these dtypes, C-contiguous where the signature says ::1).
    Plain `kernel` functions it calls are compiled into it. Call it only if available()."""
    def decorate(fn):
        library = _LIBRARIES.setdefault(fn.__module__, _Library(fn.__module__))
        library.exports[fn.__name__] = _Export(fn, signature, library)
        return library.exports[fn.__name__]
    return decorate


def load(module):
    """Compile or load the library of `module` now (its kernels' first call would): "aot"
    or "jit", how it was compiled. Worker processes forked afterwards inherit it."""
    import importlib
    importlib.import_module(module)
    return _LIBRARIES[module].resolve()


def _rebound(fn, compiled, jit):
    """fn with the kernels it calls (globals it names that are _Kernel or _Export
    objects) replaced by numba dispatchers, as numba needs to compile the calls.
    `compiled` (function -> dispatcher) is shared by all functions of one build, so each
    helper is compiled once."""
    numba = _import_numba()
    env = dict(fn.__globals__)
    for key in fn.__code__.co_names:
        value = fn.__globals__.get(key)
        if isinstance(value, (_Kernel, _Export)):
            inner = value.py_func
            if inner not in compiled:
                # Dispatchers compile lazily, when their caller is typed: the helper's own
                # globals are complete by then.
                options = dict(getattr(value, "_options", {"nogil": True}), cache=jit)
                compiled[inner] = numba.njit(**options)(_rebound(inner, compiled, jit))
            env[key] = compiled[inner]
    out = types.FunctionType(fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__)
    out.__qualname__ = fn.__qualname__
    out.__module__ = fn.__module__
    return out


def _cache_dirs(module_file):
    """Where libraries are kept, in order of preference."""
    if os.environ.get("TLG8_CACHE_DIR"):
        return [os.environ["TLG8_CACHE_DIR"]]
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(os.path.dirname(os.path.abspath(module_file)), "__pycache__"),
            os.path.join(home, "tlg8")]


def _cpu_identity():
    """What the compiled code was tuned for: it is built for this machine's CPU, so a
    cache shared with another kind of machine must not reuse it. Linux: the first CPU's
    model and feature flags; elsewhere the machine type (then built for a generic CPU)."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            head = f.read(1 << 16).split(b"\n\n", 1)[0]
        fields = dict(line.split(b":", 1) for line in head.splitlines() if b":" in line)
        return b"|".join(fields.get(key, b"").strip() for key in
                         (b"vendor_id", b"model name", b"flags")).decode("ascii", "replace")
    except OSError:
        import platform
        return "generic " + platform.machine()


def _build(module, name, suffix):
    """Build the library in a child process (numba and the C toolchain print and load a
    lot, none of which this process needs). Returns (path, None) or (None, reason)."""
    import subprocess
    reasons = []
    for directory in _cache_dirs(sys.modules[module].__file__):
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            reasons.append(f"{directory}: {e.strerror or e}")
            continue
        if not os.access(directory, os.W_OK):
            reasons.append(f"{directory}: not writable")
            continue
        path = os.path.join(directory, name + suffix)
        lock = _take_lock(path)
        if lock is None:
            return path, None                 # another process built it meanwhile
        try:
            # The child imports the package from where this process found it.
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                          if p]))
            started = _notice(f"tlg8: compiling the kernels of {module}, once per install "
                              f"(about a minute)...")
            done = subprocess.run([sys.executable, "-m", "tlg8.jit", module, name,
                                   directory], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env)
            if started is not None:
                _notice(f"tlg8: compiled in {time.monotonic() - started:.0f} s"
                        if done.returncode == 0 else "tlg8: compiling failed")
        finally:
            os.close(lock)
            try:
                os.remove(path + ".lock")
            except OSError:
                pass
        if done.returncode == 0 and os.path.exists(path):
            return path, None
        lines = done.stdout.strip().splitlines()
        return None, lines[-1] if lines else f"exit status {done.returncode}"
    return None, "; ".join(reasons) or "no cache directory"


def _notice(line):
    """One line on stderr when it is a terminal (where someone waits for the command: a
    build takes most of a minute, a first command otherwise seems to hang); returns the
    time it was written, or None when it was not."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return None
    print(line, file=sys.stderr, flush=True)
    return time.monotonic()


BUILD_LOCK_STALE = 15 * 60      # seconds: a build lock older than this is abandoned


def _take_lock(path):
    """The build lock of library `path` (a file descriptor), or None once another process
    holding it has built the library: processes started together (--jobs workers, test
    runners) then build it once, not each."""
    lock = path + ".lock"
    while True:
        try:
            return os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        while os.path.exists(lock):
            if os.path.exists(path):
                return None
            try:
                if time.time() - os.stat(lock).st_mtime > BUILD_LOCK_STALE:
                    os.remove(lock)           # its builder died: take over
                    break
            except OSError:
                break
            time.sleep(0.2)
        if os.path.exists(path):
            return None


def _build_main(module, name, directory):
    """`python3 -m tlg8.jit MODULE NAME DIR`: compile MODULE's exported kernels into the
    extension module NAME in DIR (written under a temporary name, then renamed, so that
    processes building at the same time never see half a file). In the module's own
    __pycache__ older libraries of the module are removed (a shared cache may hold other
    versions' ones)."""
    import glob
    import importlib
    import importlib.machinery
    import shutil
    import tempfile
    from numba.pycc import CC
    importlib.import_module(module)
    library = _LIBRARIES[module]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    cc = CC(name, source_module=module)
    if not _cpu_identity().startswith("generic"):
        # This machine's CPU (the cache key names it), with exactly the features it
        # reports, as numba's JIT compiles: a CPU model name alone may imply features a
        # virtual machine does not offer.
        from numba.core import codegen
        if hasattr(codegen.CPUCodegen, "_get_host_cpu_features"):
            codegen.AOTCPUCodegen._customize_tm_features = \
                codegen.CPUCodegen._get_host_cpu_features
            cc.target_cpu = "host"
    compiled = {}
    for export_name, export in library.exports.items():
        cc.export(export_name, export.signature)(_rebound(export.py_func, compiled, False))
    build = tempfile.mkdtemp(prefix=name, dir=directory)
    try:
        cc.output_dir = build
        cc.compile()
        target = os.path.join(directory, name + suffix)
        os.replace(os.path.join(build, name + suffix), target)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    own = os.path.join(os.path.dirname(os.path.abspath(sys.modules[module].__file__)),
                       "__pycache__")
    if os.path.abspath(directory) != own:
        return
    prefix = name.rsplit("_", 1)[0] + "_"
    for old in glob.glob(os.path.join(directory, prefix + "*" + suffix)):
        if old != target and len(os.path.basename(old)) == len(name + suffix):
            try:
                os.remove(old)
            except OSError:
                pass


if __name__ == "__main__":
    # Run as a script this file is module __main__, not tlg8.jit, whose registry the
    # kernel modules fill.
    from tlg8 import jit
    jit._build_main(*sys.argv[1:4])
