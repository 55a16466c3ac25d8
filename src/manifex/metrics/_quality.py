from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler

from ._checks import _categories, _check_n_neighbors, _emb
from ._global import cpd, knc


def _labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"`labels` must be 1-d with {n} entries, got shape {y.shape}.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("`labels` contains NaN.")
    return LabelEncoder().fit_transform(y.astype(str) if y.dtype.kind not in "iub" else y)


def _cv(y: np.ndarray, n_splits: int, random_state: int) -> StratifiedKFold:
    smallest = np.bincount(y).min()
    splits = int(min(n_splits, max(2, smallest)))
    return StratifiedKFold(n_splits=splits, shuffle=True, random_state=random_state)


def _cv_labels(y: np.ndarray) -> np.ndarray:
    """Drop nothing, but classes with a single member cannot be stratified: merge-safe mask."""
    counts = np.bincount(y)
    return counts[y] >= 2


def _cv_accuracy(make_clf: Any, embedding: Any, labels: Any, n_splits: int, random_state: int) -> float:
    """Mean accuracy of ``make_clf(n_cells)`` under stratified k-fold CV, on the cells whose
    class has at least two members."""
    e, y = _emb(embedding), _labels(labels, np.shape(embedding)[0])
    keep = _cv_labels(y)
    e, y = e[keep], LabelEncoder().fit_transform(y[keep])
    return float(cross_val_score(make_clf(len(y)), e, y, cv=_cv(y, n_splits, random_state)).mean())


def knn_accuracy(
    embedding: Any, labels: Any, *, n_neighbors: int = 15, n_splits: int = 5, random_state: int = 0
) -> float:
    """Mean accuracy of a k-nearest-neighbour classifier under stratified k-fold CV.

    Classes with fewer than two members are left out (they cannot be stratified).

    Parameters
    ----------
    embedding
        ``(n, d)`` coordinates, e.g. ``adata.obsm["X_dlme"]``.
    labels
        ``(n,)`` class labels.
    n_neighbors
        Neighbours of the classifier (fewer when a training fold has fewer cells).
    n_splits
        Folds (fewer when the smallest class is smaller).
    random_state
        Seed of the fold split.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> round(mx.metrics.knn_accuracy(adata.obsm["X_umap"], adata.obs["bulk_labels"]), 3)
    0.82

    Score an ``mx.tl`` result the same way, e.g. ``adata.obsm["X_dlme"]``.
    """
    n_neighbors = _check_n_neighbors(n_neighbors)
    return _cv_accuracy(
        lambda n: KNeighborsClassifier(n_neighbors=min(n_neighbors, n - 1)),
        embedding,
        labels,
        n_splits,
        random_state,
    )


def linear_accuracy(embedding: Any, labels: Any, *, n_splits: int = 5, random_state: int = 0) -> float:
    """Mean accuracy of a standardised multinomial logistic regression under stratified CV.

    Parameters
    ----------
    embedding
        ``(n, d)`` coordinates.
    labels
        ``(n,)`` class labels; classes with a single member are left out.
    n_splits
        Folds (fewer when the smallest class is smaller).
    random_state
        Seed of the fold split.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> round(mx.metrics.linear_accuracy(adata.obsm["X_umap"], adata.obs["bulk_labels"]), 3)
    0.714
    """
    from sklearn.linear_model import LogisticRegression

    return _cv_accuracy(
        lambda n: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        embedding,
        labels,
        n_splits,
        random_state,
    )


def matched_confusion(labels_true: Any, labels_pred: Any) -> tuple[pd.DataFrame, float]:
    """Cluster × label counts with the clusters matched one to one to labels (Hungarian).

    The matching maximises the number of cells whose cluster is matched to their label; that
    number over all cells is the clustering accuracy (:func:`clustering_accuracy`).

    Parameters
    ----------
    labels_true
        ``(n,)`` reference labels; missing values are refused.
    labels_pred
        ``(n,)`` cluster labels (any names); missing values are refused.

    Returns
    -------
    The table (rows: clusters, each placed at the row of the label it is matched to, unmatched
    clusters last; columns: the labels in sorted or categorical order) and the accuracy of the
    matching.

    Examples
    --------
    >>> from manifex.metrics import matched_confusion
    >>> table, acc = matched_confusion(["x", "x", "y", "y", "y"], ["b", "b", "a", "a", "b"])
    >>> table
    label  x  y
    cluster
    b      2  1
    a      0  2
    >>> acc
    0.8
    """
    from scipy.optimize import linear_sum_assignment

    t = _categories(labels_true, "labels_true")
    p = _categories(labels_pred, "labels_pred")
    if len(t) != len(p):
        raise ValueError(f"`labels_true` has {len(t)} entries but `labels_pred` has {len(p)}.")
    if len(t) == 0:
        raise ValueError("`labels_true` and `labels_pred` are empty.")
    counts = np.zeros((len(p.categories), len(t.categories)), dtype=np.int64)
    np.add.at(counts, (p.codes, t.codes), 1)
    rows, cols = linear_sum_assignment(-counts)
    acc = float(counts[rows, cols].sum() / len(t))
    order = [int(r) for r, _ in sorted(zip(rows, cols, strict=True), key=lambda rc: rc[1])]
    order += [i for i in range(counts.shape[0]) if i not in set(order)]
    table = pd.DataFrame(
        counts[order],
        index=pd.Index(p.categories[order], name="cluster"),
        columns=pd.Index(t.categories, name="label"),
    )
    return table, acc


