"""The building blocks both models train with: AdamW, and a small ReLU MLP (init,
backward pass, a listwise/row-wise softmax fit). Inference is tlg8.mlp.forward.

Like scikit-learn's _stochastic_optimizers: the optimizer is a tiny class with one update
method over a list of parameter arrays.
"""
import numpy as np

from tlg8.mlp import forward


class AdamW:
    """AdamW (decoupled weight decay), the update of torch.optim.AdamW.

    Decay applies to the weight matrices only (`decay` flags), not to biases.
    """

    def __init__(self, params, lr=1e-3, weight_decay=1e-4, betas=(0.9, 0.999), eps=1e-8,
                 decay=None):
        self.lr = lr
        self.weight_decay = weight_decay
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.decay = [p.ndim > 1 for p in params] if decay is None else list(decay)
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.tmp = [np.empty_like(p) for p in params]
        self.steps = 0

    def update(self, params, grads):
        """One step: update `params` in place from `grads` (same order as at construction)."""
        self.steps += 1
        b1, b2 = self.beta1, self.beta2
        step = self.lr / (1 - b1 ** self.steps)
        inv_bc2 = 1 / np.sqrt(1 - b2 ** self.steps)
        for p, g, m, v, tmp, decay in zip(params, grads, self.m, self.v, self.tmp, self.decay):
            if decay and self.weight_decay:
                p *= np.float32(1 - self.lr * self.weight_decay)
            m *= np.float32(b1)
            np.multiply(g, np.float32(1 - b1), out=tmp)
            m += tmp
            v *= np.float32(b2)
            np.multiply(g, g, out=tmp)
            tmp *= np.float32(1 - b2)
            v += tmp
            np.sqrt(v, out=tmp)
            tmp *= np.float32(inv_bc2)
            tmp += np.float32(self.eps)
            np.divide(m, tmp, out=tmp)
            tmp *= np.float32(step)
            p -= tmp


def mlp_init(n_in, n_hidden, n_out, seed):
    """[w1, b1, w2, b2] of a one-hidden-layer MLP: He init for the ReLU layer, LeCun for
    the output."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n_in, n_hidden)) * np.sqrt(2 / n_in)).astype(np.float32),
            np.zeros(n_hidden, np.float32),
            (rng.standard_normal((n_hidden, n_out)) * np.sqrt(1 / n_hidden)).astype(np.float32),
            np.zeros(n_out, np.float32)]


def mlp_backward(params, x, h, grad_out):
    """Gradients of [w1, b1, w2, b2] for d(loss)/d(output) = grad_out (rows flattened)."""
    w1, _, w2, _ = params
    x2 = x.reshape(-1, x.shape[-1])
    h2 = h.reshape(-1, h.shape[-1])
    g2 = grad_out.reshape(-1, grad_out.shape[-1])
    gh = g2 @ w2.T
    gh *= h2 > 0
    return [x2.T @ gh, gh.sum(0), h2.T @ g2, g2.sum(0)]


def softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def bits_targets(bits, temperature):
    """Soft targets from bits: softmax of -(bits - least bits) / temperature along the last
    axis, so near-ties share the probability and a choice 10 bits worse gets almost none."""
    bits = np.asarray(bits, np.float32)
    return softmax(-(bits - bits.min(-1, keepdims=True)) / np.float32(temperature))


def fit_mlp(x, targets, n_hidden, epochs, lr=2e-3, weight_decay=1e-4, batch=64, seed=0,
            listwise=False, progress=None, init=None):
    """Train a one-hidden-layer MLP with softmax cross-entropy against soft targets.

    listwise=False: x (R, F), targets (R, n_out), one softmax per row.
    listwise=True: x (B, K, F), targets (B, K), one scalar score per row and one softmax
    over the K rows of each group (the pair ranker).
    init: (params, (mean, std)) of a trained MLP to fine-tune (its standardisation is kept).
    Returns (params, (mean, std)) with the standardisation of x.
    """
    for epoch, loss, params, scaler in mlp_epochs(x, targets, n_hidden, epochs, lr,
                                                  weight_decay, batch, seed, listwise, init):
        if progress:
            progress(epoch, loss)
    return finished(params, x), scaler


def finished(params, x):
    """A copy of trained params ready for inference.

    Inputs constant in training (e.g. the component-3 columns when every training image
    has C = 3) taught the model nothing: their first-layer weights are only the random
    initialisation. Zero them so that such inputs cannot add noise at inference (ARGB)."""
    params = [p.copy() for p in params]
    params[0][x.reshape(-1, x.shape[-1]).std(0) <= 1e-6] = 0
    return params


def mlp_epochs(x, targets, n_hidden, epochs, lr=2e-3, weight_decay=1e-4, batch=64, seed=0,
               listwise=False, init=None):
    """fit_mlp one epoch at a time: yields (epoch, mean loss, params, (mean, std)) after
    each epoch; params are the live arrays (copy them to keep a snapshot; `finished`
    makes one for inference). What a trainer that validates every epoch iterates over."""
    n_in = x.shape[-1]
    flat = x.reshape(-1, n_in)
    if init:
        params = [np.array(p, np.float32) for p in init[0]]
        mean, std = init[1]
    else:
        mean = flat.mean(0).astype(np.float32)
        std = flat.std(0).astype(np.float32)
        std = np.where(std > 1e-6, std, np.float32(1))
        params = mlp_init(n_in, n_hidden, 1 if listwise else targets.shape[-1], seed)
    xs = ((x - mean) / std).astype(np.float32)
    opt = AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(xs))
        total = 0.0
        for lo in range(0, len(order), batch):
            idx = order[lo:lo + batch]
            xb, tb = xs[idx], targets[idx]
            out, (h,) = forward(params, xb)
            if listwise:
                out = out[..., 0]
            p = softmax(out)
            total += float(-(tb * np.log(p + 1e-12)).sum())
            grad = (p - tb) / np.float32(len(idx))
            if listwise:
                grad = grad[..., None]
            opt.update(params, mlp_backward(params, xb, h, grad))
        yield epoch, total / len(xs), params, (mean, std)


def cross_entropy(params, scaler, x, targets, listwise=False):
    """Mean softmax cross-entropy of an MLP (as fit_mlp trains it) on x against targets."""
    mean, std = scaler
    out = forward(params, ((x - mean) / std).astype(np.float32))[0]
    if listwise:
        out = out[..., 0]
    z = out - out.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-(targets * logp).sum() / len(x))
