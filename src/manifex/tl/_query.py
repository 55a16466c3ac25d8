"""Map new cells (a query) into a trained embedding and transfer labels.

* :func:`embed` prepares a query exactly like the reference input recorded in
  ``model.input_spec_`` (genes aligned by name, projection on the reference's PCs, checks that
  the preprocessing matches) and writes its coordinates under the reference's key.
* :func:`transfer_labels` names query cells from a labelled reference by kNN vote or by class
  prototypes in the embedding, with a per-cell confidence and an ``"unknown"`` call for cells
  far from every reference class; extra classes can be named from a few labelled examples.
* :func:`fewshot_labels` names cells from a handful of labelled examples only.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from .._utils import as_2d_float, check_random_state
from ..metrics._invariance import _check_model_fitted, embed_with
from ..models._base import BaseModel, load_model
from ._coverage import expression_pair, reference_coverage
from ._utils import _project, check_adata, check_key_added, pcs_fingerprint, plain

__all__ = ["embed", "fewshot_labels", "transfer_labels"]

#: Thresholds of the preprocessing check on the model input (see :func:`embed`).
SCALE_RATIO_LIMIT = 10.0
MEAN_SHIFT_LIMIT = 5.0
COUNT_MAX_MIN = 20.0
#: Largest relative error allowed when re-projecting the reference on its own PCs.
PCA_REPRO_ERROR = 0.1


# =============================================================================================
# embed
# =============================================================================================
def embed(
    query: AnnData,
    model: BaseModel | str | os.PathLike,
    *,
    reference: AnnData | None = None,
    space: Literal["embedding", "latent", "input"] = "embedding",
    layer: int | None = None,
    use_rep: str | None = None,
    fill_missing: Literal["error", "zero"] = "error",
    scale_query: bool = False,
    max_value: float | None = None,
    check_preprocessing: Literal["error", "warn", "ignore"] = "error",
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Embed new cells (a query) with a fitted manifex model, like the reference it was trained on.

    The model records what it was trained on (``model.input_spec_``, set by ``mx.tl.dlme``,
    ``mx.tl.tsimcne``, ``mx.tl.n2d``): an ``obsm`` representation, ``X``, a layer, a PCA that
    manifex computed, or images. The query is prepared the same way:

    ``obsm`` representation (e.g. ``X_scVI``)
        The query must hold it under the same key (or ``use_rep``), computed by the same model
        (e.g. ``scvi_model.get_latent_representation(query)``).
    ``obsm["X_pca"]`` with a ``reference``
        When ``reference`` carries ``varm["PCs"]``, the query's genes are aligned by name and
        projected on the reference's loadings after centring with the *reference's* gene means,
        i.e. exactly the reference's PCA (unlike ``sc.tl.ingest``, which centres a query on its
        own mean and so shifts a query made of few cell types). A ``X_pca`` of the query itself
        is then ignored: ``sc.pp.pca`` on the query has different axes. Without ``reference``
        the query's ``obsm["X_pca"]`` is used as given.
    genes (``X``, a layer, or manifex's own PCA)
        Genes are aligned to the training genes by name (any order; missing genes raise
        ``KeyError`` unless ``fill_missing="zero"``).

    Before embedding, the query's preprocessing is compared with the reference's:

    * gene level (with a ``reference``, or from the model's recorded per-feature means when it
      was trained on genes): raw counts (non-negative integers up to at least 20) against
      normalised data; all-non-negative values against a centred/scaled reference (it has
      negative values) and vice versa; values 10× larger than the reference's largest;
    * model input: the per-feature standard deviation and mean of the prepared query against
      ``model.feature_std_`` / ``model.feature_mean_``. Flagged when the median ratio of standard
      deviations is above 10 or below 1/10, or the median absolute mean difference exceeds 5
      reference standard deviations. These limits tolerate a query of a single cell type (its
      spread is smaller and its mean is offset) but not data on another scale.

    Parameters
    ----------
    query
        The new cells. Its ``X`` (or the layer / ``obsm`` entry the model uses) must be
        preprocessed like the reference's: same normalisation, log1p and, if the reference was
        scaled, the same scaling (``scale_query=True`` applies the reference's).
    model
        A fitted model (``mx.tl.dlme(..., return_model=True)``) or the path of one saved with
        ``model.save(path)``.
    reference
        The AnnData the model was trained on. Needed to project genes onto its PCs when the model
        was trained on ``obsm["X_pca"]``; also used for the gene-level preprocessing check.
    space
        ``"embedding"``: the map written by the ``tl`` function (DLME / t-SimCNE output, N2D's 2-d
        map). ``"latent"``: the network's internal representation (DLME's 80-d ``z``, t-SimCNE's
        backbone features, N2D's code), written under ``"<key>_latent"`` by default; embed the
        reference the same way to classify in that space. ``"input"``: what the network reads,
        without the network (for a model trained on ``X_pca``, the query on the *reference's*
        PCs; else the aligned genes, or images flattened to [0, 1]), under ``"<key>_input"``:
        the baseline space, and on our benchmarks the better one for naming cell types the
        reference never had from one example (see the query benchmarks).
    layer
        With ``space="latent"``, the output of this block of the network instead (0-based;
        DLME's encoder blocks, t-SimCNE's residual blocks flattened or its MLP blocks), under
        ``"<key>_layer<layer>"``. For images, t-SimCNE's first block (``layer=0``) names digits
        the network never saw from one example better than the pixels' PCs do (see the query
        benchmarks).
    use_rep
        Read the model input from this ``obsm`` key of the query instead of the recorded one
        (for models trained on an ``obsm`` representation).
    fill_missing
        ``"error"``: genes the model needs but the query lacks raise ``KeyError``. ``"zero"``:
        they are filled with 0 (and the number is logged and recorded in ``uns``) — 0 is "not
        expressed" for log data and "the reference's mean" for scaled data; many missing genes
        degrade the embedding.
    scale_query
        Standardise the query's genes with the reference's ``var["mean"]`` and ``var["std"]``
        (written by ``sc.pp.scale``) before projecting them; needs ``reference``.
    max_value
        With ``scale_query``, clip the scaled values at ± this (``sc.pp.scale``'s
        ``max_value``; ``None`` = no clipping).
    check_preprocessing
        What a preprocessing mismatch does: ``"error"`` (``ValueError``), ``"warn"``
        (``UserWarning``) or ``"ignore"``.
    key_added
        Coordinates go to ``query.obsm["X_<key_added>"]`` and provenance to
        ``query.uns[key_added]``. Default: the reference's key (e.g. ``"dlme"``, so
        ``sc.pl.embedding(query, basis="dlme")`` works), ``"<key>_latent"`` for the latent space,
        ``"<key>_layer<layer>"`` for a block's output, ``"<key>_input"`` for the input space.
    copy
        Return a copy of ``query`` instead of writing into it.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes

    ``query.obsm["X_<key_added>"]``
        The query's coordinates, ``(n_obs, d)``.
    ``query.uns[key_added]``
        Provenance: model class and method, space, input source, projection, number of features
        and of filled-in genes, and the preprocessing check's statistics.

    Nothing is written when an error is raised.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> ref, query = adata[:500].copy(), adata[500:].copy()
    >>> del query.obsm["X_pca"]
    >>> model = mx.tl.dlme(ref, n_steps=30, progress=False, return_model=True)
    >>> mx.tl.embed(query, model, reference=ref)
    >>> query.obsm["X_dlme"].shape
    (200, 2)
    """
    query = check_adata(query, min_cells=1, name="query")
    if isinstance(model, str | os.PathLike):
        model = load_model(model, device="cpu")
    _check_model_fitted(model)
    if reference is not None:
        check_adata(reference, min_cells=1, name="reference")
    if fill_missing not in ("error", "zero"):
        raise ValueError(f"`fill_missing` must be 'error' or 'zero', got {fill_missing!r}.")
    if check_preprocessing not in ("error", "warn", "ignore"):
        raise ValueError(
            f"`check_preprocessing` must be 'error', 'warn' or 'ignore', got {check_preprocessing!r}."
        )
    if space not in ("embedding", "latent", "input"):
        raise ValueError(f"`space` must be 'embedding', 'latent' or 'input', got {space!r}.")
    if layer is not None:
        if space != "latent":
            raise ValueError(f"`layer` reads the network's blocks: it needs space='latent', not {space!r}.")
        model._check_layer(layer)
    if scale_query and reference is None:
        raise ValueError("`scale_query=True` needs the `reference` whose scaling to apply.")

    spec = _input_spec(model, use_rep)
    base_key = str(spec.get("key_added") or spec.get("method") or type(model).__name__.lower())
    key = check_key_added(
        key_added
        if key_added is not None
        else (
            base_key
            if space == "embedding"
            else f"{base_key}_layer{layer}"
            if layer is not None
            else f"{base_key}_{space}"
        ),
        given=key_added,
    )

    prep = _prepare(
        query,
        model,
        spec,
        reference=reference,
        use_rep=use_rep,
        fill_missing=fill_missing,
        scale_query=scale_query,
        max_value=max_value,
    )
    problems, stats = _preprocessing_problems(prep, model)
    if problems:
        msg = (
            "The query does not look preprocessed like the data the model was trained on:\n  - "
            + "\n  - ".join(problems)
            + "\nPrepare the query with the reference's steps (normalize_total, log1p, the same "
            "genes, the same scaling), or pass `check_preprocessing='warn'` to embed it anyway."
        )
        if check_preprocessing == "error":
            raise ValueError(msg)
        if check_preprocessing == "warn":
            warnings.warn(msg, UserWarning, stacklevel=2)
    coords = embed_with(model, prep["x"], feature_names=prep["feature_names"], space=space, layer=layer)
    if coords.shape[0] != query.n_obs or not np.isfinite(coords).all():
        raise RuntimeError("The model returned non-finite or misshapen coordinates for the query.")

    uns = {
        "method": str(spec.get("method", "")),
        "model": type(model).__name__,
        "space": space,
        "input": {
            "source": str(spec.get("source", "")),
            "key": str(spec.get("key") or ""),
            "description": prep["description"],
        },
        "n_features": int(prep["n_features"]),
        "n_missing_features": int(prep["n_missing"]),
        "fill_missing": fill_missing,
        "scale_query": bool(scale_query),
        "preprocessing_check": {
            "policy": check_preprocessing,
            "problems": "; ".join(problems),
            **stats,
        },
    }
    if layer is not None:
        uns["layer"] = int(layer)
    if reference is not None:
        uns["reference_n_obs"] = int(reference.n_obs)
    logg.info(
        f"    embedded {query.n_obs} cells with {type(model).__name__} ({prep['description']}): "
        f"added obsm['X_{key}'], uns[{key!r}]"
    )
    target = query.copy() if copy else query
    target.obsm[f"X_{key}"] = coords.astype(np.float32)
    target.uns[key] = plain(uns)
    return target if copy else None


