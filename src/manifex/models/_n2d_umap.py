"""N2D's steps after the autoencoder: seeded UMAPs of the code, the placement of the cells outside
a UMAP's subsample, and the Gaussian mixture with its choice of the number of clusters; and
:class:`ManifoldClustering`, the methods :class:`~manifex.models.N2D` builds from them."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scanpy import logging as logg

from .._utils import check_random_state, torch_threads_kept
from ..io._sklearn_state import gmm_from_state, gmm_state, umap_from_state, umap_state
from ..neighbors import knn_query

__all__ = [
    "ManifoldClustering",
    "choose_k",
    "first_two",
    "fit_umap",
    "make_gmm",
    "make_umap",
    "nearest_rows",
    "subsample_rows",
    "umap_transform",
]


def subsample_rows(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded subsample of ``size`` of ``n`` rows, or ``None`` when all rows are used."""
    if size is None or n <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def make_umap(n_components: int, *, n_neighbors: int, min_dist: float, metric: str, seed: int):
    """A seeded umap-learn UMAP (single-threaded, hence deterministic)."""
    from umap import UMAP

    return UMAP(
        n_neighbors=n_neighbors,
        min_dist=float(min_dist),
        n_components=n_components,
        metric=metric,
        random_state=seed,
        n_jobs=1,
        verbose=False,
    )


