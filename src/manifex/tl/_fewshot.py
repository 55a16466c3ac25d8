"""Name cells from a handful of labelled examples: :func:`fewshot_labels`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import (
    basis_name,
    check_adata,
    check_flags,
    check_key_added,
    copy_of,
    obsm_coords,
    plain,
    resolve_basis,
)
from ..metrics._classify import class_prototypes, nearest_prototype, pooled_variance, softmax_rows
from ._docs import doc_basis, doc_copy_query, doc_label_key, doc_params
from ._transfer import labelled

__all__ = ["fewshot_labels"]


@doc_params(doc_basis=doc_basis, doc_label_key=doc_label_key, doc_copy_query=doc_copy_query)
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
    {doc_label_key}
    {doc_basis}
    key_added
        ``obs`` column for the labels (default ``"<label_key>_fewshot"``); confidence in
        ``"<key_added>_confidence"``, parameters in ``uns[key_added]``. A key that would replace
        the support labels (``label_key`` when ``support`` is ``None``) or another column that is
        not an earlier result of this key is refused.
    {doc_copy_query}

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
    check_flags(copy=copy)
    if support is not None:
        check_adata(support, min_cells=1, name="support")
    key = resolve_basis(query, [("support", support)] if support is not None else [], basis)
    inputs = {
        ("obsm", key): "the embedding this call reads",
        ("uns", basis_name(key)): "the embedding's record",
    }
    if support is None and isinstance(label_key, str):
        inputs[("obs", label_key)] = "the support labels (`label_key`)"
    key_added = check_key_added(
        query,
        key_added,
        default=f"{label_key}_fewshot",
        writes=lambda k: [("obs", k), ("obs", f"{k}_confidence"), ("uns", k)],
        inputs=inputs,
        function="fewshot_labels",
    )
    sup, sup_name = (query, "query") if support is None else (support, "support")
    xs, ys = labelled(sup, key, label_key, sup_name)
    xq = obsm_coords(query, key, "query")
    if xs.shape[1] != xq.shape[1]:
        raise ValueError(f"support {key!r} has {xs.shape[1]} dimensions, the query {xq.shape[1]}.")
    classes, protos, counts = class_prototypes(xs, ys)
    pred, _, d2 = nearest_prototype(xq, protos)
    sigma2 = pooled_variance(xs, ys, classes, protos, min_count=2)
    scale_from = "support within-class variance"
    if sigma2 is None:
        sigma2 = float(np.median(d2.min(1)) / xq.shape[1])
        scale_from = "median query-to-prototype distance"
    sigma2 = max(sigma2, 1e-12)
    if len(classes) > 1:
        conf = softmax_rows(-d2 / (2 * sigma2))[np.arange(len(pred)), pred]
    else:
        conf = np.ones(len(pred))
    uns = {
        "method": "prototype",
        "basis": basis_name(key),
        "label_key": label_key,
        "classes": [str(c) for c in classes],
        "shots": {str(c): int(n) for c, n in zip(classes, counts)},
        "confidence_scale": scale_from,
    }
    target = copy_of(query) if copy else query
    target.obs[key_added] = pd.Categorical(classes[pred], categories=list(classes))
    target.obs[f"{key_added}_confidence"] = conf.astype(np.float32)
    target.uns[key_added] = plain(uns)
    return target if copy else None