def _input_spec(model: Any, use_rep: str | None) -> dict[str, Any]:
    spec = getattr(model, "input_spec_", None)
    if spec:
        spec = dict(spec)
        if use_rep is not None:
            if spec.get("source") not in ("obsm", None):
                raise ValueError(
                    f"`use_rep` applies to models trained on an obsm representation; this one was "
                    f"trained on {spec.get('source')!r}."
                )
            spec["source"], spec["key"] = "obsm", use_rep
        return spec
    if use_rep is not None:
        return {"source": "obsm", "key": use_rep}
    if getattr(model, "feature_names_in_", None) is not None:
        return {"source": "X", "key": None, "var_names": model.feature_names_in_}
    raise ValueError(
        f"This {type(model).__name__} has no record of the AnnData input it was trained on (it was "
        "fitted outside `mx.tl`, without feature names): pass `use_rep=` naming the query's "
        "obsm representation, or call `model.transform` on an array directly."
    )


def _prepare(
    query: AnnData,
    model: Any,
    spec: dict[str, Any],
    *,
    reference: AnnData | None,
    use_rep: str | None,
    fill_missing: str,
    scale_query: bool,
    max_value: float | None,
) -> dict[str, Any]:
    """Build the model input for the query; returns it with what the checks need."""
    source, key = spec.get("source"), spec.get("key") or None
    out: dict[str, Any] = {"feature_names": None, "n_missing": 0, "gene_q": None, "gene_ref": None}
    n_feat = getattr(model, "n_features_in_", None)

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
        ref_pcs = reference is not None and key == "X_pca" and "PCs" in reference.varm
        recorded = spec.get("pca_components") is not None and spec.get("var_names") is not None
        if recorded and not ref_pcs and key not in query.obsm:
            # loadings and gene means recorded with the model: project like the reference
            names = np.asarray(spec["var_names"], dtype=str)
            xg, n_missing = _align_genes(query, names, layer=None, fill_missing=fill_missing)
            comps = np.asarray(spec["pca_components"], dtype=np.float32)[: n_feat or None]
            x = _project(xg, comps, np.asarray(spec["pca_mean"], dtype=np.float32))
            out.update(x=x, n_missing=n_missing, gene_q=xg, gene_model_stats=None)
            out.update(description="query genes projected on the recorded PCA", n_features=x.shape[1])
        elif ref_pcs:
            x, info = _project_on_reference(
                query,
                reference,
                n_feat,
                fill_missing=fill_missing,
                scale_query=scale_query,
                max_value=max_value,
            )
            out.update(info)
            out.update(
                x=x, description="query genes projected on reference varm['PCs']", n_features=x.shape[1]
            )
        else:
            if key is None or key not in query.obsm:
                hint = (
                    " Pass `reference=` (the AnnData the model was trained on, with varm['PCs']) to "
                    "project the query's genes on the reference's PCA."
                    if key == "X_pca"
                    else " Compute it for the query with the same model that produced the reference's "
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
            same_pcs = "PCs" in query.varm and (spec.get("extra") or {}).get(
                "pcs_fingerprint"
            ) == pcs_fingerprint(query.varm["PCs"])
            if key == "X_pca" and "pca" in query.uns and reference is None and not same_pcs:
                logg.warning(
                    "using the query's own obsm['X_pca']: if it was computed by sc.pp.pca on the "
                    "query, its axes differ from the reference's; pass `reference=` to project instead"
                )
            out.update(x=x, description=f"obsm[{key!r}]", n_features=x.shape[1])
        out["model_input"] = out["x"]
        return out

    if source in ("X", "layer", "pca"):
        layer = key if source == "layer" else None
        names = spec.get("var_names")
        if names is None:
            names = getattr(model, "feature_names_in_", None)
        if names is None:
            raise ValueError("The model did not record its genes; cannot align the query by name.")
        names = np.asarray(names, dtype=str)
        xg, n_missing = _align_genes(query, names, layer=layer, fill_missing=fill_missing)
        if scale_query:
            xg = _scale_like(xg, reference, names, max_value)
        out.update(n_missing=n_missing, gene_q=xg)
        if reference is not None:
            out["gene_ref"] = _reference_genes(reference, names, layer)
        where = f"layers[{layer!r}]" if layer else "X"
        if source == "pca":
            comps = np.asarray(spec["pca_components"], dtype=np.float32)
            mean = np.asarray(spec["pca_mean"], dtype=np.float32)
            x = _project(xg, comps, mean)
            out.update(x=x, description=f"query {where} projected on the model's PCA", n_features=x.shape[1])
            out["gene_model_stats"] = None
        else:
            out.update(x=xg, feature_names=names, description=f"query {where} ({len(names)} genes)")
            out["n_features"] = len(names)
            out["gene_model_stats"] = (model.feature_mean_, model.feature_std_)
        out["model_input"] = out["x"]
        return out

    raise ValueError(f"Unknown input source {source!r} in model.input_spec_.")


def _align_genes(
    adata: AnnData, names: np.ndarray, *, layer: str | None, fill_missing: str, what: str = "query"
) -> tuple[np.ndarray | sp.csr_matrix, int]:
    """Columns of ``adata`` (X or a layer) in the order of ``names``; float32, dense or CSR."""
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
    present = np.flatnonzero(pos >= 0)
    if sp.issparse(src):
        sel = sp.csr_matrix(
            (np.ones(present.size, dtype=np.float32), (pos[present], present)),
            shape=(adata.n_vars, len(names)),
        )
        x = sp.csr_matrix(sp.csr_matrix(src) @ sel)
    else:
        arr = np.asarray(src)
        x = np.zeros((arr.shape[0], len(names)), dtype=np.float32)
        x[:, present] = arr[:, pos[present]]
    x = as_2d_float(x, name=where)
    if missing.size:
        logg.warning(f"{missing.size} of {len(names)} genes are missing from the {what}; filled with 0")
    return x, int(missing.size)


def _reference_genes(reference: AnnData, names: np.ndarray, layer: str | None) -> np.ndarray | sp.csr_matrix:
    return _align_genes(reference, names, layer=layer, fill_missing="error", what="reference")[0]


def _scale_like(
    x: np.ndarray | sp.csr_matrix, reference: AnnData, names: np.ndarray, max_value: float | None
):
    if not {"mean", "std"} <= set(reference.var.columns):
        raise KeyError(
            "`scale_query=True` needs reference.var['mean'] and reference.var['std'] (written by sc.pp.scale)."
        )
    mean = reference.var["mean"].reindex(names).to_numpy(np.float32)
    std = reference.var["std"].reindex(names).to_numpy(np.float32)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
    dense = x.toarray() if sp.issparse(x) else np.array(x)
    out = (dense - mean[None, :]) / std[None, :]
    if max_value is not None:
        np.clip(out, -max_value, max_value, out=out)
    return out.astype(np.float32)


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
    xg, n_missing = _align_genes(query, names, layer=None, fill_missing=fill_missing)
    if scale_query:
        xg = _scale_like(xg, reference, names, max_value)
    x = _project(xg, comps, mu)
    return x, {"n_missing": n_missing, "gene_q": xg, "gene_ref": xr, "gene_model_stats": None}


# ---- preprocessing check ---------------------------------------------------------------------
def _signature(x: np.ndarray | sp.csr_matrix, *, max_values: int = 200_000) -> dict[str, Any]:
    vals = x.data if sp.issparse(x) else np.asarray(x).ravel()
    if vals.size > max_values:
        vals = vals[np.random.default_rng(0).choice(vals.size, max_values, replace=False)]
    if vals.size == 0:
        return {"min": 0.0, "max": 0.0, "integer": True}
    return {
        "min": float(vals.min()),
        "max": float(vals.max()),
        "integer": bool(np.all(np.equal(np.mod(vals, 1), 0))),
    }


def _col_stats(x: np.ndarray | sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    if sp.issparse(x):
        mean = np.asarray(x.mean(0)).ravel()
        var = np.maximum(np.asarray(x.multiply(x).mean(0)).ravel() - mean**2, 0.0)
    else:
        mean, var = x.mean(0, dtype=np.float64), x.var(0, dtype=np.float64)
    return mean.astype(np.float64), np.sqrt(var).astype(np.float64)


def _preprocessing_problems(prep: dict[str, Any], model: Any) -> tuple[list[str], dict[str, float]]:
    problems: list[str] = []
    stats: dict[str, float] = {}
    gq = prep.get("gene_q")
    if gq is not None:
        q = _signature(gq)
        ref_negative: bool | None = None
        ref: dict[str, Any] | None = None
        if prep.get("gene_ref") is not None:
            ref = _signature(prep["gene_ref"])
            ref_negative = ref["min"] < 0
        elif prep.get("gene_model_stats") is not None and model.feature_mean_ is not None:
            if np.any(np.asarray(model.feature_mean_) < 0):
                ref_negative = True
        q_counts = q["integer"] and q["min"] >= 0 and q["max"] >= COUNT_MAX_MIN
        ref_counts = ref is not None and ref["integer"] and ref["min"] >= 0
        if q_counts and not ref_counts and (ref is not None or ref_negative):
            problems.append(
                f"the query's genes look like raw counts (non-negative integers up to {q['max']:.0f}) but "
                "the reference's are not: run normalize_total and log1p as for the reference"
            )
        elif ref_negative is True and q["min"] >= 0:
            problems.append(
                "the reference's genes were centred / scaled (they have negative values) but the query's "
                "are all ≥ 0: scale the query like the reference (e.g. `scale_query=True`)"
            )
        elif ref_negative is False and q["min"] < 0:
            problems.append(
                "the query's genes have negative values (centred / scaled?) but the reference's do not"
            )
        if ref is not None and ref["max"] > 0 and q["max"] > 10 * ref["max"] and not q_counts:
            problems.append(
                f"the query's largest value ({q['max']:.3g}) is over 10× the reference's ({ref['max']:.3g}): "
                "is the query log-transformed like the reference?"
            )
        stats.update(query_min=q["min"], query_max=q["max"])
    mi = prep.get("model_input")
    f_mean, f_std = getattr(model, "feature_mean_", None), getattr(model, "feature_std_", None)
    if mi is not None and f_mean is not None and f_std is not None and mi.shape[1] == len(f_std):
        qm, qs = _col_stats(mi)
        f_mean, f_std = np.asarray(f_mean, np.float64), np.asarray(f_std, np.float64)
        ok = f_std > 1e-8 * max(float(f_std.max()), 1e-30)
        if ok.any():
            shift = float(np.median(np.abs(qm[ok] - f_mean[ok]) / f_std[ok]))
            stats["mean_shift"] = shift
            if shift > MEAN_SHIFT_LIMIT:
                problems.append(
                    f"the query's features are offset by a median {shift:.3g} reference standard deviations "
                    f"from the training data (limit {MEAN_SHIFT_LIMIT:g})"
                )
            if mi.shape[0] >= 2:
                pos = ok & (qs > 0)
                if pos.any():
                    ratio = float(np.exp(np.median(np.log(qs[pos] / f_std[pos]))))
                    stats["scale_ratio"] = ratio
                    if not 1 / SCALE_RATIO_LIMIT <= ratio <= SCALE_RATIO_LIMIT:
                        problems.append(
                            f"the query's features vary {ratio:.3g}× as much as the training data's "
                            f"(median ratio of standard deviations; allowed 1/{SCALE_RATIO_LIMIT:g} to "
                            f"{SCALE_RATIO_LIMIT:g}): another normalisation or scale?"
                        )
    return problems, stats


# =============================================================================================
# label transfer
# =============================================================================================
def _resolve_basis(query: AnnData, reference: AnnData | None, basis: str | None) -> str:
    holders = [query] + ([reference] if reference is not None else [])
    if basis is not None:
        if not isinstance(basis, str):
            raise TypeError(f"`basis` must be a string, got {type(basis).__name__}.")
        key = basis if basis.startswith("X_") else f"X_{basis}"
        for a, name in zip(holders, ("query", "reference")):
            if key not in a.obsm:
                raise KeyError(f"{name}.obsm has no {key!r} (keys: {list(a.obsm.keys())}).")
        return key
    common = [k for k in query.obsm if all(k in a.obsm for a in holders)]
    embedded = [
        k
        for k in common
        if k.startswith("X_") and isinstance(query.uns.get(k[2:]), dict) and "space" in query.uns[k[2:]]
    ]
    cands = embedded or [k for k in common if k in ("X_dlme", "X_tsimcne", "X_n2d")]
    if len(cands) != 1:
        raise ValueError(
            f"Cannot tell which embedding to use (candidates: {cands or common}); pass `basis=`."
        )
    return cands[0]


def _coords(a: AnnData, key: str, name: str) -> np.ndarray:
    x = as_2d_float(a.obsm[key], name=f"{name}.obsm[{key!r}]")
    return x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float64)


def _labels(a: AnnData, label_key: str, name: str) -> pd.Series:
    if not isinstance(label_key, str):
        raise TypeError(f"`label_key` must be a string, got {type(label_key).__name__}.")
    if label_key not in a.obs:
        raise KeyError(f"{name}.obs has no column {label_key!r}.")
    s = a.obs[label_key]
    return s.astype(object).where(s.notna(), None)


def _calibrate_knn(xr: np.ndarray, yr: np.ndarray, classes: np.ndarray, k: int, q: float):
    """Per class: a NN index on its cells, its neighbour rank m_c and threshold (quantile q)."""
    from sklearn.neighbors import NearestNeighbors

    out = {}
    for c in classes:
        pts = xr[yr == c]
        m = max(1, min(k, pts.shape[0] - 1))
        nn = NearestNeighbors(n_neighbors=min(m + 1, pts.shape[0])).fit(pts)
        thr = np.nan
        if pts.shape[0] >= 2:
            d, _ = nn.kneighbors(pts, n_neighbors=m + 1)
            thr = float(np.quantile(d[:, m], q))
        out[c] = (nn, m, thr)
    return out


def _knn_class_distance(cal: dict, xq: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(n_query, n_classes) distance to the m_c-th nearest reference cell of each class."""
    d = np.empty((xq.shape[0], len(classes)))
    for j, c in enumerate(classes):
        nn, m, _ = cal[c]
        m_eff = min(m, nn.n_samples_fit_)
        d[:, j] = nn.kneighbors(xq, n_neighbors=m_eff)[0][:, m_eff - 1]
    return d


def _fill_thresholds(thr: np.ndarray) -> np.ndarray:
    thr = np.asarray(thr, dtype=np.float64)
    good = np.isfinite(thr) & (thr > 0)
    fill = float(np.median(thr[good])) if good.any() else 1.0
    thr = np.where(good, thr, fill)
    return np.maximum(thr, 1e-12)


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def transfer_labels(
    query: AnnData,
    reference: AnnData,
    *,
    label_key: str,
    basis: str | None = None,
    method: Literal["knn", "prototype"] = "knn",
    k: int = 15,
    unknown: Literal["auto", "distance", "coverage", "both"] | None = "auto",
    unknown_threshold: float | None = 0.99,
    min_coverage: float = 0.5,
    coverage_layer: str | None = None,
    unknown_label: str = "unknown",
    support: AnnData | None = None,
    support_key: str | None = None,
    random_state: int = 0,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Transfer cell labels from a reference to a query in a shared embedding.

    Both AnnData objects must hold the same embedding under ``obsm["X_<basis>"]`` (the
    reference from ``mx.tl.dlme`` & co., the query from :func:`embed`).

    ``method="knn"``
        Majority vote of the ``k`` nearest reference cells; confidence = the winning class's
        share of the votes.
    ``method="prototype"``
        Nearest class prototype (mean embedding of the class's reference cells). Confidence =
        the class probability of an isotropic Gaussian model around the prototypes whose
        variance is the reference's pooled within-class variance.

    **Unknown cells** are called ``unknown_label`` instead of being forced into a known class.
    Two checks can call them (``unknown``):

    *distance* (in the embedding)
        A query cell far from *every* reference class. Distances are calibrated on the
        reference itself: for class ``c`` the threshold ``t_c`` is the ``unknown_threshold``
        quantile (default 0.99) over the class's reference cells of (knn) the distance to their
        ``m``-th nearest other cell of the class, ``m = min(k, n_c − 1)``, or (prototype) their
        distance to the class prototype. A query cell's *novelty* is ``min_c d_c / t_c`` with
        ``d_c`` measured the same way (distance to the ``m``-th nearest reference cell of ``c``,
        or to its prototype); novelty > 1 means it is farther from every class than 99% of that
        class's own cells are, and it is called unknown. Lower quantiles call more cells unknown.

    *coverage* (in expression)
        A cell type the reference never saw has no axis of its own in an embedding trained on
        the reference, so it lands on or between known classes and the distance check misses
        it (on pbmc3k with the B cells removed from the reference, it called 0% of them
        unknown). Coverage instead puts reference and query cells into one PCA (15 components)
        of their shared genes (both in the reference's standard units), where the new type's
        variance has its own directions, and scores each query cell by the share of reference
        cells among its nearest neighbours, averaged over those neighbours, divided by the
        share perfect mixing would give (``n_ref / (n_ref + n_query − 1)``). About 1 where the
        two mix, near 0 for a population the reference lacks. A cell assigned to a *reference* class with coverage
        below ``min_coverage`` is called unknown (a cell assigned to a ``support`` class is
        not: the support exists to name such cells). Limits: a new population must have more
        cells than the neighbour count to form its own neighbourhood, one that grades into a
        known type (a differentiation continuum) is only partly caught, and query and
        reference must share their preprocessing and have no strong batch effect — when they
        do not mix, most cells get low coverage and a warning says so (integrate them first,
        e.g. with scVI, or use ``unknown="distance"``).

    **Few-shot classes.** ``support`` (``method="prototype"``) is an AnnData of a few labelled
    cells (k ≥ 1 per class) of classes the reference lacks, embedded in the same space; each
    of its classes becomes a prototype (mean of its examples) beside the reference's. Its
    unknown threshold is the median of the reference classes' thresholds times
    ``√(1 + 1/k)``: a prototype from k examples sits about σ/√k off its class centre, which
    widens the distances to it by that factor.

    Parameters
    ----------
    query
        Cells to label, with ``obsm["X_<basis>"]``.
    reference
        Labelled cells, with ``obsm["X_<basis>"]`` and ``obs[label_key]`` (missing labels are
        ignored).
    label_key
        ``obs`` column of the reference (and of ``support``) with the labels.
    basis
        Embedding key without ``X_`` (``"dlme"``, ``"dlme_latent"``, ...). Default: the one
        embedding the query received from :func:`embed` that the reference also has.
    method
        ``"knn"`` or ``"prototype"``.
    k
        Neighbours for the vote, for the distance behind the unknown call and (at least) for
        the coverage check.
    unknown
        Which checks call cells unknown: ``"distance"``, ``"coverage"``, ``"both"`` (either
        check suffices), ``"auto"`` (``"both"`` when query and reference share at least 50
        genes of comparable expression in ``X`` — or ``coverage_layer`` — else ``"distance"``;
        what was used and why is recorded in ``uns``) or ``None`` (never).
    unknown_threshold
        Quantile in (0, 1] of the reference's within-class embedding distances beyond which the
        distance check calls a cell unknown. ``None`` never calls unknown (same as
        ``unknown=None``).
    min_coverage
        Coverage below which a cell assigned to a reference class is called unknown. 0.5: its
        expression neighbourhood holds fewer than half the reference cells that mixing would
        put there. On pbmc3k and paul15 halves, known cells stayed below 1% unknown at 0.5.
    coverage_layer
        Layer (in both AnnData) with the expression for the coverage check; default ``X``. The
        query may be unscaled when the reference was scaled by ``sc.pp.scale`` (its recorded
        ``var["mean"]`` / ``var["std"]`` are applied); with ``var["highly_variable"]`` in the
        reference, only those genes are used.
    unknown_label
        The label of unknown cells.
    support
        Labelled examples of new classes (``method="prototype"`` only).
    support_key
        ``obs`` column of ``support`` with its labels (default ``label_key``).
    random_state
        Seed of the coverage check's randomized PCA (and of the approximate neighbour search
        above 10,000 cells).
    key_added
        ``obs`` column for the labels (default ``"<label_key>_transferred"``); the confidence goes
        to ``"<key_added>_confidence"``, the distance novelty to ``"<key_added>_novelty"``, the
        coverage to ``"<key_added>_coverage"`` and the parameters and thresholds to
        ``uns[key_added]``.
    copy
        Return a copy of ``query`` instead of writing into it.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``query.obs[key_added]``
    (categorical, including ``unknown_label`` when used),
    ``query.obs[key_added + "_confidence"]`` (in [0, 1]),
    ``query.obs[key_added + "_novelty"]`` (when the distance check ran),
    ``query.obs[key_added + "_coverage"]`` (when the coverage check ran) and
    ``query.uns[key_added]``.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> ref, query = adata[:500].copy(), adata[500:].copy()
    >>> model = mx.tl.dlme(ref, n_steps=30, progress=False, return_model=True)
    >>> mx.tl.embed(query, model, reference=ref)
    >>> mx.tl.transfer_labels(query, ref, label_key="bulk_labels")
    >>> query.obs[["bulk_labels_transferred", "bulk_labels_transferred_confidence"]].shape
    (200, 2)
    """
    check_adata(query, min_cells=1, name="query")
    check_adata(reference, min_cells=1, name="reference")
    if method not in ("knn", "prototype"):
        raise ValueError(f"`method` must be 'knn' or 'prototype', got {method!r}.")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"`k` must be a positive integer, got {k!r}.")
    if unknown_threshold is not None and not 0 < float(unknown_threshold) <= 1:
        raise ValueError(
            f"`unknown_threshold` must be a quantile in (0, 1] or None, got {unknown_threshold!r}."
        )
    if support is not None and method != "prototype":
        raise ValueError("`support` (few-shot classes) needs `method='prototype'`.")
    if unknown not in ("auto", "distance", "coverage", "both", None):
        raise ValueError(
            f"`unknown` must be 'auto', 'distance', 'coverage', 'both' or None, got {unknown!r}."
        )
    if isinstance(min_coverage, bool) or not isinstance(min_coverage, int | float) or not min_coverage > 0:
        raise ValueError(f"`min_coverage` must be a positive number, got {min_coverage!r}.")
    random_state = check_random_state(random_state)
    if unknown_threshold is None:
        unknown = None
    key = _resolve_basis(query, reference, basis)
    key_added = check_key_added(
        key_added if key_added is not None else f"{label_key}_transferred", given=key_added
    )

    xq = _coords(query, key, "query")
    xr_all = _coords(reference, key, "reference")
    if xq.shape[1] != xr_all.shape[1]:
        raise ValueError(f"query and reference {key!r} have {xq.shape[1]} and {xr_all.shape[1]} dimensions.")
    yr_all = _labels(reference, label_key, "reference")
    keep = yr_all.notna().to_numpy()
    if keep.sum() < 1:
        raise ValueError(f"reference.obs[{label_key!r}] has no labels.")
    xr, yr = xr_all[keep], np.asarray(yr_all[keep].astype(str))
    classes = np.unique(yr)
    if unknown_label in set(classes):
        raise ValueError(
            f"The reference has a class named {unknown_label!r}; choose another `unknown_label`."
        )

    xs = ys = None
    if support is not None:
        check_adata(support, min_cells=1, name="support")
        if key not in support.obsm:
            raise KeyError(f"support.obsm has no {key!r}; embed the support cells like the query.")
        xs = _coords(support, key, "support")
        if xs.shape[1] != xq.shape[1]:
            raise ValueError(f"support {key!r} has {xs.shape[1]} dimensions, the query {xq.shape[1]}.")
        s_lab = _labels(support, support_key or label_key, "support")
        s_keep = s_lab.notna().to_numpy()
        if not s_keep.any():
            raise ValueError("`support` has no labelled cells.")
        xs, ys = xs[s_keep], np.asarray(s_lab[s_keep].astype(str))
        clash = sorted(set(ys) & (set(classes) | {unknown_label}))
        if clash:
            raise ValueError(f"Support classes {clash} are already reference classes (or the unknown label).")

    use_distance = unknown in ("auto", "distance", "both")
    coverage = None
    cov_info: dict[str, Any] = {}
    if unknown in ("auto", "coverage", "both"):
        pair = expression_pair(query, reference, coverage_layer)
        if isinstance(pair, str):
            if unknown != "auto":
                raise ValueError(f"The coverage check (`unknown={unknown!r}`) cannot run: {pair}.")
            cov_info["skipped"] = pair
            logg.info(f"    coverage check skipped: {pair}")
        else:
            xq_g, xr_g, gene_info = pair
            coverage, used = reference_coverage(xq_g, xr_g, n_neighbors=k, random_state=random_state)
            cov_info.update(gene_info, **used, median=float(np.median(coverage)))
            if np.median(coverage) < min_coverage:
                warnings.warn(
                    f"Most query cells have few reference neighbours in expression (median coverage "
                    f"{np.median(coverage):.2f} < min_coverage={min_coverage}): the query and the "
                    "reference do not mix, e.g. a batch effect or different preprocessing, or the "
                    "query is mostly of types the reference lacks. Cells are called unknown by "
                    "coverage; integrate the data first or pass unknown='distance'.",
                    UserWarning,
                    stacklevel=2,
                )
    q = float(unknown_threshold) if use_distance else None
    if method == "knn":
        from sklearn.neighbors import NearestNeighbors

        kk = min(k, xr.shape[0])
        _, idx = NearestNeighbors(n_neighbors=kk).fit(xr).kneighbors(xq)
        codes = np.searchsorted(classes, yr)[idx]  # (n_q, kk)
        votes = np.zeros((xq.shape[0], len(classes)))
        rank_w = 1.0 - 1e-6 * np.arange(kk)  # ties go to the class of the nearer neighbours
        np.add.at(votes, (np.repeat(np.arange(xq.shape[0]), kk), codes.ravel()), np.tile(rank_w, xq.shape[0]))
        pred = votes.argmax(1)
        conf = np.round(votes.max(1)) / kk
        all_classes = classes
        thresholds = None
        novelty = None
        if q is not None:
            cal = _calibrate_knn(xr, yr, classes, k, q)
            thresholds = _fill_thresholds(np.array([cal[c][2] for c in classes]))
            novelty = (_knn_class_distance(cal, xq, classes) / thresholds[None, :]).min(1)
    else:
        protos = np.stack([xr[yr == c].mean(0) for c in classes])
        resid = xr - protos[np.searchsorted(classes, yr)]
        r = np.linalg.norm(resid, axis=1)
        sigma2 = max(float((resid**2).sum(1).mean() / xr.shape[1]), 1e-12)
        all_classes = classes
        thresholds = None
        if q is not None:
            thresholds = _fill_thresholds(
                np.array([np.quantile(r[yr == c], q) if (yr == c).sum() >= 2 else np.nan for c in classes])
            )
        if xs is not None:
            s_classes = np.unique(ys)
            protos = np.vstack([protos, np.stack([xs[ys == c].mean(0) for c in s_classes])])
            all_classes = np.concatenate([classes, s_classes])
            if thresholds is not None:
                # a prototype from k examples is off the class centre by ~σ/√k, so distances to it
                # spread by √(1 + 1/k) more than distances to a reference class mean
                shots = np.array([(ys == c).sum() for c in s_classes], dtype=np.float64)
                s_thr = np.median(thresholds) * np.sqrt(1.0 + 1.0 / shots)
                thresholds = np.concatenate([thresholds, s_thr])
        d2 = ((xq[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
        prob = _softmax_rows(-d2 / (2 * sigma2))
        pred = d2.argmin(1)
        conf = prob[np.arange(len(pred)), pred]
        novelty = (np.sqrt(d2) / thresholds[None, :]).min(1) if thresholds is not None else None

    labels = np.asarray(all_classes, dtype=object)[pred]
    calls = novelty is not None or coverage is not None
    n_dist = n_cov = 0
    if novelty is not None:
        far = novelty > 1.0
        n_dist = int(far.sum())
        labels = np.where(far, unknown_label, labels)
    if coverage is not None:
        # only cells given a *reference* class must be covered by the reference
        uncovered = (coverage < min_coverage) & (pred < len(classes))
        n_cov = int(uncovered.sum())
        labels = np.where(uncovered, unknown_label, labels)
    cats = list(all_classes) + ([unknown_label] if calls else [])
    checks = [c for c, on in (("distance", novelty is not None), ("coverage", coverage is not None)) if on]
    uns = {
        "method": method,
        "basis": key[2:],
        "label_key": label_key,
        "k": int(k),
        "unknown": str(unknown) if unknown is not None else "none",
        "unknown_checks": checks,
        "unknown_threshold": q if q is not None else "none",
        "min_coverage": float(min_coverage),
        "unknown_label": unknown_label,
        "classes": [str(c) for c in all_classes],
        "n_unknown": int((labels == unknown_label).sum()) if calls else 0,
        "n_unknown_distance": n_dist,
        "n_unknown_coverage": n_cov,
        "n_reference": int(xr.shape[0]),
    }
    if cov_info:
        uns["coverage"] = cov_info
    if thresholds is not None:
        uns["thresholds"] = {str(c): float(t) for c, t in zip(all_classes, thresholds)}
    if xs is not None:
        uns["support_classes"] = [str(c) for c in np.unique(ys)]
    logg.info(
        f"    transferred {label_key!r} to {query.n_obs} cells by {method} in {key!r}"
        + (f" ({uns['n_unknown']} unknown)" if calls else "")
    )
    target = query.copy() if copy else query
    target.obs[key_added] = pd.Categorical(labels, categories=cats)
    target.obs[f"{key_added}_confidence"] = conf.astype(np.float32)
    for suffix, values in (("novelty", novelty), ("coverage", coverage)):
        col = f"{key_added}_{suffix}"
        if values is not None:
            target.obs[col] = values.astype(np.float32)
        elif col in target.obs:  # from an earlier call with other checks: not this result's
            del target.obs[col]
    target.uns[key_added] = plain(uns)
    return target if copy else None


def fewshot_labels(
    query: AnnData,
    support: AnnData | None = None,
    *,
    label_key: str,
    basis: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Name cells from a few labelled examples per class (k ≥ 1), e.g. cell types training never saw.

    Each class of the support set becomes a prototype (mean embedding of its examples) and every
    query cell gets the class of the nearest prototype — the one-shot protocol of
    :func:`manifex.metrics.one_shot_accuracy`, as a tool. Confidence is the class probability
    of an isotropic Gaussian around the prototypes; its variance is the support's pooled
    within-class variance when some class has ≥ 2 examples, else the median squared distance of
    the query cells to their nearest prototype (per dimension). To combine the new classes with
    a labelled reference, and call cells far from all classes unknown, use
    :func:`transfer_labels` with ``support=``.

    Parameters
    ----------
    query
        Cells to name, with ``obsm["X_<basis>"]`` (e.g. from :func:`embed`).
    support
        AnnData of labelled examples in the same embedding. ``None``: the query cells whose
        ``obs[label_key]`` is set are the support (label one cell per type, name the rest).
    label_key
        ``obs`` column with the support labels.
    basis
        Embedding key without ``X_``; default the one embedding from :func:`embed` in the query.
    key_added
        ``obs`` column for the labels (default ``"<label_key>_fewshot"``); confidence in
        ``"<key_added>_confidence"``, parameters in ``uns[key_added]``.
    copy
        Return a copy of ``query`` instead of writing into it.

    Returns
    -------
    ``None`` or the modified copy when ``copy=True``.

    Examples
    --------
    >>> import numpy as np, scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.dlme(adata, n_steps=30, progress=False)
    >>> adata.obs["shot"] = None
    >>> for c in ["CD14+ Monocyte", "CD19+ B", "CD56+ NK"]:
    ...     adata.obs.loc[adata.obs_names[adata.obs["bulk_labels"] == c][0], "shot"] = c
    >>> mx.tl.fewshot_labels(adata, label_key="shot", basis="dlme")
    >>> adata.obs["shot_fewshot"].nunique()
    3
    """
    check_adata(query, min_cells=1, name="query")
    sup = query if support is None else check_adata(support, min_cells=1, name="support")
    key = _resolve_basis(query, support, basis)
    key_added = check_key_added(
        key_added if key_added is not None else f"{label_key}_fewshot", given=key_added
    )
    xq = _coords(query, key, "query")
    xs = _coords(sup, key, "support")
    if xs.shape[1] != xq.shape[1]:
        raise ValueError(f"support {key!r} has {xs.shape[1]} dimensions, the query {xq.shape[1]}.")
    lab = _labels(sup, label_key, "support")
    keep = lab.notna().to_numpy()
    if not keep.any():
        raise ValueError(f"No labelled support cells in obs[{label_key!r}].")
    xs, ys = xs[keep], np.asarray(lab[keep].astype(str))
    classes, counts = np.unique(ys, return_counts=True)
    protos = np.stack([xs[ys == c].mean(0) for c in classes])
    d2 = ((xq[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
    if (counts >= 2).any():
        resid = xs - protos[np.searchsorted(classes, ys)]
        multi = np.isin(ys, classes[counts >= 2])
        sigma2 = float((resid[multi] ** 2).sum(1).mean() / xs.shape[1])
        scale_from = "support within-class variance"
    else:
        sigma2 = float(np.median(d2.min(1)) / xq.shape[1])
        scale_from = "median query-to-prototype distance"
    sigma2 = max(sigma2, 1e-12)
    pred = d2.argmin(1)
    conf = (
        _softmax_rows(-d2 / (2 * sigma2))[np.arange(len(pred)), pred]
        if len(classes) > 1
        else np.ones(len(pred))
    )
    uns = {
        "method": "prototype",
        "basis": key[2:],
        "label_key": label_key,
        "classes": [str(c) for c in classes],
        "shots": {str(c): int(n) for c, n in zip(classes, counts)},
        "confidence_scale": scale_from,
    }
    target = query.copy() if copy else query
    target.obs[key_added] = pd.Categorical(classes[pred], categories=list(classes))
    target.obs[f"{key_added}_confidence"] = conf.astype(np.float32)
    target.uns[key_added] = plain(uns)
    return target if copy else None
