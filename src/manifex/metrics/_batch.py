"""Batch mixing in an embedding: do the neighbours of a cell come from all batches?"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.preprocessing import LabelEncoder

from ._checks import _check_n_neighbors, _emb


def _batch_counts(embedding: Any, batch: Any, n_neighbors: Any) -> tuple[np.ndarray, int]:
    """Per cell, how many of its ``n_neighbors`` nearest neighbours (self excluded) are in each batch."""
    from sklearn.neighbors import NearestNeighbors

    e = _emb(embedding)
    n = e.shape[0]
    b = np.asarray(batch)
    if b.ndim != 1 or b.shape[0] != n:
        raise ValueError(f"`batch` must be 1-d with {n} entries, got shape {b.shape}.")
    if b.dtype.kind == "f" and not np.isfinite(b).all():
        raise ValueError("`batch` contains NaN.")
    k = _check_n_neighbors(n_neighbors, n, upper=f"the number of cells ({n})")
    codes = LabelEncoder().fit_transform(b.astype(str))
    n_batches = int(codes.max()) + 1
    if n_batches < 2:
        raise ValueError("`batch` has a single value; batch mixing needs at least two batches.")
    # k + 1 neighbours include the cell itself (first, distance 0); duplicates can displace it,
    # so drop the cell's own index wherever it is and keep the first k others
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(e).kneighbors(e)
    own = idx == np.arange(n)[:, None]
    drop = np.where(own.any(1), own.argmax(1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    nbrs = idx[keep].reshape(n, k)
    counts = np.zeros((n, n_batches))
    np.add.at(counts, (np.repeat(np.arange(n), k), codes[nbrs].ravel()), 1.0)
    return counts, n_batches


def batch_entropy(
    embedding: Any, batch: Any, *, n_neighbors: int = 30, per_cell: bool = False
) -> float | np.ndarray:
    """Entropy of the batch labels among each cell's ``n_neighbors`` nearest neighbours, in [0, 1].

    For cell ``i`` with neighbour batch fractions ``p_ib`` (``n_neighbors`` neighbours, itself
    excluded), ``H_i = −Σ_b p_ib log p_ib / log B`` for ``B`` batches: 0 when all neighbours
    come from one batch, 1 when every batch is equally represented. The score is the mean of
    ``H_i`` over cells (Haghverdi et al. 2018 use the same entropy on random subsets). Compare
    embeddings of the same cells with the same ``n_neighbors``: with batches of unequal size even a
    perfect mix scores below 1 (the entropy of the overall batch proportions).

    Parameters
    ----------
    embedding
        ``(n_cells, d)`` coordinates (a 2-d map, a latent space, PCA).
    batch
        ``n_cells`` batch labels.
    n_neighbors
        Neighbours per cell.
    per_cell
        Return ``H_i`` for every cell instead of the mean (e.g. to colour a map by it).

    Returns
    -------
    The mean normalised entropy, or the per-cell values.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.metrics import batch_entropy
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(400, 2))
    >>> round(batch_entropy(x, rng.integers(0, 2, 400)), 1)  # batches drawn at random: mixed
    1.0
    >>> round(batch_entropy(x + 100 * np.repeat([[0], [1]], 200, 0), np.repeat([0, 1], 200)), 1)
    0.0
    """
    counts, n_batches = _batch_counts(embedding, batch, n_neighbors)
    p = counts / counts.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(1) / np.log(n_batches)
    return h if per_cell else float(h.mean())


def ilisi(embedding: Any, batch: Any, *, n_neighbors: int = 30, per_cell: bool = False) -> float | np.ndarray:
    """Integration LISI on a plain kNN graph, rescaled to [0, 1].

    For cell ``i`` with neighbour batch fractions ``p_ib`` (``n_neighbors`` neighbours, itself
    excluded) the inverse Simpson index ``1 / Σ_b p_ib²`` is the effective number of batches
    around it: 1 when all neighbours come from one batch, ``B`` when the ``B`` batches are
    equally represented. As in scib, it is rescaled to ``(LISI − 1) / (B − 1)`` and averaged.
    Unlike Korsunsky et al. (2019), the neighbours are weighted equally instead of by a
    Gaussian kernel of fixed perplexity.

    Parameters
    ----------
    embedding
        ``(n_cells, d)`` coordinates.
    batch
        ``n_cells`` batch labels.
    n_neighbors
        Neighbours per cell.
    per_cell
        Return the rescaled value of every cell instead of the mean.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.metrics import ilisi
    >>> x = np.repeat(np.arange(50.0), 4)[:, None]  # 50 sites, 4 cells each, 2 per batch
    >>> b = np.tile([0, 0, 1, 1], 50)
    >>> round(ilisi(x, b, n_neighbors=3), 3)  # each cell: 1 of its batch, 2 of the other
    0.8
    """
    counts, n_batches = _batch_counts(embedding, batch, n_neighbors)
    p = counts / counts.sum(1, keepdims=True)
    lisi = 1.0 / (p**2).sum(1)
    v = (lisi - 1.0) / (n_batches - 1.0)
    return v if per_cell else float(v.mean())
