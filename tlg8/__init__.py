"""TLG8 codec: images, coding stages, block cost model, reference search, cheap per-block
features, the encoder's default model (the pair selector), training records, file format.

    import tlg8
    rgba = tlg8.read("photo.tlg8")          # (H, W, 3 or 4) uint8 in RGB(A) order
    tlg8.write("copy.tlg8", rgba)           # lossless; the shipped model, <= 16 trials/block

The package imports nothing from the model side (tlg8_multitask, the guide's modules);
only the command-line helper tlg8.cli reaches a trained model, through the model side's
one loader, when a command is given a model file. docs/architecture.md has the layout.
"""
__version__ = "0.2.0"


class Tlg8Error(Exception):
    """Base class of every error this package raises on bad input."""


def read(path, max_pixels=None):
    """A .tlg8 file as an RGB or RGBA uint8 array (H, W, 3|4) (tlg8.codec.read)."""
    from . import codec
    return codec.read(path) if max_pixels is None else codec.read(path, max_pixels)


def write(path, array, search="model", max_trials=None, effort=3):
    """Write an RGB or RGBA uint8 array (H, W, 3|4) as a .tlg8 file (tlg8.codec.write).

    search: "model" (the shipped pair selector; effort 1-5 sets its trials per block and
    the file-bytes pass, max_trials overrides the trials), "reference" (tlgconv's search
    and bytes) or "exhaustive"."""
    from . import codec
    codec.write(path, array, search=search, max_trials=max_trials, effort=effort)
