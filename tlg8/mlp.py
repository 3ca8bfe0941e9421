"""Inference of the small ReLU MLPs that the encoder's models are made of (float32).

Parameters are a flat list [w0, b0, w1, b1, ...]: w (fan_in, fan_out), b (fan_out,), a ReLU
after every layer but the last. Training (the backward pass, the optimizer) is on the model
side (tlg8_multitask.nn); the encoder only needs this forward pass.
"""
import numpy as np


def forward(params, x):
    """(output (..., n_out), hidden activations [(..., n_hidden), ...]) of x (..., n_in)."""
    hidden = []
    h = x
    for i in range(0, len(params) - 2, 2):
        h = h @ params[i]
        h += params[i + 1]
        np.maximum(h, 0, out=h)
        hidden.append(h)
    out = h @ params[-2]
    out += params[-1]
    return out, hidden
