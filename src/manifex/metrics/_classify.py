"""Array-level classifiers shared by :mod:`manifex.tl` and :mod:`manifex.metrics`.

Nothing here knows about AnnData: inputs are ``(n, d)`` coordinates and label arrays.

* nearest class prototype (the mean of a class's examples) with the class probability of an
  isotropic Gaussian around the prototypes (:func:`class_prototypes`, :func:`nearest_prototype`);
* a k-nearest-neighbour vote (:func:`knn_vote`);
* per-class distance calibration for calling cells far from every class unknown
  (:class:`ClassDistance`, :func:`fill_thresholds`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "ClassDistance",
    "class_prototypes",
    "fill_thresholds",
    "knn_vote",
    "nearest_prototype",
    "pooled_variance",
    "softmax_rows",
    "squared_distances_to_centres",
]

#: Largest number of float64 values in one block of a query × prototype × dimension difference.
_BLOCK_VALUES = 4_000_000


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits.

    Examples
    --------
    >>> from manifex.metrics._classify import softmax_rows
    >>> softmax_rows(np.array([[0.0, 0.0], [1000.0, 0.0]])).round(3).tolist()
    [[0.5, 0.5], [1.0, 0.0]]
    """
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def squared_distances_to_centres(xq: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(n_query, n_centres)`` squared Euclidean distances, in blocks of rows (exact differences).

    Examples
    --------
    >>> from manifex.metrics._classify import squared_distances_to_centres
    >>> squared_distances_to_centres(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0]])).ravel().tolist()
    [0.0, 25.0]
    """
    xq = np.asarray(xq, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    n, c = xq.shape[0], centres.shape[0]
    step = max(1, _BLOCK_VALUES // max(1, c * xq.shape[1]))
    out = np.empty((n, c))
    for s in range(0, n, step):
        out[s : s + step] = ((xq[s : s + step, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return out


def class_prototypes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes (sorted), their prototypes (mean of each class's rows) and their sizes.

    Examples
    --------
    >>> from manifex.metrics._classify import class_prototypes
    >>> classes, protos, counts = class_prototypes(np.array([[0.0], [2.0], [10.0]]), np.array(["a", "a", "b"]))
    >>> classes.tolist(), protos.ravel().tolist(), counts.tolist()
    (['a', 'b'], [1.0, 10.0], [2, 1])
    """
    classes, counts = np.unique(y, return_counts=True)
    protos = np.stack([x[y == c].mean(0) for c in classes])
    return classes, protos, counts


def pooled_variance(
    x: np.ndarray, y: np.ndarray, classes: np.ndarray, protos: np.ndarray, *, min_count: int = 1
) -> float | None:
    """Pooled within-class variance per dimension: mean squared distance to the own prototype / d.

    Only classes with at least ``min_count`` rows take part; ``None`` when there are none.

    Examples
    --------
    >>> from manifex.metrics._classify import pooled_variance
    >>> x, y = np.array([[0.0], [2.0], [10.0]]), np.array(["a", "a", "b"])
    >>> pooled_variance(x, y, np.array(["a", "b"]), np.array([[1.0], [10.0]]), min_count=2)
    1.0
    """
    resid = x - protos[np.searchsorted(classes, y)]
    sizes = dict(zip(*np.unique(y, return_counts=True)))
    used = np.array([sizes[c] >= min_count for c in y])
    if not used.any():
        return None
    return float((resid[used] ** 2).sum(1).mean() / x.shape[1])


