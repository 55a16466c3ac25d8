"""AnnData side of the tools: input selection, validation and writing results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from .._anndata import check_adata, copy_of
from .._utils import as_2d_float
from ..train._data import BackedMatrix, is_backed
from ._prepcheck import gene_signature

__all__ = [
    "InputSpec",
    "check_adata",
    "check_flags",
    "check_key_added",
    "get_input",
    "plain",
    "run_embedding",
]

MIN_CELLS = 20
N_PCS_AUTO = 50


@dataclass
class InputSpec:
    """Which part of an AnnData a model was trained on, so a query can be prepared alike.

    ``source`` is ``"obsm"``, ``"layer"``, ``"X"``, ``"images"`` (an ``obsm`` key) or ``"pca"`` (a
    PCA computed by manifex from ``X``, whose loadings are kept so queries are projected the same
    way). ``genes`` is a signature of the expression values a gene-level input was read from
    (:func:`manifex.tl._prepcheck.gene_signature`), to check a query's preprocessing later.
    """

    source: str
    key: str | None = None
    var_names: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    genes: dict[str, Any] | None = None

    def slots(self) -> list[tuple[str, str]]:
        """The AnnData entries this input is read from (for the ``key_added`` check)."""
        return [("obsm", self.key)] if self.source in ("obsm", "images") and self.key else []

    def to_uns(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "key": self.key if self.key is not None else "",
            "description": self.description,
        }


#: scanpy's own results: other steps read them (``sc.pp.neighbors`` uses ``X_pca`` by default,
#: ``sc.tl.umap`` / ``leiden`` the neighbour graph), so a result is never written under these keys.
RESERVED_KEYS = {
    "pca": (("obsm", "X_pca"), ("uns", "pca"), ("varm", "PCs")),
    "neighbors": (("uns", "neighbors"), ("obsp", "distances"), ("obsp", "connectivities")),
}

Slot = tuple[str, str]


def _exists(adata: AnnData, slot: str, name: str) -> bool:
    return name in getattr(adata, slot).keys() if slot != "obs" else name in adata.obs.columns


def check_key_added(
    adata: AnnData,
    key_added: Any,
    *,
    default: str,
    writes: Callable[[str], Iterable[Slot]],
    inputs: Mapping[Slot, str] | Iterable[Slot] = (),
    function: str,
) -> str:
    """The key a ``tl`` function writes its results under, checked before any work.

    ``key_added`` (or ``default`` when it is ``None``) must be a non-empty string without ``"/"``
    (an ``.h5ad`` cannot store such a key). ``writes(key)`` lists the ``(slot, name)`` entries
    the call would write (``("obsm", "X_dlme")``, ``("uns", "dlme")``, ``("obs", "n2d")``);
    ``inputs`` the entries it reads or must keep (a mapping may say what each one is, for the
    message). Then

    * writing over one of the call's inputs, or under a scanpy key whose contents other steps read
      (:data:`RESERVED_KEYS`: ``"pca"``, ``"neighbors"``), raises ``ValueError``;
    * writing over an existing ``obs`` column that is not a result recorded under the same key
      (``uns[key]``) raises ``ValueError``: it holds the user's annotation (e.g. cell-type labels);
    * any other existing entry is replaced, with a logged warning naming it.

    Returns the key.
    """
    key = default if key_added is None else key_added
    if not isinstance(key, str) or not key:
        raise ValueError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    if "/" in key:
        raise ValueError(
            f"`key_added`={key!r} contains '/', which an .h5ad file cannot store in a key; use e.g. "
            f"{key.replace('/', '_')!r}."
        )
    if key in RESERVED_KEYS:
        raise ValueError(
            f"`key_added`={key!r} is reserved: scanpy keeps its own results under it "
            f"({', '.join(f'{s}[{n!r}]' for s, n in RESERVED_KEYS[key])}), which other steps read. "
            "Choose another key."
        )
    what = dict(inputs) if isinstance(inputs, Mapping) else dict.fromkeys(inputs, "an input of this call")
    planned = list(dict.fromkeys(writes(key)))
    reserved = {slot for slots in RESERVED_KEYS.values() for slot in slots}
    ours = isinstance(adata.uns.get(key), Mapping)
    replaced = []
    for slot, name in planned:
        where = f"{slot}[{name!r}]"
        if (slot, name) in what:
            raise ValueError(
                f"`key_added`={key!r} would write {where}, which is {what[(slot, name)]}; choose another key."
            )
        if (slot, name) in reserved:
            raise ValueError(
                f"`key_added`={key!r} would write {where}, scanpy's own result; choose another key."
            )
        if not _exists(adata, slot, name):
            continue
        if slot == "obs" and not ours:
            raise ValueError(
                f"`key_added`={key!r} would replace the column obs[{name!r}], which is not an earlier "
                f"result of this key (no uns[{key!r}]): it holds your own annotation. Choose another "
                "key, or delete the column first."
            )
        replaced.append(where)
    if replaced:
        logg.warning(f"{function}: replacing the existing {', '.join(replaced)} (key_added={key!r})")
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

    Returns the matrix (float32, dense or CSR; for the ``X`` of a backed AnnData a
    :class:`~manifex.train._data.BackedMatrix` that the models read in chunks, and a PCA of it
    computed chunk by chunk), feature names (``var_names`` for genes, ``None`` for an embedding)
    and an :class:`InputSpec`.
    """
    if use_rep is not None and layer is not None:
        raise ValueError("Pass either `use_rep` or `layer`, not both.")
    if use_rep is not None:
        if not isinstance(use_rep, str):
            raise TypeError(f"`use_rep` must be a string, got {type(use_rep).__name__}.")
        if use_rep == "X":
            x = _gene_matrix(adata.X, "adata.X")
            return x, _names(adata), _gene_spec("X", None, adata, x, "X")
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
        x = _gene_matrix(adata.layers[layer], f"adata.layers[{layer!r}]")
        return x, _names(adata), _gene_spec("layer", layer, adata, x, f"layers[{layer!r}]")
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
    x = _gene_matrix(adata.X, "adata.X")
    if x.shape[1] <= N_PCS_AUTO or not auto_pca:
        logg.info("    using adata.X as input")
        return x, _names(adata), _gene_spec("X", None, adata, x, "X")
    names = _names(adata)
    n_comps = min(n_pcs or N_PCS_AUTO, min(x.shape) - 1)
    logg.warning(f"no 'X_pca' in adata.obsm: computing a {n_comps}-component PCA of adata.X as input")
    comps, mean = _pca(x, n_comps, random_state)
    xp = _project(x, comps, mean)
    spec = InputSpec("pca", None, names, comps, mean, description=f"PCA({n_comps}) of X")
    spec.genes = gene_signature(x)
    return xp, None, spec


