"""k-nearest-neighbour search used to build augmentations and metrics."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

EXACT_MAX_CELLS = 10_000


def knn_indices(
    x: np.ndarray | sp.spmatrix,
    n_neighbors: int,
    *,
    method: str = "auto",
    random_state: int = 0,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Indices of each row's ``n_neighbors`` nearest neighbours (Euclidean), self excluded.

    Parameters
    ----------
    x
        Data, dense or sparse, rows are samples.
    n_neighbors
        Number of neighbours K (self not counted).
    method
        ``"exact"`` (scikit-learn brute force), ``"pynndescent"`` (approximate, for large data),
        or ``"auto"``: exact up to 10,000 rows, pynndescent above.
    random_state
        Seed for pynndescent.

    Returns
    -------
    Integer array of shape ``(n, n_neighbors)``.
    """
    n = x.shape[0]
    if n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be at least 1, got {n_neighbors}.")
    if n_neighbors >= n:
        raise ValueError(f"`n_neighbors`={n_neighbors} must be smaller than the number of cells ({n}).")
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_CELLS else "pynndescent"
    if method == "exact":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=n_neighbors + 1, algorithm="brute", n_jobs=n_jobs).fit(x)
        ind = nn.kneighbors(x, return_distance=False)
    elif method == "pynndescent":
        from pynndescent import NNDescent

        index = NNDescent(
            x,
            n_neighbors=n_neighbors + 1,
            metric="euclidean",
            random_state=random_state,
            n_jobs=n_jobs if n_jobs is not None else -1,
        )
        ind = index.neighbor_graph[0]
    else:
        raise ValueError(f"`method` must be 'auto', 'exact' or 'pynndescent', got {method!r}.")
    return _drop_self(ind, n_neighbors)


def _drop_self(ind: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index (duplicates may put it anywhere) and keep k columns."""
    n = ind.shape[0]
    is_self = ind == np.arange(n)[:, None]
    # rows where self is absent (exact duplicates): drop the last column instead
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    out = ind[~is_self].reshape(n, -1)[:, :k]
    return np.ascontiguousarray(out, dtype=np.int64)
