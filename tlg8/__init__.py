"""TLG8 codec core: images, coding stages, block cost model, reference search, file format.

Nothing in this package imports the ML side (multitask_model, beam_search_runtime,
train_multitask); dependencies point from the ML scripts to here.
"""


class Tlg8Error(Exception):
    """Base class of every error this package raises on bad input."""
