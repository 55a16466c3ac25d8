"""Global layout scores after Kobak & Berens (2019): distance correlation (CPD) and class-mean
neighbours (KNC)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import cdist, pdist
from scipy.stats import rankdata

from ._checks import _categories, _check_n_neighbors, _emb


def _input(X: Any, n: int) -> np.ndarray | sp.csr_matrix:
    """``X`` (dense or sparse) after checking it is 2-d, finite and has ``n`` rows.

    Floating-point data keep their precision (no float64 copy of a large float32 matrix); the
    scores compute in float64 on the rows or class sums they need.
    """
    if X is None:
        raise TypeError("`X` is required: the input representation, e.g. adata.obsm['X_pca'].")
    x = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    values = x.data if sp.issparse(x) else x
    if x.ndim != 2:
        raise ValueError(f"`X` must be 2-d, got shape {x.shape}.")
    if x.shape[0] != n:
        raise ValueError(f"`X` has {x.shape[0]} rows but `embedding` has {n}.")
    if not np.isfinite(values).all():
        raise ValueError("`X` contains NaN or infinite values.")
    return x


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the ranks (ties averaged) of ``a`` and ``b``; NaN when either is constant."""
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt(ra @ ra) * np.sqrt(rb @ rb)
    return float(ra @ rb / den) if den > 0 else float("nan")


def cpd(embedding: Any, X: Any, *, n_cells: int | None = 1000, random_state: int = 0) -> float:
    """Correlation of pairwise distances: how well the map keeps the input's distances in order.

    The Spearman correlation between the Euclidean distances of all pairs of ``n_cells`` random
    cells in ``embedding`` and the distances of the same pairs in ``X`` (Kobak & Berens, Nat Commun
    2019). 1 when every pair keeps its rank (e.g. a rotated and scaled copy), about 0 for a map
    unrelated to the input. Ties get their average rank. NaN when all sampled distances in either
    space are equal (the correlation is undefined, e.g. a map collapsed to one point).

    Parameters
    ----------
    embedding
        ``(n, d)`` coordinates, ``n ≥ 3``.
    X
        ``(n, D)`` input representation (dense or sparse), e.g. ``adata.obsm["X_pca"]``.
    n_cells
        Cells sampled (without replacement) when ``n`` is larger; ``None`` uses all cells. At
        least 3. The cost is quadratic in it: 1,000 cells give 499,500 pairs.
    random_state
        Seed of the cell sample.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> x = np.random.default_rng(0).normal(size=(200, 10))
    >>> mx.metrics.cpd(3 * x[:, :2], x[:, :2])  # a scaled copy keeps every distance's rank
    1.0
    >>> round(mx.metrics.cpd(x[:, :2], x), 2)  # the first two of ten coordinates keep part of it
    0.45
    """
    e = _emb(embedding)
    n = e.shape[0]
    x = _input(X, n)
    if n < 3:
        raise ValueError(f"`embedding` needs at least 3 rows for a correlation of distances, got {n}.")
    if n_cells is not None:
        if isinstance(n_cells, bool) or not isinstance(n_cells, int | np.integer) or n_cells < 3:
            raise ValueError(f"`n_cells` must be an integer ≥ 3 or None, got {n_cells!r}.")
    rows = np.arange(n)
    if n_cells is not None and n > n_cells:
        rows = np.sort(np.random.default_rng(random_state).choice(n, int(n_cells), replace=False))
    xs = x[rows]
    xs = xs.toarray() if sp.issparse(xs) else xs
    return _rank_correlation(pdist(e[rows]), pdist(np.asarray(xs, dtype=np.float64)))


def _class_means(x: np.ndarray | sp.csr_matrix, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, D)`` mean of the rows of ``x`` in each class (dense or sparse ``x``)."""
    n = codes.shape[0]
    member = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_classes, n))
    sums = member @ x
    sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums)
    return sums.astype(np.float64) / np.bincount(codes, minlength=n_classes)[:, None]


def _nearest_classes(means: np.ndarray, k: int) -> np.ndarray:
    """Each class's ``k`` nearest other classes by the distance of the means, ties to the lower index."""
    d = cdist(means, means)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def knc(embedding: Any, X: Any, labels: Any, *, n_neighbors: int = 3) -> float:
    """Nearest classes kept: does the map keep which classes are close to which?

    For each class, its ``n_neighbors`` nearest other classes by the distance between class means
    in ``X`` and, separately, between class means in ``embedding``; the score is the share of the
    former found among the latter, averaged over the classes (Kobak & Berens, Nat Commun 2019; they
    use about 3 of ten classes). 1 when every class keeps its nearest classes, ``n_neighbors /
    (n_classes - 1)`` in expectation for a random arrangement of the means.

    Distances between means are Euclidean; a tie is broken in favour of the class that comes first
    (sorted labels, or the categories' order of a categorical). With ``n_classes - 1`` neighbours
    every other class is a neighbour and the score is 1 whatever the map.

    Parameters
    ----------
    embedding
        ``(n, d)`` coordinates.
    X
        ``(n, D)`` input representation (dense or sparse), e.g. ``adata.obsm["X_pca"]``.
    labels
        ``(n,)`` class labels, e.g. ``adata.obs["cell_type"]``; missing values are refused.
    n_neighbors
        Nearest classes compared per class; smaller than the number of classes (a ``ValueError``
        otherwise, nothing is clipped).

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> means = np.array([[0, 0], [1, 0], [3, 0], [7, 0], [12, 0]])  # five classes on a line
    >>> y = np.repeat(np.arange(5), 2)
    >>> x = means[y] + np.tile([[0.0, -0.1], [0.0, 0.1]], (5, 1))
    >>> mx.metrics.knc(x[:, ::-1] * 2, x, y, n_neighbors=2)  # a reflected, scaled copy
    1.0

    A map that swaps classes 0 and 2: classes 3 and 4 each keep one of their two nearest
    classes, the others both, ``(3 × 1 + 2 × 0.5) / 5``:

    >>> mx.metrics.knc(means[np.array([2, 1, 0, 3, 4])[y]], x, y, n_neighbors=2)
    0.8
    """
    e = _emb(embedding)
    n = e.shape[0]
    x = _input(X, n)
    cat = _categories(labels, "labels")
    if len(cat) != n:
        raise ValueError(f"`labels` has {len(cat)} entries but `embedding` has {n} rows.")
    n_classes = len(cat.categories)
    k = _check_n_neighbors(
        n_neighbors,
        n_classes,
        upper=f"the number of classes ({n_classes}): KNC needs n_neighbors + 1 classes",
    )
    codes = np.asarray(cat.codes, dtype=np.int64)
    near_x = _nearest_classes(_class_means(x, codes, n_classes), k)
    near_e = _nearest_classes(_class_means(e, codes, n_classes), k)
    kept = [np.intersect1d(a, b).size for a, b in zip(near_x, near_e, strict=True)]
    return float(np.mean(kept) / k)
