"""N2D's steps after the autoencoder: UMAP manifolds of the code and the Gaussian mixture."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .._utils import torch_threads_kept
from ..io._sklearn_state import gmm_from_state, gmm_state, umap_from_state, umap_state
from ..neighbors import knn_query

__all__ = [
    "choose_k",
    "fit_umap",
    "make_gmm",
    "map_of",
    "n2d_set_state",
    "n2d_state",
    "nearest_rows",
    "subsample_rows",
    "umap_transform",
]


def subsample_rows(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded subsample of ``size`` of ``n`` rows, or ``None`` when all rows are used."""
    if size is None or n <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def map_of(manifold: np.ndarray) -> np.ndarray:
    """The 2-d map of a manifold when no 2-d UMAP was fitted: its first two axes (a 1-d manifold
    beside a column of zeros)."""
    return manifold[:, :2] if manifold.shape[1] >= 2 else np.hstack([manifold, np.zeros_like(manifold)])


def make_umap(model: Any, n_components: int, seed: int):
    """A seeded umap-learn UMAP with the model's settings (single-threaded, hence deterministic)."""
    from umap import UMAP

    return UMAP(
        n_neighbors=model.n_neighbors,
        min_dist=float(model.min_dist),
        n_components=n_components,
        metric=model.metric,
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
    model: Any,
    n_components: int,
    code: np.ndarray,
    seed: int,
    fit_rows: np.ndarray | None,
    nearest: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    """Fit a UMAP on ``code`` (or on its ``fit_rows``, placing the rest); return it and the
    embedding of every row.

    The rows outside ``fit_rows`` take the position of their ``nearest`` fitted row (positions
    in ``fit_rows``, from :func:`nearest_rows`), or go through ``UMAP.transform`` when
    ``nearest`` is ``None``.
    """
    reducer = make_umap(model, n_components, seed)
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


def make_gmm(model: Any, k: int, n_init: int, seed: int):
    """A full-covariance Gaussian mixture with k-means starts."""
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(
        n_components=k,
        covariance_type="full",
        n_init=n_init,
        init_params="kmeans",
        reg_covar=model.gmm_reg_covar,
        max_iter=300,
        random_state=seed,
    )


def choose_k(model: Any, manifold: np.ndarray, seed: int) -> tuple[int, dict[str, np.ndarray]]:
    """The number of clusters in ``model.k_range`` with the lowest BIC (3 starts each)."""
    k_min, k_max = int(model.k_range[0]), int(min(model.k_range[1], manifold.shape[0] - 1))
    ks = np.arange(k_min, max(k_min, k_max) + 1)
    n_init = min(model.gmm_n_init, 3)
    bic = np.array([make_gmm(model, int(k), n_init, seed).fit(manifold).bic(manifold) for k in ks])
    return int(ks[int(np.argmin(bic))]), {"k": ks.astype(np.int64), "bic": bic.astype(np.float64)}


def n2d_state(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """The fitted state with the UMAPs and the mixture as plain data (for a safe file)."""

    state = dict(state)
    state["umap_"] = umap_state(model.umap_)
    state["umap2d_"] = umap_state(model.umap2d_) if model.umap2d_ is not None else None
    state["gmm_"] = gmm_state(model.gmm_)
    return state


def n2d_set_state(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the UMAPs and the mixture from :func:`n2d_state`; return the rest of the state."""

    state = dict(state)
    model.umap_ = umap_from_state(state.pop("umap_"))
    u2 = state.pop("umap2d_")
    model.umap2d_ = umap_from_state(u2) if u2 is not None else None
    model.gmm_ = gmm_from_state(state.pop("gmm_"))
    return state
