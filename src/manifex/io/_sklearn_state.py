"""Fitted scikit-learn ``GaussianMixture`` and umap-learn ``UMAP`` objects as plain data.

The state dicts hold only arrays, numbers, strings, booleans, ``None`` and lists / dicts of
them (a sparse matrix is split into ``data`` / ``indices`` / ``indptr`` arrays), so they pass
through :func:`manifex.io._format.pack_state` into a safe file. The ``*_from_state`` functions
build fresh objects of the library's own classes and set their fitted attributes: nothing in a
state names a class or a function.

A UMAP's ``transform`` needs its training data, embedding, fuzzy graph, curve parameters and,
from 4,096 training points on, its pynndescent search index; the index is saved too (search
graph, search tree, vertex order, seeds), so that a rebuilt UMAP transforms new points exactly
like the original without rebuilding the index (minutes on a large training set).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["gmm_from_state", "gmm_state", "umap_from_state", "umap_state"]

_STATE_VERSION = 1


# ---- Gaussian mixture ----------------------------------------------------------------------
def gmm_state(gmm: Any) -> dict[str, Any]:
    """The parameters and fitted attributes of a fitted :class:`sklearn.mixture.GaussianMixture`.

    Parameters
    ----------
    gmm
        A fitted mixture (any ``covariance_type``).

    Returns
    -------
    ``{"params": ..., "fitted": {"weights_": ..., "means_": ..., ...}}``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.mixture import GaussianMixture
    >>> from manifex.io._sklearn_state import gmm_from_state, gmm_state
    >>> x = np.random.default_rng(0).normal(size=(60, 2))
    >>> gmm = GaussianMixture(2, random_state=0).fit(x)
    >>> np.array_equal(gmm_from_state(gmm_state(gmm)).predict_proba(x), gmm.predict_proba(x))
    True
    """
    from sklearn.mixture import GaussianMixture

    if not isinstance(gmm, GaussianMixture):
        raise TypeError(f"`gmm` must be a GaussianMixture, got {type(gmm).__name__}.")
    if not hasattr(gmm, "precisions_cholesky_"):
        raise ValueError("`gmm` is not fitted.")
    params = gmm.get_params()
    if not isinstance(params["random_state"], int | None):
        params["random_state"] = None  # only fit uses it
    fitted = {k: _plain(v, k) for k, v in vars(gmm).items() if k.endswith("_") and not k.startswith("_")}
    return {"version": _STATE_VERSION, "params": _plain(params, "params"), "fitted": fitted}


def gmm_from_state(state: dict[str, Any]) -> Any:
    """Rebuild the mixture of :func:`gmm_state`.

    Parameters
    ----------
    state
        What :func:`gmm_state` returned (possibly through a safe file).

    Returns
    -------
    A fitted :class:`sklearn.mixture.GaussianMixture`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.mixture import GaussianMixture
    >>> from manifex.io._sklearn_state import gmm_from_state, gmm_state
    >>> gmm = GaussianMixture(1).fit(np.arange(10.0).reshape(5, 2))
    >>> gmm_from_state(gmm_state(gmm)).means_
    array([[4., 5.]])
    """
    from sklearn.mixture import GaussianMixture

    _check_state(state, "mixture")
    gmm = GaussianMixture(**state["params"])
    for k, v in state["fitted"].items():
        setattr(gmm, k, v)
    return gmm


# ---- UMAP ----------------------------------------------------------------------------------
_UMAP_FITTED = (
    "embedding_",
    "_a",
    "_b",
    "_n_neighbors",
    "_initial_alpha",
    "_small_data",
    "_supervised",
    "_input_hash",
    "_n_features_out",
    "_unique_inverse_",
)
# NNDescent attributes that are functions (rebuilt from the metric), consumed by fit only, or
# saved separately
_NND_SKIP = {
    "_distance_func",
    "_distance_correction",
    "_true_distance_func",
    "_deheap_function",
    "_rerank_function",
    "_search_function",
    "_tree_search",
    "_dist_args",
    "_input_dtype",
    "random_state",
    "_rp_forest",
    "_neighbor_graph",
    "_search_forest",
    "_search_graph",
    "_raw_data",
}
_TREE_FIELDS = ("hyperplanes", "offsets", "children", "indices", "leaf_size")


def umap_state(reducer: Any) -> dict[str, Any]:
    """The parameters and what ``transform`` needs of a fitted ``umap.UMAP``.

    Parameters
    ----------
    reducer
        A fitted UMAP with a named metric (not a callable one) and without densMAP. From
        4,096 training points on (when it has a pynndescent search index) the training data
        must be dense.

    Returns
    -------
    ``{"params", "raw_data", "graph", "fitted", "index"}``, plain data only.

    Examples
    --------
    >>> import numpy as np, umap
    >>> from manifex.io._sklearn_state import umap_from_state, umap_state
    >>> x = np.random.default_rng(0).normal(size=(80, 4)).astype("float32")
    >>> reducer = umap.UMAP(n_neighbors=10, n_epochs=20, random_state=0, n_jobs=1).fit(x)
    >>> same = umap_from_state(umap_state(reducer))
    >>> np.array_equal(same.transform(x[:5] + 0.1), reducer.transform(x[:5] + 0.1))
    True
    """
    if type(reducer).__name__ != "UMAP" or not hasattr(reducer, "embedding_"):
        raise TypeError(f"`reducer` must be a fitted umap.UMAP, got {type(reducer).__name__}.")
    if not hasattr(reducer, "_raw_data"):
        raise ValueError("`reducer` is not fitted.")
    params = reducer.get_params()
    for key in ("metric", "output_metric", "target_metric"):
        if callable(params.get(key)):
            raise TypeError(f"A UMAP with a callable `{key}` cannot be written to a safe file.")
    if not isinstance(params.get("random_state"), int | None):
        params["random_state"] = None  # only fit uses it
    raw = reducer._raw_data
    index = getattr(reducer, "_knn_search_index", None)
    state = {
        "version": _STATE_VERSION,
        "params": _plain(params, "params"),
        "raw_data": _encode_matrix(raw),
        "graph": _encode_matrix(reducer.graph_.tocsr())
        if getattr(reducer, "graph_", None) is not None
        else None,
        "fitted": {k: _plain(getattr(reducer, k), k) for k in _UMAP_FITTED if hasattr(reducer, k)},
        "index": None,
    }
    if not reducer._small_data and index is not None:
        if sp.issparse(raw) or getattr(index, "quantization", None) is not None:
            raise TypeError(
                "A UMAP fitted on sparse data (or with a quantised index) of 4,096 points or more cannot be "
                "written to a safe file: its search index is not saved for that case."
            )
        state["index"] = _nndescent_state(index, raw)
    return state


def umap_from_state(state: dict[str, Any]) -> Any:
    """Rebuild the UMAP of :func:`umap_state`; its ``transform`` gives the original's results.

    Parameters
    ----------
    state
        What :func:`umap_state` returned (possibly through a safe file).

    Returns
    -------
    A fitted ``umap.UMAP`` (example: :func:`umap_state`).
    """
    from umap import UMAP

    _check_state(state, "UMAP")
    reducer = UMAP(**state["params"])
    reducer._raw_data = _decode_matrix(state["raw_data"])
    for k, v in state["fitted"].items():
        setattr(reducer, k, v)
    reducer._validate_parameters()  # metric functions, keyword dicts, disconnection distance
    if state["graph"] is not None:
        reducer.graph_ = _decode_matrix(state["graph"])
    if state["index"] is not None:
        reducer._knn_search_index = _nndescent_from_state(state["index"], reducer._raw_data)
    return reducer


def _nndescent_state(index: Any, raw: np.ndarray) -> dict[str, Any]:
    if not hasattr(index, "_search_graph"):
        index._init_search_graph()  # what the first query would do (the search function is compiled on load)
    attrs = {k: _plain(v, f"index.{k}") for k, v in vars(index).items() if k not in _NND_SKIP}
    order = np.asarray(index._vertex_order)
    own = np.asarray(index._raw_data)
    same = own.shape == raw.shape and np.array_equal(own, raw[order])
    return {
        "attrs": attrs,
        "search_graph": _encode_matrix(index._search_graph),
        "search_forest": [
            {f: _plain(getattr(tree, f), f"index tree {f}") for f in _TREE_FIELDS}
            for tree in index._search_forest
        ],
        # the index keeps the training data in its vertex order; saved only when it differs
        "raw_data": None if same else _encode_matrix(own),
    }


def _nndescent_from_state(state: dict[str, Any], raw: np.ndarray) -> Any:
    from pynndescent import NNDescent
    from pynndescent.rp_trees import FlatTree

    index = NNDescent.__new__(NNDescent)
    index.__dict__.update(state["attrs"])
    order = np.asarray(index._vertex_order)
    own = state["raw_data"]
    index._raw_data = np.ascontiguousarray(raw[order]) if own is None else _decode_matrix(own)
    index._search_graph = _decode_matrix(state["search_graph"])
    index._search_forest = tuple(
        FlatTree(*(t[f] for f in _TREE_FIELDS[:-1]), int(t["leaf_size"])) for t in state["search_forest"]
    )
    metric_kwds = index.metric_kwds or {}
    index._dist_args = tuple(metric_kwds.values())
    index._input_dtype = np.uint8 if index.metric in ("bit_hamming", "bit_jaccard") else np.float32
    index.random_state = None
    index._distance_correction = None
    index._set_distance_func()
    return index


# ---- helpers -------------------------------------------------------------------------------
def _encode_matrix(m: Any) -> dict[str, Any] | np.ndarray:
    if sp.issparse(m):
        m = m.tocsr()
        return {
            "format": "csr",
            "shape": [int(s) for s in m.shape],
            "data": np.asarray(m.data),
            "indices": np.asarray(m.indices),
            "indptr": np.asarray(m.indptr),
        }
    return np.asarray(m)


def _decode_matrix(m: Any) -> Any:
    if isinstance(m, dict):
        return sp.csr_matrix((m["data"], m["indices"], m["indptr"]), shape=tuple(m["shape"]))
    return np.asarray(m)


def _plain(v: Any, where: str) -> Any:
    """``v`` if it is plain data (numpy scalars keep their dtype); TypeError otherwise."""
    if v is None or isinstance(v, bool | int | float | str | np.ndarray | np.generic):
        return v
    if isinstance(v, dict):
        return {str(k): _plain(x, f"{where}[{k!r}]") for k, x in v.items()}
    if isinstance(v, list | tuple):
        items = [_plain(x, f"{where}[{i}]") for i, x in enumerate(v)]
        return tuple(items) if isinstance(v, tuple) else items
    raise TypeError(f"`{where}` is a {type(v).__name__}, which a safe file cannot hold.")


def _check_state(state: Any, what: str) -> None:
    if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
        raise ValueError(f"Not a saved {what} state (or one of another version).")
