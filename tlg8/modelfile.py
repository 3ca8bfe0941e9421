"""Reading a model NPZ safely, for every model format.

A model file is untrusted input: it may be no zip at all, a truncated one, a zip bomb, an
array of another shape than its metadata says, or NaN weights. `ModelFile` opens it without
reading any array, reads each array's shape and dtype from its .npy header and checks them
against what the caller expects *before* reading the data (so a 100 KB file cannot make the
loader allocate gigabytes), and refuses non-finite values. Every problem is a
ModelFormatError naming the file and the reason.
"""
import json
import os
import tokenize
import zipfile
import zlib

import numpy as np

from . import Tlg8Error

MAX_ARRAY_ELEMENTS = 1 << 24       # 64 MB of float32; the largest model here has ~1.2M
MAX_TEXT_CHARS = 1 << 20           # metadata JSON and format strings
RETRAIN = ("re-train with `python3 train_multitask.py DATA --export-dir DIR` to get a model "
           "in the current format")
# What zipfile and the .npy reader raise on damaged data (RuntimeError: encrypted members;
# NotImplementedError: unknown compression or zip version).
# The .npy header is a Python literal that NumPy parses: a damaged one also raises what the
# tokenizer and literal_eval raise.
_ZIP_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
               NotImplementedError, RuntimeError, SyntaxError, tokenize.TokenError,
               TypeError, KeyError)
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


class ModelFormatError(Tlg8Error):
    """A file is not a model this version can read; the message names the file and why."""


class _HeaderOnly(Exception):
    pass


class ModelFile:
    """An opened model NPZ: `format`, `files`, and checked reads (array, text, json)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no such model file")
        try:
            self._zip = zipfile.ZipFile(self.path)
            names = self._zip.namelist()
        except _ZIP_ERRORS as e:
            raise self.error(f"not a model NPZ file ({e}); {RETRAIN}") from None
        self.files = [n[:-4] for n in names if n.endswith(".npy")]
        if "format" not in self.files:
            self.close()
            raise self.error(f"not a model NPZ file of this version (it has no 'format' "
                             f"entry); {RETRAIN}")
        self.format = self.text("format")

    def error(self, reason):
        return ModelFormatError(f"{self.path}: {reason}")

    def close(self):
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self, key, check):
        """The array `key` after check(shape, dtype) has accepted its header."""
        if key not in self.files:
            raise self.error(f"missing array {key!r}")
        try:
            with self._zip.open(key + ".npy") as f:
                version = np.lib.format.read_magic(f)
                if version not in _HEADER_READERS:
                    raise self.error(f"array {key!r} has .npy version {version}")
                shape, fortran, dtype = _HEADER_READERS[version](f)
                check(shape, dtype)
                count = int(np.prod(shape, dtype=np.int64))
                data = f.read(count * dtype.itemsize)
        except (ModelFormatError, _HeaderOnly):
            raise
        except _ZIP_ERRORS as e:
            raise self.error(f"array {key!r} cannot be read ({e})") from None
        if len(data) != count * dtype.itemsize:
            raise self.error(f"array {key!r} is truncated")
        value = np.frombuffer(data, dtype)
        return value.reshape(shape[::-1]).T if fortran else value.reshape(shape)

    def shape(self, key):
        """The shape of array `key`, from its header alone."""
        found = []

        def check(shape, dtype):
            found.append(shape)
            raise _HeaderOnly()
        try:
            self._read(key, check)
        except _HeaderOnly:
            pass
        return found[0]

    def array(self, key, shape, dtype=np.float32):
        """A numeric array of exactly `shape` (None: any length on that axis, within the
        size limit), as `dtype`, all finite."""
        def check(got, got_dtype):
            if got_dtype.kind not in "fiu":
                raise self.error(f"array {key!r} has dtype {got_dtype}, not numbers")
            if len(got) != len(shape) or any(w is not None and g != w
                                               for g, w in zip(got, shape)):
                raise self.error(f"array {key!r} has shape {got}, expected "
                                 f"{tuple('any' if w is None else w for w in shape)}")
            if np.prod(got, dtype=np.float64) > MAX_ARRAY_ELEMENTS:
                raise self.error(f"array {key!r} of shape {got} is larger than any model")
        value = self._read(key, check)
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.array(value, dtype, order="C")
        if (value.dtype.kind == "f" and not np.isfinite(value).all()) or \
                (out.dtype.kind == "f" and not np.isfinite(out).all()):
            raise self.error(f"array {key!r} has non-finite values (NaN or inf) or values "
                             f"beyond {np.dtype(dtype).name}")
        if out.dtype.kind in "iu" and not np.array_equal(out, value):
            raise self.error(f"array {key!r} has values beyond {np.dtype(dtype).name}")
        return out

    def text(self, key):
        """A string stored as a 0-d unicode array."""
        def check(got, got_dtype):
            if got != () or got_dtype.kind != "U" or got_dtype.itemsize > 4 * MAX_TEXT_CHARS:
                raise self.error(f"entry {key!r} is not a string")
        return str(self._read(key, check)[()])

    def texts(self, key):
        """A list of strings stored as a 1-D unicode array."""
        def check(got, got_dtype):
            if len(got) != 1 or got_dtype.kind != "U" or \
                    got[0] * got_dtype.itemsize > 4 * MAX_TEXT_CHARS:
                raise self.error(f"entry {key!r} is not a list of strings")
        return [str(v) for v in self._read(key, check)]

    def json(self, key):
        try:
            return json.loads(self.text(key))
        except json.JSONDecodeError as e:
            raise self.error(f"entry {key!r} is not JSON ({e})") from None


def read_format(path):
    """The `format` string of a model NPZ (ModelFormatError if it has none)."""
    with ModelFile(path) as f:
        return f.format
