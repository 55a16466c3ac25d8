"""AnnData side of the tools: input selection, validation and writing results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from .._utils import as_2d_float

MIN_CELLS = 20
N_PCS_AUTO = 50


@dataclass
class InputSpec:
    """Which part of an AnnData a model was trained on, so a query can be prepared alike.

    ``source`` is ``"obsm"``, ``"layer"``, ``"X"`` or ``"pca"`` (a PCA computed by manifex from
    ``X``/``layer``, whose loadings are kept so queries are projected the same way).
    """

    source: str
    key: str | None = None
    var_names: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_uns(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "key": self.key if self.key is not None else "",
            "description": self.description,
        }


def check_adata(adata: Any, *, min_cells: int = MIN_CELLS, name: str = "adata") -> AnnData:
    if not isinstance(adata, AnnData):
        raise TypeError(f"`{name}` must be an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"`{name}` is empty (shape {adata.shape}).")
    if adata.n_obs < min_cells:
        raise ValueError(f"`{name}` has {adata.n_obs} cells; at least {min_cells} are needed.")
    return adata


def check_key_added(key: Any, *, given: Any) -> str:
    """Return ``key`` (where results are written) if it is a non-empty string.

    ``given`` is the user's ``key_added`` argument, named in the error message.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"`key_added` must be a non-empty string, got {given!r}.")
    return key


def get_input(
    adata: AnnData,
    *,
    use_rep: str | None = None,
    layer: str | None = None,
    n_pcs: int | None = None,
    random_state: int = 0,
    auto_pca: bool = True,
) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray | None, InputSpec]:
    """Pick the training matrix the way ``sc.pp.neighbors`` does.

    ``use_rep`` (an ``obsm`` key, or ``"X"``) wins; then ``layer``; then ``obsm["X_pca"]`` if
    present; else ``X`` itself when it has at most 50 features, or a 50-component PCA of ``X``
    computed here (not written to ``adata``) whose loadings travel with the model.

    Returns the matrix (float32, dense or CSR), feature names (``var_names`` for genes, ``None``
    for an embedding) and an :class:`InputSpec`.
    """
    if use_rep is not None and layer is not None:
        raise ValueError("Pass either `use_rep` or `layer`, not both.")
    if use_rep is not None:
        if not isinstance(use_rep, str):
            raise TypeError(f"`use_rep` must be a string, got {type(use_rep).__name__}.")
        if use_rep == "X":
            x = as_2d_float(adata.X, name="adata.X")
            return (
                x,
                np.asarray(adata.var_names),
                InputSpec("X", None, np.asarray(adata.var_names), description="X"),
            )
        if use_rep not in adata.obsm:
            raise KeyError(f"`use_rep`={use_rep!r} is not in adata.obsm (keys: {list(adata.obsm.keys())}).")
        rep = adata.obsm[use_rep]
        if isinstance(rep, pd.DataFrame):
            rep = rep.to_numpy()
        if np.ndim(rep) != 2 or np.shape(rep)[1] < 2:
            raise ValueError(
                f"adata.obsm[{use_rep!r}] must be 2-dimensional (cells × ≥2 features), got shape {np.shape(rep)}."
            )
        x = as_2d_float(rep, name=f"adata.obsm[{use_rep!r}]")
        if n_pcs is not None:
            x = x[:, :n_pcs]
        return x, None, InputSpec("obsm", use_rep, description=f"obsm[{use_rep!r}]")
    if layer is not None:
        if not isinstance(layer, str):
            raise TypeError(f"`layer` must be a string, got {type(layer).__name__}.")
        if layer not in adata.layers:
            raise KeyError(f"`layer`={layer!r} is not in adata.layers (keys: {list(adata.layers.keys())}).")
        x = as_2d_float(adata.layers[layer], name=f"adata.layers[{layer!r}]")
        return (
            x,
            np.asarray(adata.var_names),
            InputSpec("layer", layer, np.asarray(adata.var_names), description=f"layers[{layer!r}]"),
        )
    if "X_pca" in adata.obsm:
        x = as_2d_float(adata.obsm["X_pca"], name="adata.obsm['X_pca']")
        if n_pcs is not None:
            x = x[:, :n_pcs]
        logg.info("    using 'X_pca' as input (pass `use_rep` to choose another representation)")
        spec = InputSpec("obsm", "X_pca", description="obsm['X_pca']")
        if "PCs" in adata.varm:
            spec.extra["reference_pcs"] = True
            spec.extra["pcs_fingerprint"] = pcs_fingerprint(adata.varm["PCs"])
        return x, None, spec
    x = as_2d_float(adata.X, name="adata.X")
    if x.shape[1] <= N_PCS_AUTO or not auto_pca:
        logg.info("    using adata.X as input")
        return (
            x,
            np.asarray(adata.var_names),
            InputSpec("X", None, np.asarray(adata.var_names), description="X"),
        )
    n_comps = min(n_pcs or N_PCS_AUTO, min(x.shape) - 1)
    logg.warning(f"no 'X_pca' in adata.obsm: computing a {n_comps}-component PCA of adata.X as input")
    comps, mean = _pca(x, n_comps, random_state)
    xp = _project(x, comps, mean)
    spec = InputSpec(
        "pca", None, np.asarray(adata.var_names), comps, mean, description=f"PCA({n_comps}) of X"
    )
    return xp, None, spec


