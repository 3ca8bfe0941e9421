"""TLG8 codec core: images, coding stages, block cost model, reference search, cheap
per-block features, training records, file format.

The core modules import nothing from the ML side (multitask_model, pair_selector,
beam_search_runtime, train_multitask); dependencies point from the ML scripts to here.
Two command-line front ends in this package are the exception, because what they run is a
model: `tlg8.encode --model` (imports the model lazily, only on that path) and
`tlg8.evaluate` (measures models against the reference search).
"""


class Tlg8Error(Exception):
    """Base class of every error this package raises on bad input."""
