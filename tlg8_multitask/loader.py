"""The one loader: a model file's `format` -> the function that reads that kind of model.

    model = load_model("out/selector/pair_selector.npz")   # any model file

Every model class answers the same interface (docs/architecture.md), so nothing else needs
to know which kind it got. Adding a model kind is one module with a `load(path)` and one
line in FORMATS. Readers are named as "module:function" and imported when a file of their
format is loaded, so this module imports no model module itself (no import cycle with the
models, whose `load` classmethods come here).
"""
import importlib

from tlg8.modelfile import RETRAIN, ModelFormatError, read_format

FORMATS = {
    "tlg8-pair-selector/1": "tlg8.selector:load",
    "tlg8-multitask-model/1": "tlg8_multitask.multitask:load",
}


def load_model(path):
    """The model in an NPZ file, whatever its kind; ModelFormatError (naming the file and
    the reason) for any file that is not a model this version reads; FileNotFoundError
    when there is no such file."""
    fmt = read_format(path)
    if fmt not in FORMATS:
        raise ModelFormatError(f"{path}: unknown model format {fmt!r} (this version reads "
                               f"{', '.join(FORMATS)}); {RETRAIN}")
    module, function = FORMATS[fmt].split(":")
    return getattr(importlib.import_module(module), function)(path)