def pcs_fingerprint(pcs: Any) -> str:
    """A short hash of PCA loadings, to recognise data projected on the same PCs later."""
    import hashlib

    arr = np.ascontiguousarray(np.asarray(pcs, dtype=np.float32))
    return hashlib.sha1(arr.tobytes()).hexdigest()[:16]


def _pca(x: np.ndarray | sp.csr_matrix, n_comps: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA loadings and mean; sparse input is centred implicitly (never densified)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_comps, svd_solver="arpack", random_state=random_state).fit(x)
    return pca.components_.astype(np.float32), pca.mean_.astype(np.float32)


def _project(x: np.ndarray | sp.csr_matrix, comps: np.ndarray, mean: np.ndarray) -> np.ndarray:
    out = np.asarray(x @ comps.T, dtype=np.float32) - (mean @ comps.T)[None, :]
    return np.ascontiguousarray(out, dtype=np.float32)


def plain(obj: Any) -> Any:
    """Convert values to types that ``AnnData.write_h5ad`` stores (no None, no tuples of mixed types)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        if all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in obj):
            return np.asarray(obj)
        if all(isinstance(v, str) for v in obj):
            return np.asarray(obj, dtype=object)
        return {str(i): plain(v) for i, v in enumerate(obj)}
    if isinstance(obj, np.ndarray | np.generic | int | float | str | bool):
        return obj
    return repr(obj)


def run_embedding(
    adata: AnnData,
    model: Any,
    *,
    method: str,
    use_rep: str | None,
    layer: str | None,
    key_added: str | None,
    return_model: bool,
    copy: bool,
    min_cells: int = MIN_CELLS,
    extra_obsm: dict[str, str] | None = None,
    fit_kwargs: dict[str, Any] | None = None,
    collect: Any = None,
    auto_pca: bool = True,
):
    """Shared body of the ``tl`` embedding functions.

    Validates everything before any work, fits ``model`` on the selected input, and only then
    writes ``obsm["X_<key>"]`` and ``uns[key]`` (so a failure leaves ``adata`` untouched).
    ``collect(model) -> (obsm: dict, obs: dict, uns: dict)`` adds method-specific outputs.
    ``auto_pca=False`` trains on ``X`` itself when there is no ``X_pca`` (see :func:`get_input`).
    """
    import time
    from dataclasses import asdict

    check_adata(adata, min_cells=min_cells)
    key = check_key_added(method if key_added is None else key_added, given=key_added)
    if hasattr(model, "_validate_params"):
        model._validate_params()
    seed = getattr(model, "random_state", 0)
    x, feature_names, spec = get_input(
        adata, use_rep=use_rep, layer=layer, random_state=seed, auto_pca=auto_pca
    )
    t0 = time.perf_counter()
    model.fit(x, feature_names=feature_names, **(fit_kwargs or {}))
    seconds = time.perf_counter() - t0
    model.input_spec_ = asdict(spec)
    model.input_spec_["key_added"] = key
    model.input_spec_["method"] = method

    obsm: dict[str, Any] = {f"X_{key}": model.embedding_}
    obs: dict[str, Any] = {}
    uns_extra: dict[str, Any] = {}
    if collect is not None:
        more_obsm, obs, uns_extra = collect(model, key)
        obsm.update(more_obsm)
    history = getattr(model, "history_", None) or {}
    uns = {
        "params": plain({k: v for k, v in model.get_params().items() if k not in {"progress"}}),
        "input": spec.to_uns(),
        "loss": history.get("loss"),
        "n_steps": history.get("n_steps"),
        "device": str(model.device_),
        "seconds": float(seconds),
        "timings": getattr(model, "timings_", None),
        **uns_extra,
    }
    logg.info(
        f"    finished {method} in {seconds:.1f}s on {model.device_}: added obsm[{f'X_{key}'!r}], uns[{key!r}]"
    )

    target = adata.copy() if copy else adata
    for k, v in obsm.items():
        target.obsm[k] = v
    for k, v in obs.items():
        target.obs[k] = v
    target.uns[key] = plain(uns)
    if copy and return_model:
        return target, model
    if copy:
        return target
    if return_model:
        return model
    return None
