"""The TLG8 coding stages shared by the cost model, the encoder and the decoder.

predictor -> colour filter -> reorder -> interleave (spec tlg8_block_cost.md §2-§5,
tlg8_file_format.md §6). Each stage is a vectorised function over leading batch axes.
This module is the one place that defines the predictor formulas, the filter-code layout,
the reorder tables, the trial orders and the default Golomb table.
"""
import numpy as np

N_PREDICTORS = 8
N_FILTERS = 96
N_REORDERS = 8
N_INTERLEAVES = 2
N_ENTROPIES = 2
MAX_COMPONENTS = 4          # A, R, G, B (cost spec §1.1); 3 without alpha

# Reference search trial orders (cost spec §7.1).
PREDICTOR_ORDER = (0, 4, 1, 3, 5, 2, 7, 6)
FILTER_ORDER = (
    71, 86, 7, 87, 23, 0, 39, 6, 55, 70, 27, 94, 79, 75, 31, 37,
    59, 95, 11, 91, 43, 22, 53, 5, 19, 8, 14, 78, 51, 69, 57, 40,
    15, 38, 3, 56, 25, 13, 88, 16, 36, 93, 24, 4, 10, 21, 32, 2,
    72, 26, 77, 48, 54, 90, 44, 85, 18, 41, 64, 74, 45, 30, 67, 73,
    50, 61, 80, 47, 1, 83, 29, 35, 60, 63, 9, 49, 58, 42, 17, 33,
    52, 66, 82, 89, 65, 84, 68, 20, 46, 34, 81, 92, 62, 12, 76, 28,
)

# Colour filter: code = 16*perm + 4*primary + secondary (cost spec §3).
PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def filter_code(perm, primary, secondary):
    return (perm << 4) | (primary << 2) | secondary


def split_filter_code(code):
    """(perm, primary, secondary) of a filter code (works on arrays too)."""
    return code >> 4, (code >> 2) & 3, code & 3


# Reorder tables T_r: T_r[i] = raster index of the i-th scan position (cost spec §4).
REORDER_TABLES = np.array([
    [0, 8, 9, 1, 2, 3, 11, 10, 18, 19, 27, 26, 25, 17, 16, 24,
     32, 33, 41, 40, 48, 56, 57, 49, 50, 58, 59, 51, 43, 42, 34, 35,
     36, 37, 45, 44, 52, 60, 61, 53, 54, 62, 63, 55, 47, 46, 38, 39,
     31, 23, 22, 30, 29, 28, 20, 21, 13, 12, 4, 5, 6, 14, 15, 7],
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
     12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
     35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
     58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63],
    [10, 3, 2, 9, 16, 8, 1, 0, 5, 4, 11, 18, 25, 32, 24, 17,
     34, 41, 48, 40, 33, 26, 19, 12, 28, 21, 14, 7, 6, 13, 20, 27,
     36, 43, 50, 57, 56, 49, 42, 35, 51, 44, 37, 30, 23, 15, 22, 29,
     46, 39, 31, 38, 45, 52, 59, 58, 63, 62, 55, 47, 54, 61, 60, 53],
    [0, 1, 2, 3, 4, 5, 6, 7, 15, 14, 13, 12, 11, 10, 9, 8,
     16, 17, 18, 19, 20, 21, 22, 23, 31, 30, 29, 28, 27, 26, 25, 24,
     32, 33, 34, 35, 36, 37, 38, 39, 47, 46, 45, 44, 43, 42, 41, 40,
     48, 49, 50, 51, 52, 53, 54, 55, 63, 62, 61, 60, 59, 58, 57, 56],
    [0, 8, 16, 24, 32, 40, 48, 56, 57, 49, 41, 33, 25, 17, 9, 1,
     2, 10, 18, 26, 34, 42, 50, 58, 59, 51, 43, 35, 27, 19, 11, 3,
     4, 12, 20, 28, 36, 44, 52, 60, 61, 53, 45, 37, 29, 21, 13, 5,
     6, 14, 22, 30, 38, 46, 54, 62, 63, 55, 47, 39, 31, 23, 15, 7],
    [0, 2, 11, 12, 27, 28, 43, 44, 1, 3, 10, 13, 26, 29, 42, 45,
     4, 9, 14, 25, 30, 41, 46, 57, 5, 8, 15, 24, 31, 40, 47, 56,
     6, 16, 23, 32, 39, 48, 55, 58, 7, 17, 22, 33, 38, 49, 54, 59,
     18, 21, 34, 37, 50, 53, 60, 62, 19, 20, 35, 36, 51, 52, 61, 63],
    [0, 1, 4, 5, 6, 7, 18, 19, 2, 3, 9, 8, 16, 17, 21, 20,
     11, 10, 14, 15, 23, 22, 34, 35, 12, 13, 25, 24, 32, 33, 37, 36,
     27, 26, 30, 31, 39, 38, 50, 51, 28, 29, 41, 40, 48, 49, 53, 52,
     43, 42, 46, 47, 55, 54, 60, 61, 44, 45, 57, 56, 58, 59, 62, 63],
    [44, 45, 57, 56, 58, 59, 62, 63, 43, 42, 46, 47, 55, 54, 60, 61,
     28, 29, 41, 40, 48, 49, 53, 52, 27, 26, 30, 31, 39, 38, 50, 51,
     12, 13, 25, 24, 32, 33, 37, 36, 11, 10, 14, 15, 23, 22, 34, 35,
     2, 3, 9, 8, 16, 17, 21, 20, 0, 1, 4, 5, 6, 7, 18, 19],
], dtype=np.intp)

