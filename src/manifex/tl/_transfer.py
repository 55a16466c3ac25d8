"""Label transfer from a labelled reference to a query in a shared embedding: :func:`transfer_labels`.

Query cells are named by a kNN vote or by the nearest class prototype (:mod:`manifex.metrics._classify`),
with a per-cell confidence and an ``"unknown"`` call for cells far from every reference class in
the embedding (distance) or whose expression the reference does not cover
(:mod:`manifex.tl._coverage`); extra classes can be named from a few labelled examples.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._anndata import (
    basis_name,
    check_adata,
    check_flags,
    check_key_added,
    copy_of,
    get_basis,
    obs_labels,
    obsm_coords,
    plain,
    resolve_basis,
)
from .._utils import check_random_state
from ..metrics._classify import ClassDistance, class_prototypes, fill_thresholds, knn_vote, nearest_prototype
from ._coverage import expression_pair, reference_coverage
from ._docs import doc_basis, doc_copy_query, doc_label_key, doc_params

__all__ = ["transfer_labels"]

UNKNOWN_CHECKS = ("auto", "distance", "coverage", "both", None)


def check_n_neighbors(n_neighbors: Any) -> int:
    """A positive integer neighbour count."""
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be a positive integer, got {n_neighbors!r}.")
    return int(n_neighbors)


def labelled(adata: AnnData, key: str, label_key: str, name: str, *, arg: str = "label_key"):
    """Coordinates and labels (as strings) of the cells of ``adata`` that have a label."""
    lab = obs_labels(adata, label_key, name, arg=arg)
    keep = lab.notna().to_numpy()
    if not keep.any():
        raise ValueError(f"{name}.obs[{label_key!r}] has no labels (every value is missing).")
    return obsm_coords(adata, key, name)[keep], np.asarray(lab[keep].astype(str))


@doc_params(doc_basis=doc_basis, doc_label_key=doc_label_key, doc_copy_query=doc_copy_query)
def transfer_labels(
    query: AnnData,
    reference: AnnData,
    *,
    label_key: str,
    basis: str | None = None,
    method: Literal["knn", "prototype"] = "knn",
    n_neighbors: int = 15,
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
        Majority vote of the ``n_neighbors`` nearest reference cells; confidence = the winning class's
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
        ``m``-th nearest other cell of the class, ``m = min(n_neighbors, n_c − 1)``, or (prototype) their
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
    {doc_label_key}
    {doc_basis}
    method
        ``"knn"`` or ``"prototype"``.
    n_neighbors
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
        ``uns[key_added]``. The query's own ``obs[label_key]`` (e.g. its true labels) and other
        columns that are not an earlier result of this key are never replaced: such a key is
        refused.
    {doc_copy_query}

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
    unknown, random_state = _validate(
        query, reference, support, method, n_neighbors, unknown, unknown_threshold, min_coverage,
        unknown_label, coverage_layer, random_state, copy,
    )  # fmt: skip
    n_neighbors = int(n_neighbors)
    key = resolve_basis(query, [("reference", reference)], basis)
    if support is not None:
        get_basis({"support": support}, key)
    key_added = _check_key(query, key_added, key, label_key)
    data = _prepare(query, reference, support, key, label_key, support_key, unknown_label)
    distance_info = _distance_skipped(data["yr"], unknown)
    coverage, cov_info = _coverage(
        query, reference, unknown, coverage_layer, n_neighbors, min_coverage, random_state
    )
    q = float(unknown_threshold) if unknown in ("auto", "distance", "both") and not distance_info else None
    res = _classify(data, method, n_neighbors, q)
    labels, n_dist, n_cov = _unknown_calls(res, data["classes"], coverage, min_coverage, unknown_label)
    calls = res["novelty"] is not None or coverage is not None
    checks = [
        c for c, on in (("distance", res["novelty"] is not None), ("coverage", coverage is not None)) if on
    ]
    uns = {
        "method": method,
        "basis": basis_name(key),
        "label_key": label_key,
        "n_neighbors": n_neighbors,
        "unknown": str(unknown) if unknown is not None else "none",
        "unknown_checks": checks,
        "unknown_threshold": q if q is not None else "none",
        "min_coverage": float(min_coverage),
        "unknown_label": unknown_label,
        "classes": [str(c) for c in res["classes"]],
        "n_unknown": int((labels == unknown_label).sum()) if calls else 0,
        "n_unknown_distance": n_dist,
        "n_unknown_coverage": n_cov,
        "n_reference": int(data["xr"].shape[0]),
    }
    if cov_info:
        uns["coverage"] = cov_info
    if distance_info:
        uns["distance"] = {"skipped": distance_info}
    if res["thresholds"] is not None:
        uns["thresholds"] = {str(c): float(t) for c, t in zip(res["classes"], res["thresholds"])}
    if data["xs"] is not None:
        uns["support_classes"] = [str(c) for c in np.unique(data["ys"])]
    logg.info(
        f"    transferred {label_key!r} to {query.n_obs} cells by {method} in {key!r}"
        + (f" ({uns['n_unknown']} unknown)" if calls else "")
    )
    cats = list(res["classes"]) + ([unknown_label] if calls else [])
    columns = {"": pd.Categorical(labels, categories=cats), "_confidence": res["conf"].astype(np.float32)}
    columns["_novelty"] = res["novelty"]
    columns["_coverage"] = coverage
    target = copy_of(query) if copy else query
    _record(target, key_added, columns, uns)
    return target if copy else None


def _validate(
    query, reference, support, method, n_neighbors, unknown, unknown_threshold, min_coverage,
    unknown_label, coverage_layer, random_state, copy,
) -> tuple[str | None, int]:  # fmt: skip
    """Every argument checked before any work; returns the checks to run (``None`` when
    ``unknown_threshold`` is ``None``) and the seed."""
    check_adata(query, min_cells=1, name="query")
    check_adata(reference, min_cells=1, name="reference")
    check_flags(copy=copy)
    if method not in ("knn", "prototype"):
        raise ValueError(f"`method` must be 'knn' or 'prototype', got {method!r}.")
    check_n_neighbors(n_neighbors)
    if unknown_threshold is not None and (
        isinstance(unknown_threshold, bool)
        or not isinstance(unknown_threshold, int | float | np.integer | np.floating)
        or not 0 < float(unknown_threshold) <= 1
    ):
        raise ValueError(
            f"`unknown_threshold` must be a quantile in (0, 1] or None, got {unknown_threshold!r}."
        )
    if support is not None and method != "prototype":
        raise ValueError("`support` (few-shot classes) needs `method='prototype'`.")
    if unknown not in UNKNOWN_CHECKS:
        raise ValueError(
            f"`unknown` must be 'auto', 'distance', 'coverage', 'both' or None, got {unknown!r}."
        )
    if isinstance(min_coverage, bool) or not isinstance(min_coverage, int | float) or not min_coverage > 0:
        raise ValueError(f"`min_coverage` must be a positive number, got {min_coverage!r}.")
    if not isinstance(unknown_label, str) or not unknown_label:
        raise ValueError(f"`unknown_label` must be a non-empty string, got {unknown_label!r}.")
    if coverage_layer is not None and not isinstance(coverage_layer, str):
        raise TypeError(
            f"`coverage_layer` must be a layer name or None, got {type(coverage_layer).__name__}."
        )
    random_state = check_random_state(random_state)
    if support is not None:
        check_adata(support, min_cells=1, name="support")
    return (None if unknown_threshold is None else unknown), random_state


def _check_key(query: AnnData, key_added: Any, key: str, label_key: str) -> str:
    """The key the labels go to; never the embedding read, its record or the query's labels."""
    suffixes = ("confidence", "novelty", "coverage")
    return check_key_added(
        query,
        key_added,
        default=f"{label_key}_transferred",
        writes=lambda k: [("obs", k), *[("obs", f"{k}_{s}") for s in suffixes], ("uns", k)],
        inputs={
            ("obsm", key): "the embedding this call reads",
            ("uns", basis_name(key)): "the record of the embedding this call reads",
            ("obs", label_key): "the query's own label column (`label_key`)",
        },
        function="transfer_labels",
    )


