"""The multitask model: a NumPy MLP that predicts the reference encoder's choices per block.

Six softmax heads share one ReLU trunk (the head table tlg8.heads.HEADS). Inputs are the 259 block features of
`block_features`; the model standardises them itself with the training split's mean/std
(`feature_scaler`), so callers pass raw features:

    model = MultiTaskModel.load("out/multitask/multitask_best.npz")
    topk = model.predict_topk(features, k=2)     # {"head_predictor": [(id, logprob), ...]}

Everything is float32 and plain arrays; training (train_multitask.py) uses
`MultiTaskModel.train_batch` with the AdamW of tlg8_multitask.nn. The model answers the
model interface of docs/architecture.md; its trial strategy is the margin beam search of
tlg8_multitask.beam.
"""
import json
import os

import numpy as np

from tlg8.fileio import write_file
from tlg8.heads import (HEAD_NAMES, HEAD_OFFSETS, HEAD_SIZES, HEADS, N_OUTPUTS,  # noqa: F401
                        head_labels, head_topk)       # (the guide's names, served from here)
from tlg8.image import BLOCK, block_grid
from tlg8.mlp import forward
from tlg8.modelfile import RETRAIN, ModelFile, ModelFormatError  # noqa: F401 (raised by load)
from tlg8.records import BadRecord, check_record, decode_record
from tlg8.selector import check_k
from tlg8.stages import MAX_COMPONENTS

from . import beam, loader
from .beam import build_filter_candidates, filter_candidate_arrays  # noqa: F401 (guide)
from .nn import AdamW

# Feature layout "block-pixels-v1": the block's samples / 255 in (y, x, c) order, zero-padded
# to 8 x 8 x 4 in the dump's component order, then [w / 8, h / 8, C / 4]. Models record
# their layout name in the NPZ; FEATURE_LAYOUTS (below image_features) maps each name to
# its feature count and its image feature builder, so later layouts can coexist.
FEATURE_LAYOUT = "block-pixels-v1"
N_PIXEL_FEATURES = BLOCK * BLOCK * MAX_COMPONENTS
N_FEATURES = N_PIXEL_FEATURES + 3
_SIZE_SCALE = np.array([BLOCK, BLOCK, MAX_COMPONENTS], np.float32)

MODEL_FORMAT = "tlg8-multitask-model/1"
DEFAULT_HIDDEN = (1024, 512, 256)
MAX_LAYERS = 16
MAX_WIDTH = 8192


# ---------------------------------------------------------------------------------------
# Labels and features

def block_features(pixels, sizes, out=None):
    """Raw features (N, 259) float32 of blocks in the tlg8.records layout.

    pixels: (N, 8, 8, 4) uint8, zero outside each block; sizes: (N, 3) = w, h, C.
    """
    n = len(pixels)
    if out is None:
        out = np.empty((n, N_FEATURES), np.float32)
    np.divide(pixels.reshape(n, N_PIXEL_FEATURES), np.float32(255), out=out[:, :N_PIXEL_FEATURES])
    np.divide(sizes, _SIZE_SCALE, out=out[:, N_PIXEL_FEATURES:])
    return out


def pad_block(block):
    """A block's samples (h, w, C) as the padded (8, 8, 4) uint8 array and its (w, h, C)."""
    block = np.asarray(block)
    if block.ndim != 3 or not (1 <= block.shape[0] <= BLOCK and 1 <= block.shape[1] <= BLOCK
                                and 3 <= block.shape[2] <= MAX_COMPONENTS):
        raise ValueError(f"a block is (h, w, C) with h, w in 1..8 and C in 3..4, "
                         f"not shape {block.shape}")
    if block.dtype != np.uint8 and (block.min() < 0 or block.max() > 255):
        raise ValueError("block samples must be 0..255")
    h, w, ncomp = block.shape
    padded = np.zeros((BLOCK, BLOCK, MAX_COMPONENTS), np.uint8)
    padded[:h, :w, :ncomp] = block
    return padded, (w, h, ncomp)


def features_from_block(block):
    """The 259 raw features of one block given as its samples (h, w, C), 0..255."""
    padded, size = pad_block(block)
    return block_features(padded[None], np.array([size]))[0]


