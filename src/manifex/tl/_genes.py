"""Prepare a query like the reference input a model was trained on.

Genes are aligned to the training genes by name, optionally standardised with the reference's
``sc.pp.scale`` statistics (:func:`scale_like_reference`, the one implementation of that, also
used by the coverage check), and projected on the reference's or the recorded PCA. What the
preprocessing check (:mod:`manifex.tl._prepcheck`) needs is collected on the way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from .._utils import as_2d_float
from ..train._data import BackedMatrix
from ._prepcheck import gene_signature, signature_from_model
from ._utils import _project, pcs_fingerprint

__all__ = ["align_genes", "prepare_query", "scale_like_reference"]

#: Largest relative error allowed when re-projecting the reference on its own PCs.
PCA_REPRO_ERROR = 0.1


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
    """Scale the query's genes like the reference when asked; note the reference's clipping."""
    if not scale_query:
        return xg
    if max_value is None:
        max_value = recorded_max_value(reference)
        out["max_value_used"] = max_value
    mean = reference.var["mean"].reindex(names).to_numpy(np.float64) if "mean" in reference.var else None
    if mean is not None and np.isfinite(mean).all():
        out["unscaled"] = (xg, float(mean.sum()))  # the query's genes before scaling, the reference's
    if max_value is None and out.get("gene_ref") is not None:
        out["clip"] = out["gene_ref"].get("clip")
        out["clip_fix"] = f"pass `max_value={out['clip']:g}`" if out["clip"] is not None else ""
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
    pcs = np.asarray(reference.varm["PCs"], dtype=np.float32)
    n_comp = pcs.shape[1] if n_feat is None else n_feat
    if n_comp > pcs.shape[1]:
        raise ValueError(f"The model needs {n_comp} PCs but reference.varm['PCs'] has {pcs.shape[1]}.")
    # genes the PCA used: HVG-restricted PCAs leave the other rows zero (or NaN)
    rows = np.flatnonzero(np.all(np.isfinite(pcs), axis=1) & np.any(pcs != 0, axis=1))
    if rows.size == 0:
        raise ValueError("reference.varm['PCs'] has no finite, non-zero loadings.")
    names = np.asarray(reference.var_names[rows], dtype=str)
    comps = np.ascontiguousarray(pcs[rows, :n_comp].T)
    xr = _reference_genes(reference, names, None)
    mu = np.asarray(xr.mean(0), dtype=np.float64).ravel().astype(np.float32)
    if "X_pca" in reference.obsm:  # the reference's X must be what its PCA was computed from
        m = min(reference.n_obs, 200)
        got = _project(xr[:m], comps, mu)
        want = np.asarray(reference.obsm["X_pca"])[:m, :n_comp]
        err = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12)
        if not err <= PCA_REPRO_ERROR:
            raise ValueError(
                "Projecting reference.X on reference.varm['PCs'] does not reproduce reference.obsm['X_pca'] "
                f"(relative error {err:.2g}): reference.X was changed after sc.pp.pca. Restore the matrix "
                "the PCA was computed from."
            )
        if err > 1e-3:
            logg.warning(
                f"projecting reference.X on its PCs reproduces obsm['X_pca'] only to {err:.1%}; "
                "was reference.X modified after sc.pp.pca?"
            )
    out: dict[str, Any] = {"gene_ref": gene_signature(xr), "gene_ref_from": "the reference"}
    xg, n_missing = align_genes(query, names, layer=None, fill_missing=fill_missing)
    xg = _scale(xg, reference, names, scale_query, max_value, out)
    out.update(n_missing=n_missing, gene_q=xg)
    return _project(xg, comps, mu), out


def _from_obsm(query, model, spec, key, reference, fill_missing, scale_query, max_value, out):
    n_feat = getattr(model, "n_features_in_", None)
    ref_pcs = reference is not None and key == "X_pca" and "PCs" in reference.varm
    recorded = spec.get("pca_components") is not None and spec.get("var_names") is not None
    if recorded and not ref_pcs and key not in query.obsm:
        # loadings and gene means recorded with the model: project like the reference
        names = np.asarray(spec["var_names"], dtype=str)
        xg, n_missing = align_genes(query, names, layer=None, fill_missing=fill_missing)
        comps = np.asarray(spec["pca_components"], dtype=np.float32)[: n_feat or None]
        x = _project(xg, comps, np.asarray(spec["pca_mean"], dtype=np.float32))
        out.update(x=x, n_missing=n_missing, gene_q=xg, gene_ref=spec.get("genes"))
        out.update(description="query genes projected on the recorded PCA", n_features=x.shape[1])
        return out
    if ref_pcs:
        x, info = _project_on_reference(
            query, reference, n_feat, fill_missing=fill_missing, scale_query=scale_query, max_value=max_value
        )
        out.update(info)
        out.update(x=x, description="query genes projected on reference varm['PCs']", n_features=x.shape[1])
        return out
    if key is None or key not in query.obsm:
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
        raise KeyError(
            f"The model was trained on obsm[{key!r}], which the query lacks "
            f"(query.obsm keys: {list(query.obsm.keys())}).{hint}"
        )
    rep = query.obsm[key]
    if isinstance(rep, pd.DataFrame):
        rep = rep.to_numpy()
    x = as_2d_float(rep, name=f"query.obsm[{key!r}]")
    if n_feat is not None and x.shape[1] > n_feat and key == "X_pca":
        x = x[:, :n_feat]
    if n_feat is not None and x.shape[1] != n_feat:
        raise ValueError(
            f"query.obsm[{key!r}] has {x.shape[1]} columns but the model was trained on {n_feat}."
        )
    same_pcs = "PCs" in query.varm and (spec.get("extra") or {}).get("pcs_fingerprint") == pcs_fingerprint(
        query.varm["PCs"]
    )
    if key == "X_pca" and "pca" in query.uns and reference is None and not same_pcs:
        logg.warning(
            "using the query's own obsm['X_pca']: if it was computed by sc.pp.pca on the "
            "query, its axes differ from the reference's; pass `reference=` to project instead"
        )
    out.update(x=x, description=f"obsm[{key!r}]", n_features=x.shape[1])
    return out


def prepare_query(
    query: AnnData,
    model: Any,
    spec: dict[str, Any],
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
    ``gene_ref``, ``gene_ref_from``, ``clip`` and ``model_input``.
    """
    source, key = spec.get("source"), spec.get("key") or None
    out: dict[str, Any] = {"feature_names": None, "n_missing": 0, "gene_q": None, "gene_ref": None}
    out["gene_ref_from"] = "the training data"

    if source == "images":
        if key is None or key not in query.obsm:
            raise KeyError(f"The model was trained on images in obsm[{key!r}]; the query has no such entry.")
        imgs = np.asarray(query.obsm[key])
        if imgs.dtype.kind not in "biuf":
            raise TypeError(f"query.obsm[{key!r}] must hold numbers, got dtype {imgs.dtype}.")
        out.update(x=imgs, description=f"images in obsm[{key!r}]", n_features=int(np.prod(imgs.shape[1:])))
        out["model_input"] = None
        return out

    if source == "obsm":
        out = _from_obsm(query, model, spec, key, reference, fill_missing, scale_query, max_value, out)
        out["model_input"] = out["x"]
        return out

    if source not in ("X", "layer", "pca"):
        raise ValueError(f"Unknown input source {source!r} in model.input_spec_.")
    layer = key if source == "layer" else None
    names = spec.get("var_names")
    if names is None:
        names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ValueError("The model did not record its genes; cannot align the query by name.")
    names = np.asarray(names, dtype=str)
    if reference is not None:
        out["gene_ref"] = gene_signature(_reference_genes(reference, names, layer))
        out["gene_ref_from"] = "the reference"
    elif spec.get("genes") is not None:
        out["gene_ref"] = dict(spec["genes"])
    elif source != "pca":
        out["gene_ref"] = signature_from_model(model)
    if out["gene_ref"] is not None and out["gene_ref"].get("clip") is not None and not scale_query:
        out["clip"] = out["gene_ref"]["clip"]
        out["clip_fix"] = (
            "scale the query with the reference's statistics and clipping (`reference=` with "
            f"`scale_query=True, max_value={out['clip']:g}`)"
        )
    stream = not scale_query and space != "input"
    xg, n_missing = align_genes(query, names, layer=layer, fill_missing=fill_missing, stream=stream)
    if scale_query:
        xg = _scale(xg, reference, names, scale_query, max_value, out)
    out.update(n_missing=n_missing, gene_q=xg)
    where = f"layers[{layer!r}]" if layer else "X"
    if source == "pca":
        comps = np.asarray(spec["pca_components"], dtype=np.float32)
        mean = np.asarray(spec["pca_mean"], dtype=np.float32)
        x = _project(xg, comps, mean)
        out.update(x=x, description=f"query {where} projected on the model's PCA", n_features=x.shape[1])
    else:
        out.update(x=xg, feature_names=names, description=f"query {where} ({len(names)} genes)")
        out["n_features"] = len(names)
    out["model_input"] = out["x"]
    return out