def _prepare(query, reference, support, key, label_key, support_key, unknown_label) -> dict[str, Any]:
    """Coordinates of the query, and coordinates and labels of the reference (and support)."""
    xq = obsm_coords(query, key, "query")
    xr, yr = labelled(reference, key, label_key, "reference")
    if xq.shape[1] != xr.shape[1]:
        raise ValueError(f"query and reference {key!r} have {xq.shape[1]} and {xr.shape[1]} dimensions.")
    classes = np.unique(yr)
    if unknown_label in set(classes):
        raise ValueError(
            f"The reference has a class named {unknown_label!r}; choose another `unknown_label`."
        )
    xs = ys = None
    if support is not None:
        xs, ys = labelled(support, key, support_key or label_key, "support", arg="support_key")
        if xs.shape[1] != xq.shape[1]:
            raise ValueError(f"support {key!r} has {xs.shape[1]} dimensions, the query {xq.shape[1]}.")
        clash = sorted(set(ys) & (set(classes) | {unknown_label}))
        if clash:
            raise ValueError(f"Support classes {clash} are already reference classes (or the unknown label).")
    return {"xq": xq, "xr": xr, "yr": yr, "classes": classes, "xs": xs, "ys": ys}


def _distance_skipped(yr: np.ndarray, unknown: str | None) -> str:
    """Why the distance check cannot run (every class a single cell), or ``""``."""
    if unknown is None or unknown == "coverage" or (np.unique(yr, return_counts=True)[1] >= 2).any():
        return ""
    info = (
        "every reference class has a single cell, so distances within a class (the calibration "
        "of the distance check) are undefined"
    )
    if unknown != "auto":
        raise ValueError(f"The distance check (`unknown={unknown!r}`) cannot run: {info}.")
    logg.info(f"    distance check skipped: {info}")
    return info