# Golomb-Rice coding limits (cost spec §6.2-§6.3, file spec §7.3, §11): the quotient at
# which a code escapes to gamma, and the table index from which k = 0.
ESCAPE_Q = 16
K_INDEX_LIMIT = 1024

# Default Golomb table (cost spec §6.2): per row raise ratio, fall ratio, 9 counts.
DEFAULT_GOLOMB_TABLE = (
    (12, 6, (1, 3, 4, 9, 27, 94, 267, 480, 139)),
    (9, 6, (2, 3, 3, 14, 122, 96, 229, 435, 120)),
    (7, 5, (3, 1, 6, 8, 112, 108, 258, 414, 114)),
    (12, 8, (2, 3, 3, 10, 15, 92, 253, 521, 125)),
    (14, 6, (2, 3, 3, 11, 71, 95, 280, 452, 107)),
    (10, 9, (3, 2, 6, 5, 101, 56, 261, 422, 168)),
    (6, 5, (3, 2, 5, 8, 47, 120, 250, 492, 97)),
    (3, 5, (3, 4, 2, 11, 27, 110, 248, 487, 132)),
)

# Golomb row of each sequence (cost spec §6.1, file spec §5.4).
PLAIN_ROWS = (0, 1, 2, 0)          # interleave 0, entropy 0: row of component c
RUNLENGTH_ROWS = (3, 4, 5, 3)      # interleave 0, entropy 1
INTERLEAVED_ROWS = (6, 7)          # interleave 1: row by entropy


def component_row(entropy, comp):
    return (PLAIN_ROWS if entropy == 0 else RUNLENGTH_ROWS)[comp]


def k_table(golomb_table=DEFAULT_GOLOMB_TABLE):
    """K[row, idx] for idx 0..1023: smallest k with n_0 + ... + n_k > idx (spec §6.2)."""
    table = np.zeros((8, K_INDEX_LIMIT), np.int32)
    for row, (_, _, counts) in enumerate(golomb_table):
        table[row] = np.repeat(np.arange(9), counts)
    return table


def tdiv2(x):
    """Division by 2 truncated toward zero (C semantics) for integer arrays."""
    return (x + (x < 0)) >> 1


def predict(ws, predictor):
    """Prediction of every block sample for one predictor.

    ws: int array (..., h+1, w+2), the padded workspace of image.block_workspaces.
    Returns (..., h, w) predictions.
    """
    a = ws[..., 1:, :-2]
    b = ws[..., :-1, 1:-1]
    c = ws[..., :-1, :-2]
    d = ws[..., :-1, 2:]
    return predict_neighbours(a, b, c, d, predictor)