def clustering_accuracy(labels_true: Any, labels_pred: Any) -> float:
    """Best one-to-one matching accuracy between two labelings (Hungarian algorithm).

    Parameters
    ----------
    labels_true
        Reference labels; missing values are refused.
    labels_pred
        Cluster labels (any names; matched to the reference labels one to one).

    Examples
    --------
    >>> from manifex.metrics import clustering_accuracy
    >>> clustering_accuracy(["a", "a", "b", "b"], [1, 1, 0, 1])
    0.75
    """
    return matched_confusion(labels_true, labels_pred)[1]


def cluster_scores(
    embedding: Any,
    labels: Any,
    *,
    method: Literal["kmeans", "gmm"] = "kmeans",
    n_clusters: int | None = None,
    random_state: int = 0,
    labels_pred: Any = None,
) -> dict[str, float]:
    """ACC (Hungarian), NMI and ARI of k-means / GMM clusters with k = number of classes.

    Pass ``labels_pred`` to score a given clustering instead (e.g. N2D's or Leiden's); the
    embedding is then not needed and may be ``None``.

    Parameters
    ----------
    embedding
        ``(n, d)`` coordinates to cluster, or ``None`` with ``labels_pred``.
    labels
        ``(n,)`` reference labels.
    method
        ``"kmeans"`` (10 initialisations) or ``"gmm"`` (Gaussian mixture, 3 initialisations).
    n_clusters
        Number of clusters; default the number of classes in ``labels``.
    random_state
        Seed of the clustering.
    labels_pred
        A given clustering to score instead of clustering ``embedding``.

    Returns
    -------
    ``{"acc", "nmi", "ari"}``.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> scores = mx.metrics.cluster_scores(adata.obsm["X_umap"], adata.obs["bulk_labels"])
    >>> list(scores)
    ['acc', 'nmi', 'ari']

    A given clustering (here scanpy's Louvain clusters; N2D's are in ``obs["n2d"]``):

    >>> scores = mx.metrics.cluster_scores(None, adata.obs["bulk_labels"], labels_pred=adata.obs["louvain"])
    >>> round(scores["acc"], 3)
    0.549
    """
    if labels_pred is not None:
        pred = np.asarray(labels_pred)
        if pred.ndim != 1:
            raise ValueError(f"`labels_pred` must be 1-d, got shape {pred.shape}.")
        y = _labels(labels, pred.shape[0])
        if embedding is not None and np.shape(embedding)[0] != y.shape[0]:
            raise ValueError(f"`embedding` has {np.shape(embedding)[0]} rows for {y.shape[0]} labels.")
        labels_pred = LabelEncoder().fit_transform(pred.astype(str))
    else:
        if embedding is None:
            raise ValueError("Pass an `embedding` to cluster, or the clustering as `labels_pred`.")
        e, y = _emb(embedding), _labels(labels, np.shape(embedding)[0])
        k = n_clusters or len(np.unique(y))
        if method == "kmeans":
            from sklearn.cluster import KMeans

            labels_pred = KMeans(k, n_init=10, random_state=random_state).fit_predict(e)
        elif method == "gmm":
            from sklearn.mixture import GaussianMixture

            labels_pred = GaussianMixture(k, n_init=3, random_state=random_state).fit(e).predict(e)
        else:
            raise ValueError(f"`method` must be 'kmeans' or 'gmm', got {method!r}.")
    return {
        "acc": clustering_accuracy(y, labels_pred),
        "nmi": float(normalized_mutual_info_score(y, labels_pred)),
        "ari": float(adjusted_rand_score(y, labels_pred)),
    }