def _classify(data: dict[str, Any], method: str, n_neighbors: int, q: float | None) -> dict[str, Any]:
    """Predicted class, confidence, and (with quantile ``q``) per-class thresholds and novelty."""
    xr, yr, classes, xq = data["xr"], data["yr"], data["classes"], data["xq"]
    if method == "knn":
        pred, conf = knn_vote(xr, np.searchsorted(classes, yr), len(classes), xq, n_neighbors)
        thresholds = novelty = None
        if q is not None:
            dist = ClassDistance(xr, yr, classes, n_neighbors=n_neighbors)
            thresholds = fill_thresholds(dist.thresholds(q))
            novelty = (dist.distance(xq) / thresholds[None, :]).min(1)
        all_classes = classes
    else:
        all_classes, pred, conf, thresholds, novelty = _by_prototype(
            xr, yr, classes, xq, data["xs"], data["ys"], q
        )
    return {"classes": all_classes, "pred": pred, "conf": conf, "thresholds": thresholds, "novelty": novelty}


def _unknown_calls(res, ref_classes, coverage, min_coverage, unknown_label) -> tuple[np.ndarray, int, int]:
    """Labels with the unknown calls of both checks, and how many each check made."""
    labels = np.asarray(res["classes"], dtype=object)[res["pred"]]
    n_dist = n_cov = 0
    if res["novelty"] is not None:
        far = res["novelty"] > 1.0
        n_dist = int(far.sum())
        labels = np.where(far, unknown_label, labels)
    if coverage is not None:
        # only cells given a *reference* class must be covered by the reference
        uncovered = (coverage < min_coverage) & (res["pred"] < len(ref_classes))
        n_cov = int(uncovered.sum())
        labels = np.where(uncovered, unknown_label, labels)
    return labels, n_dist, n_cov


def _record(target: AnnData, key_added: str, columns: dict[str, Any], uns: dict[str, Any]) -> None:
    """Write the ``obs`` columns (``None``: removed, an earlier call's) and ``uns[key_added]``."""
    for suffix, values in columns.items():
        col = f"{key_added}{suffix}"
        if values is not None:
            target.obs[col] = values if suffix == "" else np.asarray(values).astype(np.float32)
        elif col in target.obs:  # from an earlier call with other checks: not this result's
            del target.obs[col]
    target.uns[key_added] = plain(uns)


def _coverage(
    query: AnnData,
    reference: AnnData,
    unknown: str | None,
    coverage_layer: str | None,
    n_neighbors: int,
    min_coverage: float,
    random_state: int,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The coverage check when ``unknown`` asks for it (``"auto"``: when it can run)."""
    info: dict[str, Any] = {}
    if unknown not in ("auto", "coverage", "both"):
        return None, info
    pair = expression_pair(query, reference, coverage_layer)
    if isinstance(pair, str):
        if unknown != "auto":
            raise ValueError(f"The coverage check (`unknown={unknown!r}`) cannot run: {pair}.")
        info["skipped"] = pair
        logg.info(f"    coverage check skipped: {pair}")
        return None, info
    xq_g, xr_g, gene_info = pair
    coverage, used = reference_coverage(xq_g, xr_g, n_neighbors=n_neighbors, random_state=random_state)
    info.update(gene_info, **used, median=float(np.median(coverage)))
    if np.median(coverage) < min_coverage:
        warnings.warn(
            f"Most query cells have few reference neighbours in expression (median coverage "
            f"{np.median(coverage):.2f} < min_coverage={min_coverage}): the query and the "
            "reference do not mix, e.g. a batch effect or different preprocessing, or the "
            "query is mostly of types the reference lacks. Cells are called unknown by "
            "coverage; integrate the data first or pass unknown='distance'.",
            UserWarning,
            stacklevel=3,
        )
    return coverage, info


def _by_prototype(xr, yr, classes, xq, xs, ys, q):
    """Nearest prototype among the reference classes and the support classes, with thresholds."""
    _, protos, _ = class_prototypes(xr, yr)
    resid = xr - protos[np.searchsorted(classes, yr)]
    r = np.linalg.norm(resid, axis=1)
    sigma2 = max(float((resid**2).sum(1).mean() / xr.shape[1]), 1e-12)
    all_classes = classes
    thresholds = None
    if q is not None:
        thresholds = fill_thresholds(
            np.array([np.quantile(r[yr == c], q) if (yr == c).sum() >= 2 else np.nan for c in classes])
        )
    if xs is not None:
        s_classes, s_protos, shots = class_prototypes(xs, ys)
        protos = np.vstack([protos, s_protos])
        all_classes = np.concatenate([classes, s_classes])
        if thresholds is not None:
            # a prototype from k examples is off the class centre by ~σ/√k, so distances to it
            # spread by √(1 + 1/k) more than distances to a reference class mean
            s_thr = np.median(thresholds) * np.sqrt(1.0 + 1.0 / shots.astype(np.float64))
            thresholds = np.concatenate([thresholds, s_thr])
    pred, conf, d2 = nearest_prototype(xq, protos, sigma2)
    novelty = (np.sqrt(d2) / thresholds[None, :]).min(1) if thresholds is not None else None
    return all_classes, pred, conf, thresholds, novelty
