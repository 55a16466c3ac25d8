"""What a model reads from an AnnData: the input chosen once, then read.

:func:`choose_input` decides, before any work, which part of the AnnData a ``tl`` function trains
on (an ``obsm`` representation, a layer, ``X``, or a PCA of ``X`` manifex computes) and returns
its :class:`~manifex.io.InputSpec`, whose :meth:`~manifex.io.InputSpec.slots` the
``key_added`` check uses; :func:`read_input` then reads exactly that. The readers
(:func:`gene_matrix`, :func:`gene_names`, :func:`obsm_matrix`) serve the query side too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from .._utils import as_2d_float
from ..io import InputSpec
from ..train._data import BackedMatrix, is_backed
from ._pca import fit_pca, pcs_fingerprint, project
from ._prepcheck import gene_signature

__all__ = ["N_PCS_AUTO", "choose_input", "gene_matrix", "gene_names", "obsm_matrix", "read_input"]

#: Components of the PCA computed when there is no ``X_pca`` (and ``X`` has more features).
N_PCS_AUTO = 50


def choose_input(
    adata: AnnData, *, use_rep: str | None = None, layer: str | None = None, auto_pca: bool = True
) -> InputSpec:
    """Which part of ``adata`` to train on, the way ``sc.pp.neighbors`` picks it.

    ``use_rep`` (an ``obsm`` key, or ``"X"``) wins; then ``layer``; then ``obsm["X_pca"]`` if
    present; else ``X`` itself when it has at most :data:`N_PCS_AUTO` features (or
    ``auto_pca=False``), or a PCA of ``X`` computed by :func:`read_input` (not written to
    ``adata``) whose loadings travel with the model. Arguments and keys are checked here; nothing
    is read.
    """
    if use_rep is not None and layer is not None:
        raise ValueError("Pass either `use_rep` or `layer`, not both.")
    if use_rep is not None:
        if not isinstance(use_rep, str):
            raise TypeError(f"`use_rep` must be a string, got {type(use_rep).__name__}.")
        if use_rep == "X":
            return InputSpec("X", None, description="X")
        if use_rep not in adata.obsm:
            raise KeyError(f"`use_rep`={use_rep!r} is not in adata.obsm (keys: {list(adata.obsm.keys())}).")
        return InputSpec("obsm", use_rep, description=f"obsm[{use_rep!r}]")
    if layer is not None:
        if not isinstance(layer, str):
            raise TypeError(f"`layer` must be a string, got {type(layer).__name__}.")
        if layer not in adata.layers:
            raise KeyError(f"`layer`={layer!r} is not in adata.layers (keys: {list(adata.layers.keys())}).")
        return InputSpec("layer", layer, description=f"layers[{layer!r}]")
    if "X_pca" in adata.obsm:
        logg.info("    using 'X_pca' as input (pass `use_rep` to choose another representation)")
        extra = {}
        if "PCs" in adata.varm:
            extra = {"reference_pcs": True, "pcs_fingerprint": pcs_fingerprint(adata.varm["PCs"])}
        return InputSpec("obsm", "X_pca", description="obsm['X_pca']", extra=extra)
    if adata.n_vars <= N_PCS_AUTO or not auto_pca:
        logg.info("    using adata.X as input")
        return InputSpec("X", None, description="X")
    n_comps = min(N_PCS_AUTO, min(adata.shape) - 1)
    return InputSpec("pca", None, description=f"PCA({n_comps}) of X")


def read_input(
    adata: AnnData, spec: InputSpec, *, random_state: int
) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray | None, InputSpec]:
    """The training matrix of ``spec`` (from :func:`choose_input`), its feature names and ``spec``
    completed with what a query needs (genes, a signature of their values, PCA loadings).

    The matrix is float32, dense or CSR; for the ``X`` of a backed AnnData a
    :class:`~manifex.train._data.BackedMatrix` that the models read in chunks (a PCA of it is
    computed chunk by chunk). Feature names are ``var_names`` for genes, ``None`` for an
    embedding. ``random_state`` seeds the PCA.
    """
    if spec.source == "obsm":
        return obsm_matrix(adata, spec.key, "adata"), None, spec
    if spec.source in ("X", "layer"):
        x = gene_matrix(adata, spec.key if spec.source == "layer" else None)
        return x, gene_names(adata), spec.replace(var_names=gene_names(adata), genes=gene_signature(x))
    if spec.source != "pca":
        raise ValueError(f"Unknown input source {spec.source!r}.")
    x = gene_matrix(adata, None)
    names = gene_names(adata)
    n_comps = min(N_PCS_AUTO, min(x.shape) - 1)
    logg.warning(f"no 'X_pca' in adata.obsm: computing a {n_comps}-component PCA of adata.X as input")
    comps, mean = fit_pca(x, n_comps, random_state)
    spec = spec.replace(var_names=names, pca_components=comps, pca_mean=mean, genes=gene_signature(x))
    return project(x, comps, mean), None, spec


def gene_names(adata: AnnData) -> np.ndarray:
    """``var_names`` as strings; they must be unique to match a query's genes by name."""
    if not adata.var_names.is_unique:
        raise ValueError(
            "adata.var_names are not unique, so a query's genes could not be matched by name; run "
            "`adata.var_names_make_unique()` first."
        )
    return np.asarray(adata.var_names, dtype=str)


def gene_matrix(adata: AnnData, layer: str | None) -> Any:
    """``X`` or a layer as float32 (dense or CSR), or a :class:`BackedMatrix` when it is on disk."""
    name = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
    src = adata.layers[layer] if layer is not None else adata.X
    if src is None:
        raise ValueError(f"`{name}` is empty (None).")
    if is_backed(src):
        return BackedMatrix(src, name=name)
    return as_2d_float(src, name=name)


def obsm_matrix(adata: AnnData, key: str, what: str) -> np.ndarray:
    """``obsm[key]`` as a 2-d float32 array (cells × ≥ 2 features; a DataFrame is read as values)."""
    rep = adata.obsm[key]
    if isinstance(rep, pd.DataFrame):
        rep = rep.to_numpy()
    if np.ndim(rep) != 2 or np.shape(rep)[1] < 2:
        raise ValueError(
            f"{what}.obsm[{key!r}] must be 2-dimensional (cells × ≥2 features), got shape {np.shape(rep)}."
        )
    return as_2d_float(rep, name=f"{what}.obsm[{key!r}]")
