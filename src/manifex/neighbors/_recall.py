"""Recall of a kNN table, or of query neighbours, against exact search on a seeded sample."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._utils import as_2d_float, check_random_state, resolve_device
from ._exact import Database, exact_search
from ._options import RECALL_SAMPLE, check_k

__all__ = ["knn_recall", "query_recall"]


def _pair_sqdist(x: np.ndarray | sp.csr_matrix, rows: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Squared distances (float64) from each of ``rows`` to its ``nbrs``, in chunks of rows."""
    out = np.empty(nbrs.shape, dtype=np.float64)
    step = max(1, 2**16 // max(1, nbrs.shape[1]))
    for s in range(0, rows.shape[0], step):
        r, nb = rows[s : s + step], nbrs[s : s + step]
        if sp.issparse(x):
            a = x[r].toarray().astype(np.float64)
            b = x[nb.ravel()].toarray().astype(np.float64).reshape(*nb.shape, -1)
        else:
            a = x[r].astype(np.float64)
            b = x[nb].astype(np.float64)
        out[s : s + step] = ((b - a[:, None, :]) ** 2).sum(-1)
    return out


def knn_recall(
    x: Any,
    indices: Any,
    *,
    n_sample: int = RECALL_SAMPLE,
    random_state: int = 0,
    device: str | torch.device = "auto",
) -> float:
    """Recall of a kNN table against exact search, on a seeded sample of its rows.

    For ``n_sample`` rows drawn without replacement (all rows when there are fewer), the exact
    K nearest other rows are searched among all rows (tiled, on ``device``). A listed
    neighbour is a hit when it is not the row itself, not repeated, and no farther (in float64)
    than the exact K-th neighbour, so a tie with the K-th neighbour counts as found.

    Parameters
    ----------
    x
        The data the table was built on, ``(n, d)``, dense or sparse.
    indices
        ``(n, K)`` integer neighbour indices, e.g. from :func:`knn_graph`.
    n_sample
        Number of rows checked.
    random_state
        Seed of the sample.
    device
        Device of the exact search.

    Returns
    -------
    Hits over ``n_sample × K``: 1.0 for an exact table.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.neighbors import knn_indices, knn_recall
    >>> x = np.random.default_rng(0).normal(size=(300, 5))
    >>> ind = knn_indices(x, 10, device="cpu")
    >>> knn_recall(x, ind, device="cpu")
    1.0
    >>> ind[:, 5:] = (np.arange(300)[:, None] + 150) % 300  # corrupt half of each row
    >>> round(knn_recall(x, ind, device="cpu"), 1)
    0.5
    """
    x = as_2d_float(x, name="x")
    n = x.shape[0]
    ind = np.asarray(indices)
    if ind.ndim != 2 or ind.shape[0] != n or ind.dtype.kind not in "iu":
        raise ValueError(
            f"`indices` must be an integer array of shape (n, K) with n = {n} rows of `x`, "
            f"got dtype {ind.dtype} and shape {ind.shape}."
        )
    k = ind.shape[1]
    check_k(k, n)
    if ind.size and (ind.min() < 0 or ind.max() >= n):
        raise ValueError(f"`indices` must lie in [0, {n}); found {ind.min()} to {ind.max()}.")
    if isinstance(n_sample, bool) or not isinstance(n_sample, int | np.integer) or n_sample < 1:
        raise ValueError(f"`n_sample` must be a positive int, got {n_sample!r}.")
    seed = check_random_state(random_state)
    dev = resolve_device(device)
    m = min(int(n_sample), n)
    rows = np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
    truth, _ = exact_search(Database(x, dev), rows, k)
    kth = _pair_sqdist(x, rows, truth[:, -1:])[:, 0]
    given = ind[rows].astype(np.int64)
    d = _pair_sqdist(x, rows, given)
    first = np.ones_like(given, dtype=bool)
    srt = np.sort(given, axis=1)
    o = np.argsort(given, axis=1, kind="stable")
    dup_sorted = np.zeros_like(given, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    np.put_along_axis(first, o, ~dup_sorted, axis=1)
    hit = first & (given != rows[:, None]) & (d <= kth[:, None] * (1 + 1e-6) + 1e-12)
    return float(hit.sum() / (m * k))


def query_recall(
    ref: np.ndarray, q: np.ndarray, ind: np.ndarray, n_sample: int, seed: int, dev: torch.device
) -> float:
    """Recall of query neighbours ``ind`` against exact search on ``n_sample`` seeded queries:
    a listed row, not repeated, no farther (float64) than the exact K-th neighbour is a hit."""
    m, k = ind.shape
    rows = np.sort(np.random.default_rng([seed, 3]).choice(m, n_sample, replace=False))
    truth, _ = exact_search(Database(ref, dev), None, k, queries=q[rows])
    a = q[rows].astype(np.float64)[:, None, :]
    kth = ((ref[truth[:, -1]].astype(np.float64) - a[:, 0]) ** 2).sum(-1)
    given = ind[rows]
    d = ((ref[given].astype(np.float64) - a) ** 2).sum(-1)
    srt = np.sort(given, axis=1)
    repeated = np.zeros_like(given, dtype=bool)
    repeated[:, 1:] = srt[:, 1:] == srt[:, :-1]  # count each distinct listed row once
    hits = (d <= kth[:, None] * (1 + 1e-6) + 1e-12).sum() - repeated.sum()
    return float(hits / (n_sample * k))
