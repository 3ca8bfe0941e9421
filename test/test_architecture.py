"""The dependency rule: the codec library (tlg8/) imports nothing from the model side;
command-line front ends reach a model only through tlg8.cli, which uses the one loader.
The optional compiler (numba) is imported by tlg8/jit.py alone."""
import ast
import os
import sys
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = set(sys.stdlib_module_names) | {"numpy", "PIL", "tqdm", "matplotlib", "tlg8"}
LOADER = "tlg8_multitask.loader"


def imports(path):
    """(line, top-level module name) of every absolute import in a file, lazy ones too."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


class DependencyRuleTest(unittest.TestCase):
    def test_codec_imports_nothing_from_the_model_side(self):
        found = []
        for name in sorted(os.listdir(os.path.join(REPO, "tlg8"))):
            if not name.endswith(".py"):
                continue
            path = os.path.join(REPO, "tlg8", name)
            for line, module in imports(path):
                if module.split(".")[0] in ALLOWED:
                    continue
                if name == "cli.py" and module == LOADER:
                    continue                    # the one way from a front end to a model
                if name == "jit.py" and module.split(".")[0] == "numba":
                    continue                    # the optional compiler, imported in one place
                found.append(f"tlg8/{name}:{line} imports {module}")
        self.assertEqual(found, [])

    def test_model_side_builds_on_the_codec_only(self):
        allowed = ALLOWED | {"tlg8_multitask"}
        for name in sorted(os.listdir(os.path.join(REPO, "tlg8_multitask"))):
            if name.endswith(".py"):
                for line, module in imports(os.path.join(REPO, "tlg8_multitask", name)):
                    self.assertIn(module.split(".")[0], allowed, f"{name}:{line}")

    def test_the_loader_maps_every_format_and_imports_no_model(self):
        from tlg8_multitask import loader
        from tlg8_multitask.multitask import MODEL_FORMAT
        from tlg8.selector import SELECTOR_FORMAT
        self.assertEqual(set(loader.FORMATS), {MODEL_FORMAT, SELECTOR_FORMAT})
        self.assertEqual([m for _, m in imports(loader.__file__) if "multitask." in m
                          or "selector" in m], [])


if __name__ == "__main__":
    unittest.main()