def nearest_prototype(
    xq: np.ndarray, protos: np.ndarray, sigma2: float | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Index of each query row's nearest prototype, its confidence and all squared distances.

    The confidence is the class probability under isotropic Gaussians of variance ``sigma2``
    (per dimension) around the prototypes, ``softmax(−d² / 2σ²)`` at the chosen class; ``None``
    when ``sigma2`` is ``None``. Ties go to the first prototype.

    Examples
    --------
    >>> from manifex.metrics._classify import nearest_prototype
    >>> pred, conf, _ = nearest_prototype(np.array([[0.1], [9.0]]), np.array([[0.0], [10.0]]), sigma2=1.0)
    >>> pred.tolist(), bool(conf.min() > 0.99)
    ([0, 1], True)
    """
    d2 = squared_distances_to_centres(xq, protos)
    pred = d2.argmin(1)
    conf = None
    if sigma2 is not None:
        prob = softmax_rows(-d2 / (2 * max(float(sigma2), 1e-12)))
        conf = prob[np.arange(len(pred)), pred]
    return pred, conf, d2


def knn_vote(
    xr: np.ndarray, codes: np.ndarray, n_classes: int, xq: np.ndarray, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote of each query row's ``n_neighbors`` nearest reference rows.

    ``codes`` are the reference rows' class indices in ``0..n_classes-1``. Ties go to the class
    of the nearer neighbours. Returns the predicted class index and the winner's share of the
    votes.

    Examples
    --------
    >>> from manifex.metrics._classify import knn_vote
    >>> xr = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> pred, conf = knn_vote(xr, np.array([0, 0, 1, 1]), 2, np.array([[0.5], [10.2]]), 2)
    >>> pred.tolist(), conf.tolist()
    ([0, 1], [1.0, 1.0])
    """
    from sklearn.neighbors import NearestNeighbors

    kk = min(int(n_neighbors), xr.shape[0])
    _, idx = NearestNeighbors(n_neighbors=kk).fit(xr).kneighbors(xq)
    votes = np.zeros((xq.shape[0], n_classes))
    rank_w = 1.0 - 1e-6 * np.arange(kk)  # ties go to the class of the nearer neighbours
    np.add.at(
        votes, (np.repeat(np.arange(xq.shape[0]), kk), codes[idx].ravel()), np.tile(rank_w, xq.shape[0])
    )
    pred = votes.argmax(1)
    return pred, np.round(votes.max(1)) / kk


def fill_thresholds(thr: Any) -> np.ndarray:
    """Replace undefined (NaN) or zero per-class thresholds by the median of the others.

    Examples
    --------
    >>> from manifex.metrics._classify import fill_thresholds
    >>> fill_thresholds([1.0, np.nan, 3.0]).tolist()
    [1.0, 2.0, 3.0]
    """
    thr = np.asarray(thr, dtype=np.float64)
    good = np.isfinite(thr) & (thr > 0)
    fill = float(np.median(thr[good])) if good.any() else 1.0
    thr = np.where(good, thr, fill)
    return np.maximum(thr, 1e-12)


class ClassDistance:
    """Distance of points to each class: to the class's ``m``-th nearest member.

    For class ``c`` with ``n_c`` members, ``m_c = min(n_neighbors, n_c − 1)`` (at least 1). The
    threshold of a class (:meth:`thresholds`) is the ``q`` quantile over its members of the
    distance to their ``m_c``-th nearest *other* member: a point farther than that from every
    class is farther from all of them than a share ``1 − q`` of their own members.

    Examples
    --------
    >>> from manifex.metrics._classify import ClassDistance
    >>> x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    >>> cd = ClassDistance(x, np.array(list("aaabbb")), np.array(["a", "b"]), n_neighbors=1)
    >>> cd.thresholds(1.0).tolist(), cd.distance(np.array([[5.0]])).tolist()
    ([1.0, 1.0], [[3.0, 5.0]])
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: np.ndarray, *, n_neighbors: int) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.classes = classes
        self._fitted: list[tuple[Any, int, np.ndarray]] = []
        for c in classes:
            pts = x[y == c]
            m = max(1, min(int(n_neighbors), pts.shape[0] - 1))
            nn = NearestNeighbors(n_neighbors=min(m + 1, pts.shape[0])).fit(pts)
            own = nn.kneighbors(pts, n_neighbors=m + 1)[0][:, m] if pts.shape[0] >= 2 else np.array([])
            self._fitted.append((nn, m, own))

    def thresholds(self, q: float) -> np.ndarray:
        """Per class, the ``q`` quantile of its members' own distance (NaN for single members)."""
        return np.array([float(np.quantile(own, q)) if own.size else np.nan for _, _, own in self._fitted])

    def distance(self, xq: np.ndarray) -> np.ndarray:
        """``(n_query, n_classes)`` distance to the ``m_c``-th nearest member of each class."""
        d = np.empty((xq.shape[0], len(self.classes)))
        for j, (nn, m, _) in enumerate(self._fitted):
            m_eff = min(m, nn.n_samples_fit_)
            d[:, j] = nn.kneighbors(xq, n_neighbors=m_eff)[0][:, m_eff - 1]
        return d