def features_from_record(record):
    """The 259 raw features of one training record: a decoded JSON dict or a JSONL line."""
    try:
        rec = decode_record(record) if isinstance(record, (str, bytes)) else check_record(record)
    except BadRecord as e:
        raise ValueError(f"not a valid training record: {e.args[1]}") from None
    w, h, ncomp = rec["size"]
    return features_from_block(np.array(rec["pixels"], np.uint8).reshape(h, w, ncomp))


def image_block_pixels(samples, grid=None):
    """Padded pixels (N, 8, 8, 4) uint8 and sizes (N, 3) of an image's blocks.

    samples: (H, W, C) uint8 from tlg8.image.read_image; grid: tlg8.image.block_grid rows
    (default: all blocks of the image, in block order).
    """
    height, width, ncomp = samples.shape
    if grid is None:
        grid = block_grid(width, height)
    pixels = np.zeros((len(grid), BLOCK, BLOCK, MAX_COMPONENTS), np.uint8)
    sizes = np.empty((len(grid), 3), np.uint8)
    sizes[:, 0] = grid[:, 4]
    sizes[:, 1] = grid[:, 5]
    sizes[:, 2] = ncomp
    for w, h in {(int(w), int(h)) for w, h in grid[:, 4:6]}:
        sel = np.flatnonzero((grid[:, 4] == w) & (grid[:, 5] == h))
        ys = grid[sel, 3][:, None, None] + np.arange(h)[:, None]
        xs = grid[sel, 2][:, None, None] + np.arange(w)
        pixels[sel, :h, :w, :ncomp] = samples[ys, xs]
    return pixels, sizes


def image_features(samples, grid=None):
    """Raw features (N, 259) of an image's blocks (see image_block_pixels)."""
    return block_features(*image_block_pixels(samples, grid))


# layout name -> (number of features, builder(samples, grid) of an image's raw features)
FEATURE_LAYOUTS = {FEATURE_LAYOUT: (N_FEATURES, image_features)}


# ---------------------------------------------------------------------------------------
# Log-softmax over the six heads at once

def head_log_softmax(logits):
    """Per-head log-probabilities of logits (N, 32): every head's slice is normalised."""
    mx = np.maximum.reduceat(logits, HEAD_OFFSETS, axis=1)
    z = logits - np.repeat(mx, HEAD_SIZES, axis=1)
    lse = np.log(np.add.reduceat(np.exp(z), HEAD_OFFSETS, axis=1))
    z -= np.repeat(lse, HEAD_SIZES, axis=1)
    return z


def soft_targets(best, second, epsilon, out=None):
    """Soft targets (N, 32) float32 from head labels best/second (N, 6) (head_labels).

    Each head gets 1 - epsilon on best and epsilon on second, or 1 on best when second is
    missing (-1) or names the same class in that head.
    """
    n = len(best)
    if out is None:
        out = np.empty((n, N_OUTPUTS), np.float32)
    out.fill(0)
    rows = np.arange(n)[:, None]
    cols = best + HEAD_OFFSETS
    split = (second >= 0) & (second != best)
    out[rows, cols] = np.where(split, np.float32(1 - epsilon), np.float32(1))
    r, h = np.nonzero(split)
    out[r, second[r, h] + HEAD_OFFSETS[h]] = np.float32(epsilon)
    return out


# ---------------------------------------------------------------------------------------
# The model

