"""Prepare a query like the reference input a model was trained on: :func:`prepare_query`.

The model's :class:`~manifex.io.InputSpec` says what it read. Images and ``obsm``
representations are read as they are; genes are aligned to the training genes by name
(:func:`align_genes`), optionally standardised with the reference's ``sc.pp.scale`` statistics
(:func:`scale_like_reference`, the one implementation of that, also used by the coverage
check), and projected on the reference's or the recorded PCA (:mod:`manifex.tl._pca`). What the
preprocessing check (:mod:`manifex.tl._prepcheck`) needs is collected on the way, for it to
judge: the query's genes, the training genes (a matrix, a recorded signature, or the model's
means) and which clipping of the reference applies.
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
from ..train._data import BackedMatrix
from ._input import obsm_matrix
from ._pca import check_reproduces, pcs_fingerprint, project, reference_loadings

__all__ = ["align_genes", "prepare_query", "scale_like_reference"]


def align_genes(
    adata: AnnData,
    names: np.ndarray,
    *,
    layer: str | None,
    fill_missing: str,
    what: str = "query",
    stream: bool = False,
) -> tuple[Any, int]:
    """Columns of ``adata`` (X or a layer) in the order of ``names``; float32, dense or CSR.

    With ``stream``, the ``X`` of a backed AnnData whose genes are exactly ``names`` (same order)
    stays on disk: a :class:`~manifex.train._data.BackedMatrix`, read in chunks by the model.
    """
    if not adata.var_names.is_unique:
        raise ValueError(f"{what}.var_names are not unique; run `{what}.var_names_make_unique()` first.")
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"The model was trained on layers[{layer!r}], which the {what} lacks.")
    src = adata.layers[layer] if layer is not None else adata.X
    where = f"{what}.layers[{layer!r}]" if layer is not None else f"{what}.X"
    if src is None:
        raise ValueError(f"{where} is empty.")
    if getattr(src, "dtype", None) is not None and np.dtype(src.dtype).kind not in "biuf":
        raise TypeError(f"{where} must hold numbers, got dtype {src.dtype}.")
    pos = adata.var_names.get_indexer(pd.Index(names))
    missing = np.flatnonzero(pos < 0)
    if missing.size and fill_missing == "error":
        shown = ", ".join(names[missing[:10]]) + (" …" if missing.size > 10 else "")
        raise KeyError(
            f"The {what} lacks {missing.size} of the {len(names)} genes the model needs: {shown}. "
            "Pass `fill_missing='zero'` to fill them with zeros."
        )
    if missing.size == len(names):
        raise KeyError(f"The {what} has none of the {len(names)} genes the model needs.")
    present = np.flatnonzero(pos >= 0)
    if stream and adata.isbacked and layer is None and np.array_equal(pos, np.arange(adata.n_vars)):
        return BackedMatrix(src, name=where), 0  # the file's columns are the model's: read it in chunks
    cols = pos[present]
    if adata.isbacked and layer is None:  # read only the needed columns, in file order
        uniq = np.unique(cols)
        src = src[:, uniq]
        cols = np.searchsorted(uniq, cols)
    if sp.issparse(src):
        sel = sp.csr_matrix(
            (np.ones(present.size, dtype=np.float32), (cols, present)), shape=(src.shape[1], len(names))
        )
        x = sp.csr_matrix(sp.csr_matrix(src) @ sel)
    else:
        arr = np.asarray(src)
        x = np.zeros((arr.shape[0], len(names)), dtype=np.float32)
        x[:, present] = arr[:, cols]
    x = as_2d_float(x, name=where)
    if missing.size:
        logg.warning(f"{missing.size} of {len(names)} genes are missing from the {what}; filled with 0")
    return x, int(missing.size)


def scale_like_reference(
    x: np.ndarray | sp.spmatrix, reference: AnnData, names: Any, max_value: float | None, *, arg: str
) -> np.ndarray:
    """Standardise the columns ``names`` of ``x`` with ``reference.var["mean"]`` / ``["std"]``
    (written by ``sc.pp.scale``), clipped at ``±max_value`` (``None``: no clipping).

    ``arg`` names the option that asked for it in the error message.
    """
    if not {"mean", "std"} <= set(reference.var.columns):
        raise KeyError(
            f"{arg} needs reference.var['mean'] and reference.var['std'] (written by sc.pp.scale)."
        )
    mean = reference.var["mean"].reindex(names).to_numpy(np.float32)
    std = reference.var["std"].reindex(names).to_numpy(np.float32)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
    mean = np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)
    if isinstance(x, BackedMatrix):
        x = x.read(np.arange(x.shape[0]))
    dense = x.toarray() if sp.issparse(x) else np.array(x, dtype=np.float32)
    out = (dense - mean[None, :]) / std[None, :]
    if max_value is not None:
        np.clip(out, -max_value, max_value, out=out)
    return out.astype(np.float32)


def recorded_max_value(reference: AnnData) -> float | None:
    """A ``max_value`` of ``sc.pp.scale`` recorded in ``reference.uns["scale"]``, if any."""
    rec = reference.uns.get("scale")
    v = rec.get("max_value") if isinstance(rec, dict) else None
    if v is None or isinstance(v, bool) or not np.isscalar(v) or not np.isfinite(float(v)):
        return None
    return float(v)


def _reference_genes(reference: AnnData, names: np.ndarray, layer: str | None) -> np.ndarray | sp.csr_matrix:
    return align_genes(reference, names, layer=layer, fill_missing="error", what="reference")[0]


def _scale(xg, reference, names, scale_query, max_value, out):
    """Scale the query's genes like the reference when asked; without ``max_value`` the
    reference's own clipping, if any, is what the query must stay within."""
    if not scale_query:
        return xg
    if max_value is None:
        max_value = recorded_max_value(reference)
        out["max_value_used"] = max_value
    mean = reference.var["mean"].reindex(names).to_numpy(np.float64) if "mean" in reference.var else None
    if mean is not None and np.isfinite(mean).all():
        out["unscaled"] = (xg, float(mean.sum()))  # the query's genes before scaling, the reference's
    if max_value is None:
        out["clip_from"] = "max_value"
    return scale_like_reference(xg, reference, names, max_value, arg="`scale_query=True`")


