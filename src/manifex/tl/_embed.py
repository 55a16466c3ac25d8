"""Map new cells (a query) into a trained embedding: :func:`embed`.

Four steps, each in one place: validate the arguments and the model (:func:`_validate`);
prepare the query exactly like the reference input recorded in ``model.input_spec_`` (genes
aligned by name, projection on the reference's PCs: :mod:`manifex.tl._query`) and check its
preprocessing (:mod:`manifex.tl._prepcheck`); compute the coordinates with
``model.transform``; record them (:func:`_record`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import numpy as np
from anndata import AnnData
from scanpy import logging as logg

from .._anndata import check_adata, check_flags, check_key_added, copy_of, plain
from ..io import InputSpec
from ..models import BaseModel, load_model
from ..models._contract import SPACES, check_model, check_space, model_transform
from ._docs import doc_copy_query, doc_params
from ._prepcheck import PreprocessingWarning, preprocessing_problems
from ._query import prepare_query

__all__ = ["embed"]


@doc_params(doc_copy_query=doc_copy_query)
def embed(
    query: AnnData,
    model: BaseModel | str | os.PathLike,
    *,
    reference: AnnData | None = None,
    space: Literal["embedding", "latent", "input", "manifold"] = "embedding",
    block: int | None = None,
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

    Before embedding, the query's preprocessing is compared with the training data's
    (:mod:`manifex.tl._prepcheck`), so that a query prepared otherwise is refused with what looks
    wrong and how to fix it, not embedded as garbage:

    * gene level, whenever the model input is built from genes: the query's values against the
      training genes -- measured on ``reference`` when given, else recorded by the ``tl``
      function in ``model.input_spec_``, else read from ``model.feature_mean_``. Raw counts
      (non-negative integers up to at least 20) against normalised data and the reverse;
      unscaled data against a ``sc.pp.scale``-d reference and the reverse; the mean total per
      cell after ``expm1`` (the ``normalize_total`` target) off by more than 4× (e.g. 1e6
      against 1e4); values 10× larger than the reference's largest (unscaled data); a scaled
      query beyond the ``max_value`` the reference was clipped at;
    * model input: the per-feature standard deviation and mean of the prepared query against
      ``model.feature_std_`` / ``model.feature_mean_``. Flagged when the median ratio of standard
      deviations is above 10 or below 1/10, or the median absolute mean difference exceeds 5
      reference standard deviations.

    These limits tolerate a query of a single cell type (its spread is smaller, its mean offset)
    and of cell types the reference lacks (large z-scores once scaled), but not data on another
    scale.

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
        reference never had from one example (see the query benchmarks). A model may offer
        more spaces: N2D's ``"manifold"`` (the UMAP manifold its mixture clusters, of
        ``manifold_dim`` dimensions) is written under ``"<key>_manifold"``.
    block
        With ``space="latent"``, the output of this block of the network instead (0-based;
        DLME's encoder blocks, t-SimCNE's residual blocks flattened or its MLP blocks), under
        ``"<key>_block<block>"``. For images, t-SimCNE's first block (``block=0``) names digits
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
        ``max_value``). ``None``: the value recorded in ``reference.uns["scale"]["max_value"]``
        if any, else no clipping (a reference whose scaled values stop at a common bound, as
        ``sc.pp.scale(max_value=10)`` leaves them, then makes the check ask for it).
    check_preprocessing
        What a preprocessing mismatch does: ``"error"`` (``ValueError``), ``"warn"``
        (:class:`~manifex.tl._prepcheck.PreprocessingWarning`, a ``UserWarning``) or
        ``"ignore"``.
    key_added
        Coordinates go to ``query.obsm["X_<key_added>"]`` and provenance to
        ``query.uns[key_added]``. Default: the reference's key (e.g. ``"dlme"``, so
        ``sc.pl.embedding(query, basis="dlme")`` works), ``"<key>_latent"`` for the latent space,
        ``"<key>_block<block>"`` for a block's output, ``"<key>_input"`` for the input space,
        ``"<key>_<space>"`` for another space of the model (``"n2d_manifold"``).
        A key whose entries are the model's input (``"pca"`` for a model trained on ``X_pca``)
        is refused; other existing entries are replaced with a logged warning.
    {doc_copy_query}

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
    model = _validate(
        query,
        model,
        reference,
        space,
        block,
        use_rep,
        fill_missing,
        scale_query,
        max_value,
        check_preprocessing,
        copy,
    )
    spec = _input_spec(model, use_rep)
    if spec.source not in ("images", "obsm") and query.n_vars == 0:
        raise ValueError(f"`query` is empty (shape {query.shape}): the model reads genes.")
    key = check_key_added(
        query,
        key_added,
        default=_default_key(spec, model, space, block),
        writes=lambda k: [("obsm", f"X_{k}"), ("uns", k)],
        inputs=spec.slots(),
        function="embed",
    )
    opts = {"fill_missing": fill_missing, "scale_query": scale_query, "max_value": max_value}
    prep = prepare_query(query, model, spec, reference=reference, space=space, **opts)
    problems, stats = _check(prep, model, check_preprocessing)
    coords = model_transform(model, prep["x"], feature_names=prep["feature_names"], space=space, block=block)
    if coords.shape[0] != query.n_obs or not np.isfinite(coords).all():
        raise RuntimeError("The model returned non-finite or misshapen coordinates for the query.")
    uns = _record_uns(spec, model, prep, space, block, reference, opts, check_preprocessing, problems, stats)
    logg.info(
        f"    embedded {query.n_obs} cells with {type(model).__name__} ({prep['description']}): "
        f"added obsm['X_{key}'], uns[{key!r}]"
    )
    target = copy_of(query) if copy else query
    target.obsm[f"X_{key}"] = coords.astype(np.float32)
    target.uns[key] = plain(uns)
    return target if copy else None


def _validate(
    query: Any,
    model: Any,
    reference: Any,
    space: Any,
    block: Any,
    use_rep: Any,
    fill_missing: Any,
    scale_query: Any,
    max_value: Any,
    check_preprocessing: Any,
    copy: Any,
) -> Any:
    """Every argument checked before any work; returns the model (loaded when given as a path)."""
    check_adata(query, min_cells=1, name="query", need_vars=False)  # image queries: obsm only
    if reference is not None:
        check_adata(reference, min_cells=1, name="reference")
    if fill_missing not in ("error", "zero"):
        raise ValueError(f"`fill_missing` must be 'error' or 'zero', got {fill_missing!r}.")
    if check_preprocessing not in ("error", "warn", "ignore"):
        raise ValueError(
            f"`check_preprocessing` must be 'error', 'warn' or 'ignore', got {check_preprocessing!r}."
        )
    from_file = isinstance(model, str | os.PathLike)
    if not from_file or not isinstance(space, str) or space in SPACES:
        check_space(space, block, None if from_file else model)  # a file's own spaces: once loaded
    check_flags(scale_query=scale_query, copy=copy)
    if scale_query and reference is None:
        raise ValueError("`scale_query=True` needs the `reference` whose scaling to apply.")
    if max_value is not None and (
        isinstance(max_value, bool)
        or not isinstance(max_value, int | float | np.integer | np.floating)
        or not np.isfinite(max_value)
        or max_value <= 0
    ):
        raise ValueError(f"`max_value` must be a positive number or None, got {max_value!r}.")
    if max_value is not None and not scale_query:
        raise ValueError("`max_value` clips the scaling that `scale_query=True` applies; pass both.")
    if use_rep is not None and not isinstance(use_rep, str):
        raise TypeError(f"`use_rep` must be an obsm key (a string) or None, got {type(use_rep).__name__}.")
    if from_file:
        model = load_model(model, device="cpu")
        check_model(model)
        check_space(space, block, model)
    else:
        check_model(model)
    return model


def _default_key(spec: InputSpec, model: Any, space: str, block: int | None) -> str:
    """The reference's key (``"dlme"``), ``"<key>_block<block>"`` or ``"<key>_<space>"``."""
    base = str(spec.key_added or spec.method or type(model).__name__.lower())
    if space == "embedding":
        return base
    return f"{base}_block{block}" if block is not None else f"{base}_{space}"