class MultiTaskModel:
    """Shared ReLU trunk (with dropout while training) and six softmax heads, float32.

    Parameters are plain arrays: `weights[i]` (fan_in, fan_out) and `biases[i]` for the trunk
    layers, then `head_weight` (last hidden, 32) and `head_bias` for the fused heads.
    """

    format = MODEL_FORMAT

    def __init__(self, hidden_dims=DEFAULT_HIDDEN, dropout=0.1, seed=0,
                 feature_layout=FEATURE_LAYOUT, params=None):
        if feature_layout not in FEATURE_LAYOUTS:
            raise ValueError(f"unknown feature layout {feature_layout!r}; known: "
                             f"{', '.join(FEATURE_LAYOUTS)}")
        hidden_dims = tuple(int(d) for d in hidden_dims)
        if not 1 <= len(hidden_dims) <= MAX_LAYERS or min(hidden_dims) < 1 or \
                max(hidden_dims) > MAX_WIDTH:
            raise ValueError(f"hidden_dims must be 1..{MAX_LAYERS} sizes in 1..{MAX_WIDTH}, "
                             f"not {hidden_dims}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.feature_layout = feature_layout
        self.n_features = FEATURE_LAYOUTS[feature_layout][0]
        self.hidden_dims = hidden_dims
        self.dropout = float(dropout)
        self.set_params(self.initial_params(seed) if params is None else params)
        self.feature_scaler = (np.zeros(self.n_features, np.float32),
                               np.ones(self.n_features, np.float32))
        self.metadata = {}
        self._work = {}

    # -- parameters ------------------------------------------------------------------

    def shapes(self):
        """Shapes of params(), in order."""
        dims = (self.n_features,) + self.hidden_dims + (N_OUTPUTS,)
        return [shape for a, b in zip(dims[:-1], dims[1:]) for shape in ((a, b), (b,))]

    def initial_params(self, seed):
        """He initialisation for the ReLU layers, LeCun (variance 1/fan_in) for the heads;
        zero biases."""
        rng = np.random.default_rng(seed)
        out = []
        for i, shape in enumerate(self.shapes()):
            if len(shape) == 1:
                out.append(np.zeros(shape, np.float32))
            else:
                gain = 1 if i == len(self.shapes()) - 2 else 2
                out.append(rng.standard_normal(shape, np.float32)
                           * np.float32(np.sqrt(gain / shape[0])))
        return out

    def params(self):
        """All parameter arrays, in a fixed order (the optimiser's and the NPZ's)."""
        out = []
        for w, b in zip(self.weights, self.biases):
            out += [w, b]
        return out + [self.head_weight, self.head_bias]

    def set_params(self, params):
        """Replace all parameters (arrays in params() order and shapes())."""
        self.weights = list(params[0:-2:2])
        self.biases = list(params[1:-2:2])
        self.head_weight, self.head_bias = params[-2:]

    def set_feature_scaler(self, mean, std):
        """Use (mean, std) of the raw features; std near 0 (a constant feature, e.g. the
        padding of 3-component blocks) is replaced by 1 so it does not blow up."""
        mean = np.asarray(mean, np.float32).reshape(self.n_features)
        std = np.asarray(std, np.float32).reshape(self.n_features)
        self.feature_scaler = (mean.copy(), np.where(std > 1e-6, std, np.float32(1)))

    def standardize(self, features, out=None):
        mean, std = self.feature_scaler
        out = np.subtract(features, mean, out=out, dtype=np.float32)
        out /= std
        return out

    # -- inference -------------------------------------------------------------------

    def image_features(self, samples, grid=None):
        """Raw features of an image's blocks in this model's feature layout."""
        return FEATURE_LAYOUTS[self.feature_layout][1](samples, grid)

    def _check_features(self, features):
        x = np.asarray(features, np.float32)
        if not np.isfinite(x).all():
            raise ValueError("features must be finite numbers (no NaN or inf)")
        single = x.ndim == 1
        x2 = x[None] if single else x
        if x2.ndim != 2 or x2.shape[1] != self.n_features:
            raise ValueError(f"features must have shape ({self.n_features},) or "
                             f"(N, {self.n_features}) for layout {self.feature_layout}, "
                             f"not {x.shape}")
        return x2, single

    def logits(self, features, chunk=4096):
        """Fused logits (N, 32) of raw features (N, F), evaluation mode (no dropout)."""
        x, _ = self._check_features(features)
        out = np.empty((len(x), N_OUTPUTS), np.float32)
        params = self.params()
        for lo in range(0, len(x), chunk):
            out[lo:lo + chunk] = forward(params, self.standardize(x[lo:lo + chunk]))[0]
        return out

    def _split(self, fused, single):
        return {name: (fused[0] if single else fused)[..., a:a + n]
                for name, a, n in zip(HEAD_NAMES, HEAD_OFFSETS, HEAD_SIZES)}

    def predict_logits(self, features):
        """{head name: logits} for raw features (F,) -> (K,) per head, or (N, F) -> (N, K)."""
        x, single = self._check_features(features)
        return self._split(self.logits(x), single)

    def predict_log_proba(self, features):
        """{head name: log-probabilities}, shaped like predict_logits."""
        x, single = self._check_features(features)
        return self._split(head_log_softmax(self.logits(x)), single)

    def topk_arrays(self, features, k=2):
        """{head name: (ids int64 (N, k), logprobs float32 (N, k))}, best first.

        k is capped at each head's size. Ties keep the lower class id first.
        """
        k = check_k(k)
        x, _ = self._check_features(features)
        return head_topk(head_log_softmax(self.logits(x)), k)

    def predict_topk(self, features, k=2):
        """Top-k classes of one block: {head name: [(class_id, logprob), ...]}, best first.

        features: (F,) or (1, F). For many blocks use topk_arrays (one call, arrays).
        """
        x, _ = self._check_features(features)
        if len(x) != 1:
            raise ValueError(f"predict_topk takes one block, not {len(x)}; use "
                             f"topk_arrays(features, k) for a batch")
        return {name: [(int(i), float(lp)) for i, lp in zip(ids[0], logps[0])]
                for name, (ids, logps) in self.topk_arrays(x, k).items()}

    # -- choosing configurations (the model interface; the margin beam search) ----------

    def choose_image(self, samples, max_trials=16, progress=None, timings=None, details=False,
                     margins=None, grid=None):
        """All blocks of an image with the cost model as the encoder (beam.choose_image)."""
        return beam.choose_image(self, samples, max_trials, progress, timings, details,
                                 margins, grid=grid)

    def choose_block(self, features, try_encode_block, max_trials=16, margins=None):
        """One block through the caller's encoder: (config [p, f, r, i], bits, trials)."""
        return beam.choose_block(self, features, try_encode_block, max_trials, margins)

    def choose_blocks(self, features, try_encode_block, max_trials=16, margins=None):
        """Many blocks, one model call: (configs (N, 4), bits (N,), trials (N,))."""
        return beam.choose_blocks(self, features, try_encode_block, max_trials, margins)

    # -- training --------------------------------------------------------------------

    def _buffers(self, batch):
        work = self._work.get(batch)
        if work is None:
            if len(self._work) > 2:          # full batches, a last short batch, evaluation
                self._work.clear()
            dims = (self.n_features,) + self.hidden_dims
            work = {
                "act": [np.empty((batch, d), np.float32) for d in self.hidden_dims],
                "mult": [np.empty((batch, d), np.float32) for d in self.hidden_dims],
                "grad_act": [np.empty((batch, d), np.float32) for d in self.hidden_dims],
                "flag": np.empty((batch, max(dims[1:])), bool),
                "flag2": np.empty((batch, max(dims[1:])), bool),
                "logits": np.empty((batch, N_OUTPUTS), np.float32),
                "grads": [np.empty_like(p) for p in self.params()],
            }
            self._work[batch] = work
        return work

    def train_batch(self, x, target, optimizer, rng):
        """One optimisation step on standardised features x (B, F) float32 and soft targets
        (B, 32) (soft_targets). Dropout masks come from `rng`.

        Loss = sum over heads of the batch-mean cross-entropy. Returns (loss, per-head loss
        (6,), logits (B, 32)); the logits array is reused by the next call.
        """
        batch = len(x)
        work = self._buffers(batch)
        keep = 1 - self.dropout
        h = x
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = work["act"][layer]
            mult = work["mult"][layer]
            flag = work["flag"][:, :z.shape[1]]
            np.matmul(h, w, out=z)
            z += b
            # One multiplier per unit folds ReLU and inverted dropout: h = z * mult and,
            # in the backward pass, dz = dh * mult.
            np.greater(z, 0, out=flag)
            if self.dropout:
                rng.random(out=mult, dtype=np.float32)
                flag2 = work["flag2"][:, :z.shape[1]]
                np.greater_equal(mult, np.float32(self.dropout), out=flag2)
                flag &= flag2
                np.multiply(flag, np.float32(1 / keep), out=mult)
            else:
                np.copyto(mult, flag)
            z *= mult
            h = z
        logits = work["logits"]
        np.matmul(h, self.head_weight, out=logits)
        logits += self.head_bias

        logp = head_log_softmax(logits)
        head_loss = -np.add.reduceat(target * logp, HEAD_OFFSETS, axis=1).mean(axis=0)
        # d(loss)/d(logits) = (softmax - target) / B for each head's slice.
        grad = np.exp(logp)
        grad -= target
        grad *= np.float32(1 / batch)

        grads = work["grads"]
        g_head_w, g_head_b = grads[-2], grads[-1]
        np.matmul(h.T, grad, out=g_head_w)
        np.sum(grad, axis=0, out=g_head_b)
        dh = work["grad_act"][-1]
        np.matmul(grad, self.head_weight.T, out=dh)
        for layer in range(len(self.weights) - 1, -1, -1):
            dh *= work["mult"][layer]
            below = x if layer == 0 else work["act"][layer - 1]
            np.matmul(below.T, dh, out=grads[2 * layer])
            np.sum(dh, axis=0, out=grads[2 * layer + 1])
            if layer:
                np.matmul(dh, self.weights[layer].T, out=work["grad_act"][layer - 1])
                dh = work["grad_act"][layer - 1]
        optimizer.update(self.params(), grads)
        return float(head_loss.sum()), head_loss, logits

    def make_optimizer(self, lr=1e-3, weight_decay=1e-4):
        return AdamW(self.params(), lr=lr, weight_decay=weight_decay)

    # -- files -----------------------------------------------------------------------

    def save(self, path):
        """Write the model as NPZ, atomically (a temporary file, then renamed)."""
        path = os.fspath(path)
        arrays = {
            "format": np.array(MODEL_FORMAT),
            "feature_layout": np.array(self.feature_layout),
            "feature_scaler": np.stack(self.feature_scaler),
            "hidden_dims": np.array(self.hidden_dims, np.int64),
            "dropout": np.array(self.dropout),
            "head_names": np.array(HEAD_NAMES),
            "head_sizes": HEAD_SIZES.astype(np.int64),
            "head_weight": self.head_weight,
            "head_bias": self.head_bias,
            "metadata": np.array(json.dumps(self.metadata)),
        }
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"trunk_weight_{i}"] = w
            arrays[f"trunk_bias_{i}"] = b
        write_file(path, "wb", lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path):
        """Read any model file (tlg8_multitask.loader.load_model): a multitask NPZ written
        by save (train_multitask.py --export-dir), or a pair selector NPZ, which serves
        the same inference and interface methods."""
        return loader.load_model(path)