def _project_on_reference(
    query: AnnData,
    reference: AnnData,
    n_feat: int | None,
    *,
    fill_missing: str,
    scale_query: bool,
    max_value: float | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Project the query's genes on ``reference.varm["PCs"]``, centred by the reference's means."""
    rows, comps = reference_loadings(reference.varm["PCs"], n_feat)
    names = np.asarray(reference.var_names[rows], dtype=str)
    xr = _reference_genes(reference, names, None)
    mu = np.asarray(xr.mean(0), dtype=np.float64).ravel().astype(np.float32)
    if "X_pca" in reference.obsm:  # the reference's X must be what its PCA was computed from
        check_reproduces(xr, comps, mu, reference.obsm["X_pca"])
    out: dict[str, Any] = {"gene_ref": xr, "gene_ref_from": "the reference"}
    xg, n_missing = align_genes(query, names, layer=None, fill_missing=fill_missing)
    xg = _scale(xg, reference, names, scale_query, max_value, out)
    out.update(n_missing=n_missing, gene_q=xg)
    return project(xg, comps, mu), out


def _missing_obsm(key: str | None, query: AnnData, reference: AnnData | None) -> KeyError:
    """The error for a query that lacks the ``obsm`` entry the model was trained on."""
    if key == "X_pca" and reference is not None:
        hint = (
            " The `reference` given has no varm['PCs'] (the loadings sc.pp.pca writes) to project "
            "the query's genes on: pass the AnnData the model was trained on, after its sc.pp.pca."
        )
    elif key == "X_pca":
        hint = (
            " Pass `reference=` (the AnnData the model was trained on, with varm['PCs']) to "
            "project the query's genes on the reference's PCA."
        )
    else:
        hint = (
            " Compute it for the query with the same model that produced the reference's "
            "(e.g. scvi_model.get_latent_representation(query))."
        )
    return KeyError(
        f"The model was trained on obsm[{key!r}], which the query lacks "
        f"(query.obsm keys: {list(query.obsm.keys())}).{hint}"
    )


def _from_images(query: AnnData, key: str | None, out: dict[str, Any]) -> dict[str, Any]:
    if key is None or key not in query.obsm:
        raise KeyError(f"The model was trained on images in obsm[{key!r}]; the query has no such entry.")
    imgs = np.asarray(query.obsm[key])
    if imgs.dtype.kind not in "biuf":
        raise TypeError(f"query.obsm[{key!r}] must hold numbers, got dtype {imgs.dtype}.")
    out.update(x=imgs, description=f"images in obsm[{key!r}]", n_features=int(np.prod(imgs.shape[1:])))
    out["model_input"] = None
    return out


def _from_obsm(
    query: AnnData,
    model: Any,
    spec: InputSpec,
    reference: AnnData | None,
    opts: dict[str, Any],
    out: dict[str, Any],
) -> dict[str, Any]:
    """An ``obsm`` input: the query's genes projected on the recorded PCA or on the reference's
    ``varm["PCs"]``, else the query's own ``obsm`` entry."""
    key = spec.key or None
    n_feat = getattr(model, "n_features_in_", None)
    ref_pcs = reference is not None and key == "X_pca" and "PCs" in reference.varm
    recorded = spec.pca_components is not None and spec.var_names is not None
    if recorded and not ref_pcs and key not in query.obsm:
        # loadings and gene means recorded with the model: project like the reference
        names = np.asarray(spec.var_names, dtype=str)
        xg, n_missing = align_genes(query, names, layer=None, fill_missing=opts["fill_missing"])
        comps = np.asarray(spec.pca_components, dtype=np.float32)[: n_feat or None]
        x = project(xg, comps, np.asarray(spec.pca_mean, dtype=np.float32))
        out.update(x=x, n_missing=n_missing, gene_q=xg, gene_ref=spec.genes)
        out.update(description="query genes projected on the recorded PCA", n_features=x.shape[1])
        return out
    if ref_pcs:
        x, info = _project_on_reference(query, reference, n_feat, **opts)
        out.update(info)
        out.update(x=x, description="query genes projected on reference varm['PCs']", n_features=x.shape[1])
        return out
    if key is None or key not in query.obsm:
        raise _missing_obsm(key, query, reference)
    x = obsm_matrix(query, key, "query")
    if n_feat is not None and x.shape[1] > n_feat and key == "X_pca":
        x = x[:, :n_feat]
    if n_feat is not None and x.shape[1] != n_feat:
        raise ValueError(
            f"query.obsm[{key!r}] has {x.shape[1]} columns but the model was trained on {n_feat}."
        )
    same_pcs = "PCs" in query.varm and spec.extra.get("pcs_fingerprint") == pcs_fingerprint(query.varm["PCs"])
    if key == "X_pca" and "pca" in query.uns and reference is None and not same_pcs:
        logg.warning(
            "using the query's own obsm['X_pca']: if it was computed by sc.pp.pca on the "
            "query, its axes differ from the reference's; pass `reference=` to project instead"
        )
    out.update(x=x, description=f"obsm[{key!r}]", n_features=x.shape[1])
    return out


def _training_genes(model: Any, spec: InputSpec) -> np.ndarray:
    names = spec.var_names if spec.var_names is not None else getattr(model, "feature_names_in_", None)
    if names is None:
        raise ValueError("The model did not record its genes; cannot align the query by name.")
    return np.asarray(names, dtype=str)


def _gene_reference(
    model: Any, spec: InputSpec, names: np.ndarray, layer: str | None, reference: AnnData | None, out
) -> None:
    """The training genes the query is checked against: the reference's (a matrix), their
    signature recorded with the model, or (``gene_ref_model``) the model's per-feature means."""
    if reference is not None:
        out["gene_ref"] = _reference_genes(reference, names, layer)
        out["gene_ref_from"] = "the reference"
    elif spec.genes is not None:
        out["gene_ref"] = dict(spec.genes)
    elif spec.source != "pca":
        out["gene_ref_model"] = True


def _from_genes(
    query: AnnData,
    model: Any,
    spec: InputSpec,
    reference: AnnData | None,
    opts: dict[str, Any],
    space: str,
    out: dict[str, Any],
) -> dict[str, Any]:
    """A gene input (``X``, a layer, or manifex's own PCA of ``X``): the query's genes aligned by
    name, scaled like the reference when asked, projected on the recorded PCA."""
    layer = spec.key if spec.source == "layer" else None
    names = _training_genes(model, spec)
    _gene_reference(model, spec, names, layer, reference, out)
    scale_query, max_value = opts["scale_query"], opts["max_value"]
    if not scale_query:
        out["clip_from"] = "unscaled"
    stream = not scale_query and space != "input"
    xg, n_missing = align_genes(query, names, layer=layer, fill_missing=opts["fill_missing"], stream=stream)
    if scale_query:
        xg = _scale(xg, reference, names, scale_query, max_value, out)
    out.update(n_missing=n_missing, gene_q=xg)
    where = f"layers[{layer!r}]" if layer else "X"
    if spec.source == "pca":
        comps = np.asarray(spec.pca_components, dtype=np.float32)
        x = project(xg, comps, np.asarray(spec.pca_mean, dtype=np.float32))
        out.update(x=x, description=f"query {where} projected on the model's PCA", n_features=x.shape[1])
    else:
        out.update(x=xg, feature_names=names, description=f"query {where} ({len(names)} genes)")
        out["n_features"] = len(names)
    return out


def prepare_query(
    query: AnnData,
    model: Any,
    spec: InputSpec,
    *,
    reference: AnnData | None,
    fill_missing: str,
    scale_query: bool,
    max_value: float | None,
    space: str = "embedding",
) -> dict[str, Any]:
    """Build the model input for the query, with what the preprocessing check needs.

    Returns a dict with ``x`` (the model input), ``feature_names`` (for gene inputs), ``n_features``,
    ``n_missing`` (genes filled with zeros), ``description``, and for the check ``gene_q``,
    ``gene_ref`` (a matrix or a signature), ``gene_ref_model``, ``gene_ref_from``, ``clip_from``,
    ``unscaled`` and ``model_input`` (see :func:`manifex.tl._prepcheck.preprocessing_problems`).
    """
    out: dict[str, Any] = {"feature_names": None, "n_missing": 0, "gene_q": None, "gene_ref": None}
    out["gene_ref_from"] = "the training data"
    opts = {"fill_missing": fill_missing, "scale_query": scale_query, "max_value": max_value}
    if spec.source == "images":
        return _from_images(query, spec.key or None, out)
    if spec.source == "obsm":
        out = _from_obsm(query, model, spec, reference, opts, out)
    elif spec.source in ("X", "layer", "pca"):
        out = _from_genes(query, model, spec, reference, opts, space, out)
    else:
        raise ValueError(f"Unknown input source {spec.source!r} in model.input_spec_.")
    out["model_input"] = out["x"]
    return out