def predict_neighbours(a, b, c, d, predictor):
    """Prediction `predictor` from neighbour arrays a (left), b (above), c (above-left),
    d (above-right) of any one shape; the decoder uses it on one wavefront of samples."""
    if predictor == 0:
        mx = np.maximum(a, b)
        mn = np.minimum(a, b)
        return np.where(c > mx, mn, np.where(c < mn, mx, a + b - c))
    if predictor == 1:
        return (a + c + 1) >> 1
    if predictor == 2:
        return (b + c + 1) >> 1
    if predictor == 3:
        return (b + d + 1) >> 1
    return (a, b, c, d)[predictor - 4]


def residuals(ws, predictor):
    """Predictor residuals in block raster order: (..., h+1, w+2) -> (..., h*w)."""
    res = ws[..., 1:, 1:-1] - predict(ws, predictor)
    return res.reshape(res.shape[:-2] + (-1,))


def all_residuals(ws):
    """Residuals of all 8 predictors: (N, C, h+1, w+2) -> (N, 8, C, n)."""
    return np.stack([residuals(ws, p) for p in range(N_PREDICTORS)], axis=1)


def primary_term(d0, primary):
    """P1 of the colour filter: what is subtracted from d1."""
    if primary == 0:
        return 0
    if primary == 1:
        return d0
    if primary == 2:
        return tdiv2(d0)
    return tdiv2(3 * d0)


def secondary_term(d0, d1, secondary):
    """P2 of the colour filter: what is subtracted from d2 (d1 unfiltered)."""
    if secondary == 0:
        return 0
    if secondary == 1:
        return d0
    if secondary == 2:
        return d1
    return tdiv2(d0 + d1)


def color_filter(res, code):
    """Apply filter `code` to residuals (..., C, n); component 3 is left as it is."""
    if res.shape[-2] < 3:
        return res
    perm, primary, secondary = split_filter_code(int(code))
    s0, s1, s2 = PERMUTATIONS[perm]
    d0, d1, d2 = res[..., s0, :], res[..., s1, :], res[..., s2, :]
    out = res.copy()
    out[..., 0, :] = d0
    out[..., 1, :] = d1 - primary_term(d0, primary)
    out[..., 2, :] = d2 - secondary_term(d0, d1, secondary)
    return out


def inverse_color_filter(filtered, code):
    """Undo color_filter: (..., C, n) filtered values -> predictor residuals."""
    if filtered.shape[-2] < 3:
        return filtered
    perm, primary, secondary = split_filter_code(int(code))
    r0 = filtered[..., 0, :]
    r1 = filtered[..., 1, :] + primary_term(r0, primary)
    r2 = filtered[..., 2, :] + secondary_term(r0, r1, secondary)
    out = filtered.copy()
    for src, value in zip(PERMUTATIONS[perm], (r0, r1, r2)):
        out[..., src, :] = value
    return out


def is_full_block(w, h):
    """Full 8x8 block (reorders apply) or edge block (raster order for every reorder, §4)."""
    return w == 8 and h == 8


def reorder_index(reorder, w, h):
    """Scan order of a w x h block: T_r for full 8x8 blocks, raster order for edge blocks."""
    if is_full_block(w, h):
        return REORDER_TABLES[reorder]
    return np.arange(w * h)


def apply_reorder(values, reorder, w, h):
    """Reorder the last axis (n samples, raster order) into scan order."""
    return values[..., reorder_index(reorder, w, h)]


def undo_reorder(values, reorder, w, h):
    out = np.empty_like(values)
    out[..., reorder_index(reorder, w, h)] = values
    return out


def interleave(values):
    """(..., C, n) -> (..., C*n) pixel-interleaved: comp0[0], comp1[0], ..., comp0[1], ..."""
    return np.swapaxes(values, -1, -2).reshape(values.shape[:-2] + (-1,))


def deinterleave(seq, ncomp):
    """(..., C*n) -> (..., C, n), the inverse of interleave."""
    return np.swapaxes(seq.reshape(seq.shape[:-1] + (-1, ncomp)), -1, -2)


def coded_values(ws, predictor, code, reorder, w, h):
    """Per-component coded values of blocks (before interleave): (..., C, n)."""
    return apply_reorder(color_filter(residuals(ws, predictor), code), reorder, w, h)