def nearest_rows(
    reference: np.ndarray, queries: np.ndarray, device: Any = "auto", seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """The nearest ``reference`` row (Euclidean) of each query, and how it was found.

    :func:`~manifex.neighbors.knn_query` with ``method="auto"``: exact (ties to the lower row)
    while the pairs are few, else a faiss IVF index tuned to recall 0.95 (measured on a sample).
    """

    ind, _, info = knn_query(reference, queries, 1, device=device, random_state=seed, return_info=True)
    return ind[:, 0], {**info, "purpose": "placement of the cells outside umap_subsample"}


def fit_umap(
    reducer: Any, code: np.ndarray, fit_rows: np.ndarray | None, nearest: np.ndarray | None = None
) -> tuple[Any, np.ndarray]:
    """Fit the UMAP ``reducer`` on ``code`` (or on its ``fit_rows``, placing the rest); return
    it and the embedding of every row.

    The rows outside ``fit_rows`` take the position of their ``nearest`` fitted row (positions
    in ``fit_rows``, from :func:`nearest_rows`), or go through ``UMAP.transform`` when
    ``nearest`` is ``None``.
    """
    n_components = reducer.n_components
    with warnings.catch_warnings(), torch_threads_kept():
        warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*spectral initialisation.*")
        if fit_rows is None:
            return reducer, np.asarray(reducer.fit_transform(code), dtype=np.float32)
        out = np.empty((code.shape[0], n_components), dtype=np.float32)
        fitted = np.asarray(reducer.fit_transform(code[fit_rows]), dtype=np.float32)
        out[fit_rows] = fitted
        rest = np.setdiff1d(np.arange(code.shape[0]), fit_rows, assume_unique=True)
        if nearest is not None:
            out[rest] = fitted[nearest]
            return reducer, out
        for s in range(0, len(rest), 100_000):
            part = rest[s : s + 100_000]
            out[part] = reducer.transform(code[part])
    return reducer, out


def umap_transform(reducer: Any, code: np.ndarray) -> np.ndarray:
    """``reducer.transform(code)`` as float32, without umap-learn's n_jobs warning."""
    with warnings.catch_warnings(), torch_threads_kept():
        warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
        return np.asarray(reducer.transform(code), dtype=np.float32)


def first_two(manifold: np.ndarray) -> np.ndarray:
    """A 2-d map from a manifold: its first two axes (a 1-d manifold padded with zeros)."""
    return manifold[:, :2] if manifold.shape[1] >= 2 else np.hstack([manifold, np.zeros_like(manifold)])


def make_gmm(k: int, *, n_init: int, reg_covar: float, seed: int):
    """A full-covariance Gaussian mixture with k-means starts."""
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(
        n_components=k,
        covariance_type="full",
        n_init=n_init,
        init_params="kmeans",
        reg_covar=reg_covar,
        max_iter=300,
        random_state=seed,
    )


def choose_k(
    manifold: np.ndarray, k_range: tuple[int, int], *, n_init: int, reg_covar: float, seed: int
) -> tuple[int, dict[str, np.ndarray]]:
    """The number of clusters in ``k_range`` (inclusive) with the lowest BIC of a mixture fitted
    with ``min(n_init, 3)`` starts."""
    k_min, k_max = int(k_range[0]), int(min(k_range[1], manifold.shape[0] - 1))
    ks = np.arange(k_min, max(k_min, k_max) + 1)
    n_init = min(n_init, 3)
    bic = np.array(
        [
            make_gmm(int(k), n_init=n_init, reg_covar=reg_covar, seed=seed).fit(manifold).bic(manifold)
            for k in ks
        ]
    )
    return int(ks[int(np.argmin(bic))]), {"k": ks.astype(np.int64), "bic": bic.astype(np.float64)}


class ManifoldClustering:
    """The clustering half of :class:`~manifex.models.N2D`, as its methods: the UMAP manifold of
    the autoencoder's code, the Gaussian mixture on it and the 2-d map; new cells placed and
    assigned the same way; the UMAPs and the mixture saved as plain data."""

    def _fit_clusters(self, code: np.ndarray, plan: Any) -> None:
        """Fit the UMAPs and the mixture on ``code`` (the timings go to ``plan.timed``)."""
        seed, n = plan.seed, code.shape[0]
        with plan.timed("umap"):
            fit_rows = subsample_rows(n, self.umap_subsample, seed)
            nearest, self.knn_info_ = None, None
            if fit_rows is not None:
                how = self._placement()
                logg.info(f"    UMAP fitted on {len(fit_rows)} of {n} cells, the others placed by {how!r}")
                if how == "nearest":
                    with plan.timed("nearest_search"):
                        rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
                        nearest, self.knn_info_ = nearest_rows(code[fit_rows], code[rest], self.device_, seed)
            self.umap_, self.manifold_ = fit_umap(
                self._umap(self._manifold_dim(), seed), code, fit_rows, nearest
            )
        with plan.timed("gmm"):
            if self.n_clusters is None:
                self.n_clusters_, self.bic_ = choose_k(
                    self.manifold_,
                    self.k_range,
                    n_init=self.gmm_n_init,
                    reg_covar=self.gmm_reg_covar,
                    seed=seed,
                )
                logg.info(f"    chose n_clusters={self.n_clusters_} by BIC over k={list(self.k_range)}")
            else:
                self.n_clusters_, self.bic_ = int(self.n_clusters), None
            gmm = make_gmm(self.n_clusters_, n_init=self.gmm_n_init, reg_covar=self.gmm_reg_covar, seed=seed)
            self.gmm_ = gmm.fit(self.manifold_)
            self.proba_ = self.gmm_.predict_proba(self.manifold_)
            self.labels_ = self.proba_.argmax(1).astype(np.int64)
        if self.map_2d:
            with plan.timed("map_2d"):
                self.umap2d_, self.embedding_ = fit_umap(self._umap(2, seed), code, fit_rows, nearest)
        else:  # the map is the manifold's first two axes
            self.umap2d_, self.embedding_ = None, first_two(self.manifold_)

    def _umap(self, n_components: int, seed: int) -> Any:
        return make_umap(
            n_components, n_neighbors=self.n_neighbors, min_dist=self.min_dist, metric=self.metric, seed=seed
        )

    def _place(self, code: np.ndarray, space: str) -> np.ndarray:
        """The manifold (``space="manifold"``) or map position of new cells' ``code``."""
        if self._places_nearest():  # as the fit placed the cells outside its subsample
            nearest, _ = nearest_rows(
                self.umap_._raw_data, code, self.device_, check_random_state(self.random_state)
            )
            if space == "manifold":
                return self.umap_.embedding_[nearest]
            if self.umap2d_ is not None:  # fitted on the same subsample
                return self.umap2d_.embedding_[nearest]
            return first_two(self.umap_.embedding_[nearest])
        if space == "manifold":
            return umap_transform(self.umap_, code)
        if self.umap2d_ is None:  # map_2d=False: the map is the manifold's first two axes
            return first_two(umap_transform(self.umap_, code))
        return umap_transform(self.umap2d_, code)

    def _places_nearest(self) -> bool:
        """Whether the UMAPs were fitted on a subsample and the other cells placed at their
        nearest subsample cell: new cells are then placed the same way."""
        return self._placement() == "nearest" and self.umap_.embedding_.shape[0] < self.labels_.shape[0]

    def _placement(self) -> str:
        if self.placement == "auto":
            return "nearest" if self.metric == "euclidean" else "transform"
        return self.placement

    def _manifold_dim(self) -> int:
        return int(self.manifold_dim) if self.manifold_dim is not None else self.code_dim_

    # ---- clusters of new cells --------------------------------------------------------------
    def fit_predict(self, X: Any, y: None = None, *, feature_names: Any = None) -> np.ndarray:
        """Fit and return the cluster of each training cell (``labels_``).

        Examples
        --------
        >>> import numpy as np, manifex as mx
        >>> x = np.random.default_rng(0).normal(size=(100, 5)).astype("float32")
        >>> mx.models.N2D(n_clusters=2, n_steps=10, map_2d=False, progress=False).fit_predict(x).shape
        (100,)
        """
        return self.fit(X, feature_names=feature_names).labels_

    def predict_proba(self, X: Any, *, feature_names: Any = None) -> np.ndarray:
        """Cluster probabilities of new cells, shape ``(n, n_clusters_)``.

        Examples
        --------
        >>> import numpy as np, manifex as mx
        >>> x = np.random.default_rng(0).normal(size=(100, 5)).astype("float32")
        >>> m = mx.models.N2D(n_clusters=2, n_steps=10, map_2d=False, progress=False).fit(x)
        >>> m.predict_proba(x[:4]).shape
        (4, 2)
        """
        manifold = self.transform(X, feature_names=feature_names, space="manifold")
        return self.gmm_.predict_proba(manifold)

    def predict(self, X: Any, *, feature_names: Any = None) -> np.ndarray:
        """Cluster of each new cell from the fitted autoencoder, manifold and mixture.

        Examples
        --------
        >>> import numpy as np, manifex as mx
        >>> x = np.random.default_rng(0).normal(size=(100, 5)).astype("float32")
        >>> m = mx.models.N2D(n_clusters=2, n_steps=10, map_2d=False, progress=False).fit(x)
        >>> m.predict(x[:4]).shape
        (4,)
        """
        return self.predict_proba(X, feature_names=feature_names).argmax(1).astype(np.int64)

    # ---- persistence ------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        """The fitted state with the UMAPs and the mixture as plain data (for a safe file)."""
        state = super()._get_state()
        state["umap_"] = umap_state(self.umap_)
        state["umap2d_"] = umap_state(self.umap2d_) if self.umap2d_ is not None else None
        state["gmm_"] = gmm_state(self.gmm_)
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        """Rebuild the UMAPs and the mixture from :meth:`_get_state`'s plain data."""
        state = dict(state)
        self.umap_ = umap_from_state(state.pop("umap_"))
        u2 = state.pop("umap2d_")
        self.umap2d_ = umap_from_state(u2) if u2 is not None else None
        self.gmm_ = gmm_from_state(state.pop("gmm_"))
        super()._set_state(state)
