"""A Golomb table fitted to one image: fewer row bits, same pixels.

The file stores its Golomb table (file spec §3.2) and every decoder uses it (§7.1), so an
encoder may store any valid table. A row's adaptive state a moves with the coded
magnitudes and the row's two ratios only, never with k (§7.2). So, with the ratios kept,
the k index before every value is known before the counts are chosen, and a row's bits
are a sum over k indices of "bits of those values at k". The counts n_0..n_8 only say
which k each index gets, non-decreasing in the index; the cheapest non-decreasing
assignment is one small dynamic programme per row (1024 indices x 9 k values). It is
exact, so the fitted table never costs more than the one it starts from, which is one of
the assignments it considers.

Measured on the default encode of two shared photos: 0.15 % (dko_sss) and 0.32 % (img3) of
the file. Searching the ratios as well saved another 0.03 % for 25x the time, so they are
kept. Indices >= 1024 have k = 0 whatever the table says (§11) and are left out.
tlg8.tlgfile.encode_tlg8(fit_table=True) applies this, and tlgfile.golomb_row_costs gives
the costs of any choices (the file-bytes pass chooses with a table fitted to the
selector's choices: tlg8.codec).
"""
import numpy as np

from . import jit, stages

N_K = 9                            # k = 0 .. 8, one count each


def rice_bits(m, k):
    """Bits of the Golomb-Rice codes with escape of magnitudes m at parameter k (§7.3)."""
    m = np.asarray(m, np.int64)
    q = m >> k
    gamma = 2 * np.frexp(np.maximum(m - (stages.ESCAPE_Q - 1), 1).astype(np.float64))[1] - 1
    return np.where(q < stages.ESCAPE_Q, q + 1 + k, stages.ESCAPE_Q + gamma)


def index_costs(m, idx):
    """cost[i, k]: bits of the magnitudes m seen at k index i (< 1024) if K[i] = k."""
    inside = idx < stages.K_INDEX_LIMIT
    m, idx = m[inside], idx[inside]
    if not len(m):
        return np.zeros((stages.K_INDEX_LIMIT, N_K), np.int64)
    # One histogram of (index, magnitude), then bits per magnitude at each k.
    span = int(m.max()) + 1
    hist = np.bincount(idx * span + m, minlength=stages.K_INDEX_LIMIT * span)
    bits = rice_bits(np.arange(span)[:, None], np.arange(N_K))          # (span, 9)
    return hist.reshape(stages.K_INDEX_LIMIT, span) @ bits


def fit_counts(cost):
    """The counts n_0..n_8 (adding up to 1024) of the non-decreasing k per index with the
    fewest bits under cost[i, k]; and those bits."""
    ks = np.arange(N_K)
    best = cost[0].copy()        # best[k]: fewest bits of indices 0..i with K[i] = k
    came_from = np.zeros(cost.shape, np.int64)
    for i in range(1, len(cost)):
        # K is non-decreasing, so index i at k follows index i - 1 at any k' <= k.
        prefix = np.minimum.accumulate(best)
        came_from[i] = np.maximum.accumulate(np.where(best <= prefix, ks, 0))
        best = prefix + cost[i]
    k = int(np.argmin(best))
    total = int(best[k])
    assigned = np.empty(len(cost), np.int64)
    for i in range(len(cost) - 1, -1, -1):
        assigned[i] = k
        k = int(came_from[i, k])
    return tuple(np.bincount(assigned, minlength=N_K).tolist()), total


def row_costs(rows):
    """cost (8, 1024, 9) of index_costs per Golomb row, from (row number, mapped magnitudes,
    k indices) of every row sequence. Sums: the costs of bands of whole tiles add up to
    the image's (every tile restarts its rows)."""
    costs = np.zeros((8, stages.K_INDEX_LIMIT, N_K), np.int64)
    for row in range(8):
        seen = [(m, idx) for r, m, idx in rows if r == row and len(m)]
        if seen:
            costs[row] = index_costs(np.concatenate([m for m, _ in seen]),
                                     np.concatenate([i for _, i in seen]))
    return costs


def fit(table, costs):
    """`table` with the counts of each row refitted to its row_costs (8, 1024, 9), the
    ratios kept (the costs were computed with them). Rows with no values keep theirs."""
    return tuple((up, down, _fitted_counts(costs[row]) if costs[row].any() else tuple(counts))
                 for row, (up, down, counts) in enumerate(table))


def _fitted_counts(cost):
    """fit_counts' counts, by the compiled kernel when there is one (the same counts)."""
    if not jit.available():
        return fit_counts(cost)[0]
    from . import encode_kernels as kernels
    counts = np.empty(N_K, np.int64)
    kernels.fit_counts(np.ascontiguousarray(cost, np.int64), counts)
    return tuple(counts.tolist())
