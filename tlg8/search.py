"""The reference encoder's configuration search, batched over blocks (cost spec §7).

`search_blocks` evaluates blocks of one size together:

1. residuals of the 8 predictors;
2. the colour filter's output components, deduplicated: component 0 depends only on the
   permutation's first source, component 1 on (perm, primary), component 2 on
   (perm, secondary), component 3 is never filtered — 51 (52 with C = 4) distinct sequences
   per predictor instead of 96 x C;
3. energies of all 768 (predictor, filter) pairs from those, and the reference's 1.3 early
   exit replayed in trial order for all blocks at once ("reference"), or no exit at all
   ("exhaustive");
4. bits of every surviving (predictor, filter) x 8 reorders x 2 interleaves x 2 entropies
   with the batched estimator (cost.lane_bits);
5. best and second by (bits, trial order) — the reference's strict "<" bookkeeping.
"""
import numpy as np

from . import cost, jit, stages
from .image import block_batches, block_grid, block_workspaces

MODES = ("reference", "exhaustive")
CONFIG_FIELDS = ("predictor", "filter", "reorder", "interleave", "entropy", "bits")
N_CONFIGS = (stages.N_PREDICTORS * stages.N_FILTERS * stages.N_REORDERS
             * stages.N_INTERLEAVES * stages.N_ENTROPIES)
EARLY_EXIT_RATIO = 1.3

_codes = np.arange(stages.N_FILTERS)
_perm, _primary, _secondary = stages.split_filter_code(_codes)
_PERMS = np.array(stages.PERMUTATIONS)
# Index of each filter's output component c among the deduplicated candidates:
# [0, 3) comp 0 by source, [3, 27) comp 1 by (perm, primary), [27, 51) comp 2 by
# (perm, secondary), 51 comp 3.
N_CANDIDATES = 52
CANDIDATE_INDEX = np.stack([_PERMS[_perm, 0], 3 + _perm * 4 + _primary, 27 + _perm * 4 + _secondary,
                            np.full(stages.N_FILTERS, 51)], axis=1)

# Position of every (p, f, r, i, e) in the reference's trial order; ties in bits go to the
# earlier trial.
_pos_p = np.argsort(stages.PREDICTOR_ORDER)
_pos_f = np.argsort(stages.FILTER_ORDER)
TRIAL_RANK = (((_pos_p[:, None] * 96 + _pos_f[None, :])[:, :, None, None, None] * 8
               + np.arange(8)[:, None, None]) * 4
              + np.arange(2)[:, None] * 2 + np.arange(2)).astype(np.int64)
_RANK_BITS = 15                      # TRIAL_RANK < 24576 < 2^15


def filter_candidates(res):
    """Deduplicated filter outputs: residuals (N, 8, C, n) -> (N, 8, 52, n) int16."""
    n_blocks, n_pred, ncomp, n = res.shape
    out = np.zeros((n_blocks, n_pred, N_CANDIDATES, n), np.int16)
    out[:, :, 0:3] = res[:, :, 0:3]
    for perm, (s0, s1, s2) in enumerate(stages.PERMUTATIONS):
        d0, d1, d2 = res[:, :, s0], res[:, :, s1], res[:, :, s2]
        for mode in range(4):
            out[:, :, 3 + perm * 4 + mode] = d1 - stages.primary_term(d0, mode)
            out[:, :, 27 + perm * 4 + mode] = d2 - stages.secondary_term(d0, d1, mode)
    if ncomp == 4:
        out[:, :, 51] = res[:, :, 3]
    return out


def pair_energies(res, cand):
    """Energies of predictor residuals (N, 8) and of all filtered residuals (N, 8, 96)."""
    ncomp = res.shape[2]
    e_pred = np.einsum("bpcn,bpcn->bp", res, res, dtype=np.int64)
    e_cand = np.einsum("bpkn,bpkn->bpk", cand, cand, dtype=np.int64)
    e_pair = e_cand[:, :, CANDIDATE_INDEX[:, :ncomp]].sum(axis=3)
    return e_pred, e_pair


def early_exit_mask(e_pred, e_pair):
    """Which (predictor, filter) pairs the reference evaluates: (N, 8, 96) bool (§7.2)."""
    n_blocks = len(e_pred)
    evaluated = np.zeros(e_pair.shape, bool)
    best_res = np.full(n_blocks, np.inf)
    best_filt = np.full(n_blocks, np.inf)
    e_pred = e_pred.astype(np.float64)
    e_pair = e_pair.astype(np.float64)
    for p in stages.PREDICTOR_ORDER:
        ep = e_pred[:, p]
        live = ~(ep > best_res * EARLY_EXIT_RATIO)        # inf * 1.3 = inf: never skipped
        np.minimum(best_res, np.where(live, ep, np.inf), out=best_res)
        for f in stages.FILTER_ORDER:
            ef = e_pair[:, p, f]
            take = live & ~(ef > best_filt * EARLY_EXIT_RATIO)
            evaluated[:, p, f] = take
            np.minimum(best_filt, np.where(take, ef, np.inf), out=best_filt)
    return evaluated