def trustworthiness(
    X: Any,
    embedding: Any,
    *,
    n_neighbors: int = 15,
    n_samples: int | None = 10_000,
    random_state: int = 0,
    chunk_size: int = 1024,
) -> float:
    """Trustworthiness of ``embedding`` with respect to ``X`` (Venna & Kaski), in chunks.

    With ``k = n_neighbors``, ``T = 1 − 2 / (m k (2n − 3k − 1)) Σ_i Σ_{j ∈ U_k(i)} (r(i, j) − k)``
    where ``U_k(i)`` are the embedding neighbours of ``i`` that are not among its k input
    neighbours and ``r`` the rank in the input space (as
    :func:`sklearn.manifold.trustworthiness`). Memory is O(chunk × n); rows are subsampled to ``n_samples``
    (``m``) on large data (``None`` = all rows), which is exact in expectation.

    Parameters
    ----------
    X
        ``(n, D)`` input representation (dense or sparse), e.g. ``adata.obsm["X_pca"]``.
    embedding
        ``(n, d)`` coordinates.
    n_neighbors
        Neighbourhood size, ``1 ≤ n_neighbors < n / 2``.
    n_samples
        Rows scored on large data; ``None`` scores all.
    random_state
        Seed of the row subsample.
    chunk_size
        Rows per block of the distance computation.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> round(mx.metrics.trustworthiness(adata.obsm["X_pca"], adata.obsm["X_umap"], n_neighbors=15), 3)
    0.927
    """
    import torch

    k = _check_n_neighbors(n_neighbors)
    e = _emb(embedding)
    x = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    n = e.shape[0]
    if x.shape[0] != n:
        raise ValueError(f"`X` has {x.shape[0]} rows but `embedding` has {n}.")
    if not k < n / 2:
        raise ValueError(f"`n_neighbors` must be in [1, n/2), got {k} for n={n}.")
    rows = np.arange(n)
    if n_samples is not None and n > n_samples:
        rows = np.sort(np.random.default_rng(random_state).choice(n, n_samples, replace=False))
    xt = torch.as_tensor(x, dtype=torch.float32)
    et = torch.as_tensor(e, dtype=torch.float32)
    total = 0.0
    for start in range(0, rows.size, chunk_size):
        r = torch.as_tensor(rows[start : start + chunk_size])
        dx = torch.cdist(xt[r], xt)
        de = torch.cdist(et[r], et)
        ar = torch.arange(r.numel())
        dx[ar, r] = float("inf")
        de[ar, r] = float("inf")
        # rank of every point in the input space (1 = nearest)
        order = dx.argsort(dim=1)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(1, n + 1).expand(r.numel(), n))
        nn_e = de.topk(k, dim=1, largest=False).indices
        rk = ranks.gather(1, nn_e)
        total += float((rk - k).clamp_min(0).sum())
    m = rows.size
    return float(1.0 - 2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0)) * total)


def evaluate_embedding(
    embedding: Any,
    labels: Any,
    *,
    X: Any = None,
    n_neighbors: int = 15,
    n_splits: int = 5,
    cluster_method: Literal["kmeans", "gmm"] = "kmeans",
    random_state: int = 0,
    knc_neighbors: int = 3,
) -> dict[str, float]:
    """The whole quality protocol in one call: kNN and linear accuracy, ACC / NMI / ARI, trust,
    and with ``X`` the global scores CPD and KNC.

    Parameters
    ----------
    embedding
        ``(n, d)`` coordinates.
    labels
        ``(n,)`` reference labels.
    X
        Input representation for :func:`trustworthiness`, :func:`cpd` and :func:`knc` (e.g.
        ``X_pca``); those are skipped when ``None``.
    n_neighbors
        Neighbours of the kNN classifier and of trustworthiness.
    n_splits
        Cross-validation folds of the two accuracies.
    cluster_method
        ``"kmeans"`` or ``"gmm"`` for :func:`cluster_scores`.
    random_state
        Seed of the folds, the clustering, the trustworthiness subsample and CPD's cell sample.
    knc_neighbors
        Nearest classes of :func:`knc` (its ``n_neighbors``).

    Returns
    -------
    ``knn_acc``, ``linear_acc``, ``acc``, ``nmi``, ``ari``, ``trust`` (when ``X`` is given)
    and ``mean`` of those six; then, when ``X`` is given, ``cpd`` (:func:`cpd`, 1,000 cells)
    and ``knc`` (:func:`knc`; NaN when there are no more than ``knc_neighbors`` classes). The
    global scores are not part of ``mean``.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.metrics import evaluate_embedding
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 50)
    >>> e = rng.normal(size=(100, 2)) + 10 * y[:, None]
    >>> round(evaluate_embedding(e, y)["knn_acc"], 2)
    1.0

    With the input representation, trustworthiness and the two global scores; ``mean`` stays the
    mean of the six scores before it:

    >>> x = np.c_[e, rng.normal(size=(100, 3))]
    >>> scores = evaluate_embedding(e, y, X=x)
    >>> list(scores)
    ['knn_acc', 'linear_acc', 'acc', 'nmi', 'ari', 'trust', 'mean', 'cpd', 'knc']
    >>> scores["knc"]  # two classes have no three nearest classes to compare
    nan
    """
    n_neighbors = _check_n_neighbors(n_neighbors)
    knc_neighbors = _check_n_neighbors(knc_neighbors, name="knc_neighbors")
    out = {
        "knn_acc": knn_accuracy(
            embedding, labels, n_neighbors=n_neighbors, n_splits=n_splits, random_state=random_state
        ),
        "linear_acc": linear_accuracy(embedding, labels, n_splits=n_splits, random_state=random_state),
    }
    out.update(cluster_scores(embedding, labels, method=cluster_method, random_state=random_state))
    if X is not None:
        out["trust"] = trustworthiness(X, embedding, n_neighbors=n_neighbors, random_state=random_state)
    out["mean"] = float(np.mean([v for v in out.values()]))  # the six above, not the global scores
    if X is not None:
        out["cpd"] = cpd(embedding, X, random_state=random_state)
        n_classes = len(_categories(labels, "labels").categories)
        out["knc"] = (
            knc(embedding, X, labels, n_neighbors=knc_neighbors)
            if n_classes > knc_neighbors
            else float("nan")
        )
    return out