def load(path):
    """Read a multitask NPZ (MultiTaskModel.save); ModelFormatError with the reason and how
    to re-train for any other file. Sizes come from the metadata and are checked before any
    array is read."""
    with ModelFile(path) as f:
        if f.format != MODEL_FORMAT:
            raise f.error(f"model format {f.format!r}, this version reads {MODEL_FORMAT!r}; "
                          f"{RETRAIN}")
        missing = [k for k in ("feature_layout", "feature_scaler", "hidden_dims", "head_names",
                               "head_sizes", "head_weight", "head_bias") if k not in f.files]
        if missing:
            raise f.error(f"written by an older or different exporter (missing "
                          f"{', '.join(repr(k) for k in missing)}); {RETRAIN}")
        layout = f.text("feature_layout")
        if layout not in FEATURE_LAYOUTS:
            raise f.error(f"unknown feature layout {layout!r} (known: "
                          f"{', '.join(FEATURE_LAYOUTS)}); {RETRAIN}")
        names = f.texts("head_names")
        sizes = f.array("head_sizes", (None,), np.int64).tolist()
        if list(zip(names, sizes)) != [(n, int(s)) for n, s in HEADS]:
            raise f.error(f"heads {list(zip(names, sizes))} differ from this version's "
                          f"{list(HEADS)}; {RETRAIN}")
        hidden = tuple(int(d) for d in f.array("hidden_dims", (None,), np.int64))
        dropout = float(f.array("dropout", (), np.float64)) if "dropout" in f.files else 0.0
        try:
            model = MultiTaskModel(hidden, dropout if 0 <= dropout < 1 else 0.0,
                                   feature_layout=layout,
                                   params=[np.zeros(0, np.float32)] * 2)
        except ValueError as e:
            raise f.error(f"{e}; {RETRAIN}") from None
        keys = [f"trunk_{kind}_{i}" for i in range(len(hidden)) for kind in ("weight", "bias")]
        model.set_params([f.array(key, shape) for key, shape in
                          zip(keys + ["head_weight", "head_bias"], model.shapes())])
        scaler = f.array("feature_scaler", (2, model.n_features))
        model.feature_scaler = (scaler[0].copy(), scaler[1].copy())
        metadata = f.json("metadata") if "metadata" in f.files else {}
        model.metadata = metadata if isinstance(metadata, dict) else {}
    return model