def _reorders(w, h):
    """Distinct scan orders for this block size: 8 tables, or 1 for edge blocks."""
    if stages.is_full_block(w, h):
        return stages.REORDER_TABLES
    return np.arange(w * h)[None, :]


def _component_bits(cand_flat, keys, ncomp, orders):
    """Bits with interleave 0: (T, n_orders, 2 entropies) summed over components."""
    total = np.zeros((len(keys), len(orders), 2), np.int64)
    for c in range(ncomp):
        uniq, inverse = np.unique(keys[:, c], return_inverse=True)
        seqs = np.ascontiguousarray(cand_flat[uniq].T)              # (n, U) position-major
        for e in range(2):
            bits = cost.lane_bits(seqs, stages.component_row(e, c), e, orders)
            total[:, :, e] += bits.T[inverse]
    return total


def _interleaved_bits(cand_flat, keys, ncomp, orders):
    """Bits with interleave 1: (T, n_orders, 2 entropies)."""
    n = cand_flat.shape[1]
    filtered = cand_flat[keys].reshape(len(keys), ncomp * n).T.copy()   # (C*n, T): c*n + i
    comp = np.arange(ncomp)
    # s[j] = component j % C at scan position j // C
    sequences = (comp[None, None, :] * n + orders[:, :, None]).reshape(len(orders), -1)
    out = np.empty((len(keys), len(orders), 2), np.int64)
    for e in range(2):
        out[:, :, e] = cost.lane_bits(filtered, stages.INTERLEAVED_ROWS[e], e, sequences).T
    return out


def search_blocks(ws, mode="reference"):
    """Best and second configuration of blocks of one size.

    ws: (N, C, h+1, w+2) workspaces. Returns (best, second), int64 arrays (N, 6) with the
    columns of CONFIG_FIELDS.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    n_blocks, ncomp = ws.shape[:2]
    if jit.available() and ncomp in (3, 4) and n_blocks:
        from . import encode_kernels as kernels
        best = np.empty((n_blocks, 6), np.int64)
        second = np.empty((n_blocks, 6), np.int64)
        kernels.search_blocks(np.ascontiguousarray(ws, np.int32), int(mode == "exhaustive"),
                              kernels.KC, kernels.RATIOS, best, second)
        return best, second
    h, w = ws.shape[2] - 1, ws.shape[3] - 2
    res = stages.all_residuals(ws)
    cand = filter_candidates(res)
    if mode == "reference":
        evaluated = early_exit_mask(*pair_energies(res, cand))
    else:
        evaluated = np.ones((n_blocks, stages.N_PREDICTORS, stages.N_FILTERS), bool)
    b, p, f = np.nonzero(evaluated)
    keys = ((b * stages.N_PREDICTORS + p) * N_CANDIDATES)[:, None] + CANDIDATE_INDEX[f, :ncomp]
    cand_flat = cand.reshape(-1, cand.shape[-1])
    orders = _reorders(w, h)
    bits = np.empty((len(b), len(orders), 2, 2), np.int64)
    bits[:, :, 0] = _component_bits(cand_flat, keys, ncomp, orders)
    bits[:, :, 1] = _interleaved_bits(cand_flat, keys, ncomp, orders)
    # Dense (block, p, f, r, i, e) keys = bits then trial rank; unevaluated ones never win.
    dense = np.full((n_blocks, 8, 96, 8, 2, 2), np.iinfo(np.int64).max, np.int64)
    dense[b, p, f] = (bits << _RANK_BITS) + TRIAL_RANK[p, f][:, :len(orders)]
    if len(orders) == 1:                 # edge blocks: every reorder gives the same bits
        dense[b, p, f] = (bits[:, :1] << _RANK_BITS) + TRIAL_RANK[p, f]
    flat = dense.reshape(n_blocks, -1)
    two = np.partition(flat, 1, axis=1)[:, :2]
    return tuple(_decode(flat, col) for col in (two[:, 0], two[:, 1]))


def _decode(flat, key):
    """Config columns (p, f, r, i, e, bits) of the entries of `flat` equal to `key`."""
    index = np.argmax(flat == key[:, None], axis=1)
    p, f, r, i, e = np.unravel_index(index, (8, 96, 8, 2, 2))
    return np.stack([p, f, r, i, e, key >> _RANK_BITS], axis=1).astype(np.int64)


def chunk_size(mode):
    """Blocks per batch: bounds memory (the exhaustive mode evaluates ~10x more)."""
    return 128 if mode == "reference" else 16


def search_image(samples, mode="reference", progress=None):
    """Search every block of an image. Returns (grid, best, second) in block order.

    samples: uint8 (H, W, C) from image.read_image. progress: optional callable(n_blocks).
    """
    height, width = samples.shape[:2]
    grid = block_grid(width, height)
    best = np.zeros((len(grid), 6), np.int64)
    second = np.zeros((len(grid), 6), np.int64)
    for part in block_batches(grid, chunk_size(mode)):
        best[part], second[part] = search_blocks(block_workspaces(samples, grid[part]), mode)
        if progress is not None:
            progress(len(part))
    return grid, best, second