def _names(adata: AnnData) -> np.ndarray:
    if not adata.var_names.is_unique:
        raise ValueError(
            "adata.var_names are not unique, so a query's genes could not be matched by name; run "
            "`adata.var_names_make_unique()` first."
        )
    return np.asarray(adata.var_names, dtype=str)


def _gene_spec(source: str, key: str | None, adata: AnnData, x: Any, description: str) -> InputSpec:
    spec = InputSpec(source, key, _names(adata), description=description)
    spec.genes = gene_signature(x)
    return spec


def pcs_fingerprint(pcs: Any) -> str:
    """A short hash of PCA loadings, to recognise data projected on the same PCs later."""
    import hashlib

    arr = np.ascontiguousarray(np.asarray(pcs, dtype=np.float32))
    return hashlib.sha1(arr.tobytes()).hexdigest()[:16]


def _gene_matrix(src: Any, name: str) -> Any:
    """A gene matrix as float32 (dense or CSR), or a :class:`BackedMatrix` when it is on disk."""
    if src is None:
        raise ValueError(f"`{name}` is empty (None).")
    if is_backed(src):
        return BackedMatrix(src, name=name)
    return as_2d_float(src, name=name)


def _pca(x: Any, n_comps: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA loadings and mean; sparse input is centred implicitly (never densified), a backed
    matrix is fitted chunk by chunk (incremental PCA)."""
    from sklearn.decomposition import PCA, IncrementalPCA

    if isinstance(x, BackedMatrix):
        ipca = IncrementalPCA(n_components=n_comps)
        pending = None
        for _, block in x.chunks():
            b = block.toarray() if sp.issparse(block) else block
            if not np.isfinite(b).all():
                raise ValueError(f"`{x.name}` contains NaN or infinite values; remove or impute them first.")
            if pending is not None:
                b, pending = np.vstack([pending, b]), None
            if b.shape[0] < n_comps:
                pending = b
                continue
            ipca.partial_fit(b)
        if pending is not None and not hasattr(ipca, "components_"):
            ipca.partial_fit(pending)
        return ipca.components_.astype(np.float32), ipca.mean_.astype(np.float32)
    pca = PCA(n_components=n_comps, svd_solver="arpack", random_state=random_state).fit(x)
    return pca.components_.astype(np.float32), pca.mean_.astype(np.float32)


def _project(x: Any, comps: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``(x − mean) @ comps.T`` without densifying ``x``; a backed matrix chunk by chunk."""
    if isinstance(x, BackedMatrix):
        out = np.empty((x.shape[0], comps.shape[0]), dtype=np.float32)
        for s, block in x.chunks():
            out[s : s + block.shape[0]] = _project(block, comps, mean)
        return out
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


def check_flags(**flags: Any) -> None:
    """Each keyword is ``True`` or ``False`` (``copy="yes"`` is a mistake, not a truthy value)."""
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            raise TypeError(f"`{name}` must be True or False, got {value!r}.")


def check_n_cells(adata: AnnData, minimum: int, *, n_neighbors: int | None = None, method: str = "") -> None:
    """At least ``minimum`` cells; the message names ``n_neighbors`` when it sets the minimum."""
    if adata.n_obs >= minimum:
        return
    if n_neighbors is not None and minimum == n_neighbors + 1 and minimum > MIN_CELLS:
        raise ValueError(
            f"`adata` has {adata.n_obs} cells; {method} with `n_neighbors`={n_neighbors} needs more than "
            f"{n_neighbors} (at least {minimum}): lower `n_neighbors` or use more cells."
        )
    raise ValueError(f"`adata` has {adata.n_obs} cells; {method} needs at least {minimum}.")


def input_slot(adata: AnnData, use_rep: Any, layer: Any) -> list[Slot]:
    """The ``obsm`` entry :func:`get_input` will read (before it reads it), for the key check."""
    if isinstance(use_rep, str) and use_rep != "X":
        return [("obsm", use_rep)]
    if use_rep is None and layer is None and "X_pca" in adata.obsm:
        return [("obsm", "X_pca")]
    return []


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
    collect: Any = None,
    extra_writes: Any = None,
    auto_pca: bool = True,
    given_input: tuple[Any, Any, InputSpec] | None = None,
):
    """Shared body of the ``tl`` embedding functions.

    Validates everything before any work (the AnnData, the model's parameters, the key the
    results go to), fits ``model`` on the selected input (:func:`get_input`, or ``given_input``
    ``(x, feature_names, spec)``) with the input recorded through ``fit(..., input_spec=...)``,
    and only then writes ``obsm["X_<key>"]`` and ``uns[key]`` (so a failure leaves ``adata``
    untouched). ``collect(model, key) -> (obsm, obs, uns)`` adds method-specific outputs, whose
    entries ``extra_writes(key)`` lists in advance. ``auto_pca=False`` trains on ``X`` itself
    when there is no ``X_pca``.
    """
    import time
    from dataclasses import asdict

    check_adata(adata, need_vars=given_input is None)
    check_flags(copy=copy, return_model=return_model)
    model._validate_params()
    n_neighbors = getattr(model, "n_neighbors", None) if given_input is None else None
    if n_neighbors is not None:  # the kNN graph of the augmentations needs more cells than K
        min_cells = max(min_cells, int(n_neighbors) + 1)
    check_n_cells(adata, min_cells, n_neighbors=n_neighbors, method=type(model).__name__)
    inputs = input_slot(adata, use_rep, layer) if given_input is None else given_input[2].slots()

    def writes(k: str) -> list[Slot]:
        return [("obsm", f"X_{k}"), ("uns", k), *(extra_writes(k) if extra_writes is not None else [])]

    key = check_key_added(adata, key_added, default=method, writes=writes, inputs=inputs, function=method)
    if given_input is None:
        seed = getattr(model, "random_state", 0)
        x, feature_names, spec = get_input(
            adata, use_rep=use_rep, layer=layer, random_state=seed, auto_pca=auto_pca
        )
    else:
        x, feature_names, spec = given_input
    input_spec = {**asdict(spec), "key_added": key, "method": method}
    t0 = time.perf_counter()
    model.fit(x, feature_names=feature_names, input_spec=input_spec)
    seconds = time.perf_counter() - t0

    obsm: dict[str, Any] = {f"X_{key}": model.embedding_}
    obs: dict[str, Any] = {}
    uns_extra: dict[str, Any] = {}
    if collect is not None:
        more_obsm, obs, uns_extra = collect(model, key)
        obsm.update(more_obsm)
    history = getattr(model, "history_", None) or {}
    uns = {
        "params": plain({k: v for k, v in model.get_params(deep=False).items() if k not in {"progress"}}),
        "input": spec.to_uns(),
        "loss": history.get("loss"),
        "n_steps": history.get("n_steps"),
        "device": str(model.device_),
        "seconds": float(seconds),
        "timings": getattr(model, "timings_", None),
        # the kNN graph of the augmentations: backend, time and sampled recall against exact kNN
        "knn": getattr(model, "knn_info_", None),
        **uns_extra,
    }
    logg.info(
        f"    finished {method} in {seconds:.1f}s on {model.device_}: added obsm[{f'X_{key}'!r}], uns[{key!r}]"
    )

    target = copy_of(adata) if copy else adata
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
