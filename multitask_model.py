"""The guide's `multitask_model` module: the multitask MLP and its features.

    from multitask_model import MultiTaskModel
    model = MultiTaskModel.load("out/multitask/multitask_best.npz")

The code lives in tlg8_multitask.multitask (the model side's package); this module gives it
the name the guide uses.
"""
from tlg8_multitask.multitask import *  # noqa: F401,F403
