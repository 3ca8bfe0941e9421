"""tlg8.jit: TLG8_NO_JIT, kernels calling kernels, allocates=False, numba's start-up, the
notice of a build."""
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_NUMBA = importlib.util.find_spec("numba") is not None


def python(code, **env):
    """stdout of a fresh interpreter running code from the repository."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, **env})
    if result.returncode:
        raise AssertionError(result.stderr)
    return result.stdout.split()


class Switch(unittest.TestCase):
    def test_no_jit_decodes_with_numpy_and_never_imports_numba(self):
        out = python("""
            import sys
            import numpy as np
            from tlg8 import jit
            from tlg8.tlgfile import decode_tlg8, encode_tlg8
            data = encode_tlg8(np.zeros((9, 9, 3), np.uint8), np.zeros((4, 5), np.int64))
            decode_tlg8(data)
            print(jit.available(), "numba" in sys.modules, "tlg8.decode_kernels" in sys.modules)
            """, TLG8_NO_JIT="1")
        self.assertEqual(out, ["False", "False", "False"])

    @unittest.skipUnless(HAVE_NUMBA, "numba not installed")
    def test_available_with_numba(self):
        self.assertEqual(python("from tlg8 import jit; print(jit.available())",
                                TLG8_NO_JIT="0"), ["True"])


@unittest.skipUnless(HAVE_NUMBA, "numba not installed")
class Kernels(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def module(self, source):
        """Run source as a module in a temporary directory (its numba cache goes there)."""
        with open(os.path.join(self.dir.name, "kernels_under_test.py"), "w") as f:
            f.write(textwrap.dedent(source))
        return python(f"""
            import sys
            sys.path[:0] = [{self.dir.name!r}, {REPO!r}]
            import kernels_under_test
            """, TLG8_NO_JIT="0")

    def test_kernels_call_and_inline_kernels(self):
        out = self.module("""
            import numpy as np
            from tlg8 import jit

            @jit.kernel(inline=True, allocates=False)
            def twice(a, i):
                return 2 * a[i]

            @jit.kernel(allocates=False)
            def total(a):
                s = 0
                for i in range(len(a)):
                    s += twice(a, i)
                return s

            print(total(np.arange(10)), total.compiled().__class__.__name__)
            """)
        self.assertEqual(out, ["90", "CPUDispatcher"])

    def test_allocates_false_refuses_an_allocation(self):
        out = self.module("""
            import numpy as np
            from tlg8 import jit

            @jit.kernel(allocates=False)
            def allocate(n):
                return np.zeros(n)[0]

            @jit.kernel
            def allowed(n):
                return np.zeros(n)[0]

            print(allowed(3))
            try:
                allocate(3)
            except Exception as e:         # numba's compile error, nothing else
                print("refused" if type(e).__module__.startswith("numba") else repr(e))
            """)
        self.assertEqual(out, ["0.0", "refused"])

    def test_scipy_and_yaml_hidden_only_while_numba_starts(self):
        out = python("""
            import sys
            from tlg8 import jit
            jit._import_numba()
            print("scipy" in sys.modules, "yaml" in sys.modules)
            for name in ("scipy.linalg", "yaml"):
                try:
                    __import__(name)
                    print("importable")
                except ImportError:
                    print("not-installed")
            """, TLG8_NO_JIT="0")
        self.assertEqual(out[:2], ["False", "False"])
        # ... and importable afterwards when installed (the stand-ins are gone)
        self.assertEqual(out[2:], ["importable" if importlib.util.find_spec(name) else
                                   "not-installed" for name in ("scipy", "yaml")])


if __name__ == "__main__":
    unittest.main()


class BuildNotice(unittest.TestCase):
    """The first command after an install compiles for most of a minute: on a terminal
    it says so, and how long it took; elsewhere (logs, pipes, tests) it prints nothing."""

    def build(self, stderr, status=0):
        from tlg8 import encode_kernels, jit  # noqa: F401  (the module built, imported)
        with tempfile.TemporaryDirectory() as tmp:
            def fake_compiler(cmd, **options):      # the child that builds the library
                if status == 0:
                    open(os.path.join(cmd[-1], "lib_x.so"), "wb").close()
                return subprocess.CompletedProcess(cmd, status, "no C compiler\n")
            with mock.patch.object(jit, "_cache_dirs", lambda _: [tmp]), \
                    mock.patch.object(subprocess, "run", fake_compiler), \
                    mock.patch.object(sys, "stderr", stderr):
                return jit._build("tlg8.encode_kernels", "lib_x", ".so")

    def test_on_a_terminal(self):
        class Terminal(io.StringIO):
            def isatty(self):
                return True
        out = Terminal()
        path, error = self.build(out)
        self.assertTrue(path.endswith("lib_x.so"), path)
        self.assertIsNone(error)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("compiling the kernels of tlg8.encode_kernels, once per install", lines[0])
        self.assertRegex(lines[1], r"^tlg8: compiled in \d+ s$")
        out = Terminal()
        self.assertEqual(self.build(out, status=1), (None, "no C compiler"))
        self.assertEqual(out.getvalue().splitlines()[1], "tlg8: compiling failed")

    def test_elsewhere_nothing(self):
        out = io.StringIO()
        path, _ = self.build(out)
        self.assertIsNotNone(path)
        self.assertEqual(out.getvalue(), "")