def _check(prep: dict[str, Any], model: Any, policy: str) -> tuple[list[str], dict[str, Any]]:
    """The preprocessing check of the prepared query, applied by ``policy``."""
    problems, stats = preprocessing_problems(prep, model) if policy != "ignore" else ([], {})
    if problems:
        msg = (
            "The query does not look preprocessed like the data the model was trained on:\n  - "
            + "\n  - ".join(problems)
            + "\nPrepare the query with the reference's steps (normalize_total, log1p, the same "
            "genes, the same scaling), or pass `check_preprocessing='warn'` to embed it anyway."
        )
        if policy == "error":
            raise ValueError(msg)
        warnings.warn(msg, PreprocessingWarning, stacklevel=3)
    return problems, stats


def _record_uns(spec, model, prep, space, block, reference, opts, policy, problems, stats) -> dict[str, Any]:
    """Provenance of the query's coordinates (``uns[key]``)."""
    uns = {
        "method": str(spec.method or ""),
        "model": type(model).__name__,
        "space": space,
        "input": {
            "source": str(spec.source or ""),
            "key": str(spec.key or ""),
            "description": prep["description"],
        },
        "n_features": int(prep["n_features"]),
        "n_missing_features": int(prep["n_missing"]),
        "fill_missing": opts["fill_missing"],
        "scale_query": bool(opts["scale_query"]),
        "preprocessing_check": {"policy": policy, "problems": "; ".join(problems), **stats},
    }
    if opts["scale_query"]:
        used = opts["max_value"] if opts["max_value"] is not None else prep.get("max_value_used")
        uns["max_value"] = float(used) if used is not None else "none"
    if block is not None:
        uns["block"] = int(block)
    if reference is not None:
        uns["reference_n_obs"] = int(reference.n_obs)
    return uns


def _input_spec(model: Any, use_rep: str | None) -> InputSpec:
    """What the model was trained on: its recorded input spec, or what can be told without one."""
    recorded = getattr(model, "input_spec_", None)
    if recorded:
        spec = InputSpec.coerce(recorded, name="model.input_spec_")
        if use_rep is not None:
            if spec.source not in ("obsm", None):
                raise ValueError(
                    f"`use_rep` applies to models trained on an obsm representation; this one was "
                    f"trained on {spec.source!r}."
                )
            spec = spec.replace(source="obsm", key=use_rep)
        return spec
    if use_rep is not None:
        return InputSpec("obsm", use_rep)
    if getattr(model, "feature_names_in_", None) is not None:
        return InputSpec("X", None, var_names=model.feature_names_in_)
    raise ValueError(
        f"This {type(model).__name__} has no record of the AnnData input it was trained on (it was "
        "fitted outside `mx.tl`, without feature names): pass `use_rep=` naming the query's "
        "obsm representation, or call `model.transform` on an array directly."
    )
