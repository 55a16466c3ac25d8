"""Placement of new cells: every route that maps a query into a map fitted on a reference.

    python -m benchmarks.bench_placement [--sets pbmc3k paul15 pbmc4k human_kidney mouse_bladder
        worm_neuron cite_cbmc mnist usps] [--seeds 0 1 2]
        [--routes dlme dlme_embed umap ingest opentsne torchdr_umap cne]
        [--dlme-kwargs '{"n_steps": 2000}'] [--placement NAME] [--device cpu]
        [--out benchmarks/results/placement.md] [--smoke]

The protocol of DESIGN.md §5 ("Placement of new cells"), per set and seed ``s``:

1. split the labelled cells 50/50, stratified by label (:func:`stratified_halves`, seed ``s``);
2. preprocess the reference half the scanpy way (:func:`prepare_reference`: ``normalize_total``,
   ``log1p``, 2,000 HVGs, ``scale`` clipped at 10, 50 PCs); images (MNIST test split, USPS): the
   flattened pixels in [0, 1] and 50 PCs, no gene preprocessing;
3. project the query half on the reference's PCs with the reference's gene means and scaling
   (:func:`prepare_query`, :func:`project_query`): normalize, log1p, the reference's genes,
   ``(x - mean) / std`` of the reference clipped at ±10, minus the reference's PCA centre, times
   the loadings;
4. fit each route's method on the reference PCs and place the query PCs with the route:

   ``dlme``          manifex ``mx.tl.dlme(..., return_model=True)``, then ``model.transform``
   ``dlme_embed``    the same fit, the query placed by ``mx.tl.embed`` from its log-normalised
                     genes (manifex's own projection and scaling; pixels for images)
   ``umap``          umap-learn ``UMAP(n_neighbors=15)`` ``.fit`` / ``.transform``
   ``ingest``        scanpy ``pp.neighbors(n_neighbors=15)`` + ``tl.umap``, ``tl.ingest`` (the
                     query's ``X_pca`` is the projection of step 3, as every route gets)
   ``opentsne``      openTSNE ``TSNE().fit`` / ``TSNEEmbedding.transform``
   ``torchdr_umap``  TorchDR ``UMAP(backend=None)`` ``.fit`` / ``.transform(X, X_train=...)``
   ``cne``           contrastive-ne ``CNE(parametric=True).fit_transform(X, init=X)`` /
                     ``.transform`` on the exact 15-NN graph (:func:`knn_graph`; CNE's own annoy
                     graph is not seeded, so a seed would not repeat). Optional: skipped with the
                     reason printed when ``cne`` does not import (install it with
                     ``pip install --no-deps contrastive-ne annoy pykeops``)

5. score (a) ``place_acc``: a 15-NN classifier fitted on the reference cells' 2-d positions,
   applied to the query cells' 2-d positions (:func:`placement_accuracy`); (b) ``place_trust``:
   the query's trustworthiness (k = 15) against its PCs (:func:`manifex.metrics.trustworthiness`,
   every query row); (c) the reference map's own six harness scores (kNN / linear accuracy,
   k-means ACC / NMI / ARI, trustworthiness against the reference PCs) and their mean
   ``mean6``; (d) wall seconds of the fit (``fit_s``) and of the placement (``place_s``).

Every method runs with its own defaults, seeded with ``s``; ``--smoke`` swaps in tiny budgets, a
600-cell stratified subsample of pbmc3k (sklearn's digits when the shared data is absent) and
one seed, and writes ``placement_smoke.md`` (a check that the routes run, not a result). The
table (mean ± sd over seeds; per set the route with the best ``place_acc`` in bold) and a CSV of
every row are rewritten after every seed of every set, so an interrupted run leaves its results.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData

import manifex as mx

from . import harness as H
from .bench_panel import _tsne_jobs

#: the named sets: loader name -> image split (None: all images; only for image sets)
SCRNA_SETS = ["pbmc3k", "paul15", "pbmc4k", "human_kidney", "mouse_bladder", "worm_neuron", "cite_cbmc"]
IMAGE_SETS = {"mnist": "test", "usps": None, "digits": None}  # digits: sklearn's 8x8 digits
DEFAULT_SETS = [*SCRNA_SETS, "mnist", "usps"]
N_HVG, N_PCS, MAX_VALUE, K = 2000, 50, 10.0, 15
TRAIN_SCORES = ["knn_acc", "linear_acc", "acc", "nmi", "ari", "trust"]

#: tiny budgets of --smoke, per route (the full run uses every method's defaults)
SMOKE_BUDGETS: dict[str, dict[str, Any]] = {
    "dlme": {"n_steps": 100},
    "umap": {"n_epochs": 50},
    "ingest": {"maxiter": 50},
    "opentsne": {"n_iter": 50, "early_exaggeration_iter": 25, "transform_n_iter": 25},
    "torchdr_umap": {"max_iter": 50},
    "cne": {"n_epochs": 5},
}


# ---- data: split, reference preprocessing, query projection ----------------------------------
def stratified_halves(labels: Any, seed: int) -> np.ndarray:
    """Reference mask of a stratified 50/50 split: per class, a random half (rounded down, the
    odd cell going to the query; a single-cell class goes to the reference) of its cells."""
    y = np.asarray(labels).astype(str)
    if y.ndim != 1 or y.size < 2:
        raise ValueError(f"labels must be a 1-d array of at least 2 entries, got shape {y.shape}")
    rng = np.random.default_rng(seed)
    ref = np.zeros(y.size, bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        ref[rng.choice(idx, 1 if idx.size == 1 else idx.size // 2, replace=False)] = True
    return ref


def prepare_reference(adata: AnnData, *, images: bool, seed: int) -> AnnData:
    """The reference half, preprocessed: scRNA-seq counts ``normalize_total`` (1e4), ``log1p``,
    2,000 HVGs (subset), ``scale`` (clipped at 10) and 50 PCs; images 50 PCs of the pixels.

    Returns a copy with the PCs in ``obsm["X_pca"]``, the loadings in ``varm["PCs"]``, the
    scaling's gene means and sds in ``var["mean"]`` / ``var["std"]`` (scRNA-seq) and the centre
    the PCA subtracted (the column means of ``X``) in ``uns["pca_mean"]``.
    """
    a = adata.copy()
    if not images:
        sc.pp.filter_genes(a, min_cells=1)  # genes the reference never expresses have no variance
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
        sc.pp.highly_variable_genes(a, n_top_genes=min(N_HVG, a.n_vars), subset=True)
        sc.pp.scale(a, max_value=MAX_VALUE)
    x = np.asarray(a.X.toarray() if hasattr(a.X, "toarray") else a.X)
    sc.pp.pca(a, n_comps=min(N_PCS, min(a.shape) - 1), random_state=seed)
    a.uns["pca_mean"] = x.mean(0, dtype=np.float64)
    return a


def prepare_query(query: AnnData, ref: AnnData, *, images: bool) -> tuple[AnnData, AnnData]:
    """(the query as the routes' input, the query as ``mx.tl.embed`` reads it).

    scRNA-seq: ``normalize_total`` and ``log1p`` of the query's own counts, restricted to the
    reference's genes (the second value), then standardised with the reference's gene means
    and sds and clipped at ±10 (the first). Images: the pixels, both times. The first value
    carries the projection (:func:`project_query`) in ``obsm["X_pca"]``.
    """
    q = query.copy()
    if not images:
        sc.pp.normalize_total(q, target_sum=1e4)
        sc.pp.log1p(q)
    q = q[:, ref.var_names].copy()
    x = np.asarray(q.X.toarray() if hasattr(q.X, "toarray") else q.X, dtype=np.float64)
    if not images:
        std = ref.var["std"].to_numpy(np.float64).copy()
        std[std == 0] = 1.0
        x = np.clip((x - ref.var["mean"].to_numpy(np.float64)) / std, -MAX_VALUE, MAX_VALUE)
    scaled = AnnData(x.astype(np.float32), obs=q.obs.copy(), var=pd.DataFrame(index=ref.var_names.copy()))
    scaled.obsm["X_pca"] = project_query(scaled.X, ref)
    return scaled, q


def project_query(x: Any, ref: AnnData) -> np.ndarray:
    """``x`` (query rows prepared like the reference's ``X``) on the reference's PCs:
    ``(x - reference PCA centre) @ varm["PCs"]``, as float32."""
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != ref.n_vars:
        raise ValueError(f"x must be (n, {ref.n_vars}) like the reference's X, got shape {x.shape}")
    pcs = np.asarray(ref.varm["PCs"], dtype=np.float64)
    return ((x - ref.uns["pca_mean"]) @ pcs).astype(np.float32)


@dataclass
class Split:
    """One seed's split of one set: the reference (preprocessed) and the query (projected)."""

    name: str
    images: bool
    ref: AnnData
    query: AnnData  # scaled like the reference, its projection in obsm["X_pca"]
    query_genes: AnnData  # what mx.tl.embed reads (log-normalised genes, or pixels)
    xr: np.ndarray = field(init=False)
    xq: np.ndarray = field(init=False)
    yr: np.ndarray = field(init=False)
    yq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.xr = np.ascontiguousarray(self.ref.obsm["X_pca"], dtype=np.float32)
        self.xq = np.ascontiguousarray(self.query.obsm["X_pca"], dtype=np.float32)
        self.yr = self.ref.obs["label"].astype(str).to_numpy()
        self.yq = self.query.obs["label"].astype(str).to_numpy()


def split_set(adata: AnnData, name: str, seed: int, *, images: bool) -> Split:
    """The protocol's steps 1-3 on a labelled AnnData (counts, or pixels in ``X``)."""
    mask = stratified_halves(adata.obs["label"], seed)
    ref = prepare_reference(adata[mask], images=images, seed=seed)
    query, genes = prepare_query(adata[~mask], ref, images=images)
    return Split(name, images, ref, query, genes)


def _digits() -> AnnData:
    from sklearn.datasets import load_digits

    d = load_digits()
    return mx.datasets.image_anndata((d.images / 16.0).astype(np.float32), d.target)


def load_set(name: str, max_cells: int | None = None, seed: int = 0) -> tuple[AnnData, bool]:
    """(labelled AnnData, is an image set): counts for scRNA-seq sets, pixels for images;
    ``max_cells``: a stratified random subsample of that many cells (at most)."""
    if name == "digits":
        a, images = _digits(), True
    elif name in IMAGE_SETS:
        a, images = mx.datasets.load_images(name, H.data_dir(), split=IMAGE_SETS[name]), True
    elif name in SCRNA_SETS:
        a, images = mx.datasets.load_scrna(name, H.data_dir()), False
    else:
        raise ValueError(f"set must be one of {[*SCRNA_SETS, *IMAGE_SETS]}, got {name!r}")
    if max_cells is not None and max_cells < a.n_obs:
        from sklearn.model_selection import train_test_split

        y = a.obs["label"].astype(str).to_numpy()
        keep, _ = train_test_split(np.arange(a.n_obs), train_size=max_cells, stratify=y, random_state=seed)
        a = a[np.sort(keep)].copy()
    return a, images


# ---- scores ----------------------------------------------------------------------------------
def placement_accuracy(ref_emb: Any, ref_labels: Any, query_emb: Any, query_labels: Any, k: int = K) -> float:
    """Accuracy of a ``k``-NN classifier (uniform vote, Euclidean) fitted on the reference's 2-d
    positions and labels, applied to the query's 2-d positions."""
    from sklearn.neighbors import KNeighborsClassifier

    ref_emb, query_emb = np.asarray(ref_emb), np.asarray(query_emb)
    yr, yq = np.asarray(ref_labels).astype(str), np.asarray(query_labels).astype(str)
    if ref_emb.shape[0] != yr.size or query_emb.shape[0] != yq.size:
        raise ValueError("each map needs one label per row")
    clf = KNeighborsClassifier(n_neighbors=min(k, ref_emb.shape[0])).fit(ref_emb, yr)
    return float((clf.predict(query_emb) == yq).mean())


def placement_scores(split: Split, train_emb: np.ndarray, query_emb: np.ndarray) -> dict[str, float]:
    """(a) ``place_acc``, (b) ``place_trust``, (c) the reference map's six scores and ``mean6``."""
    for what, emb, n in (
        ("training map", train_emb, split.xr.shape[0]),
        ("query", query_emb, split.xq.shape[0]),
    ):
        if emb.shape != (n, 2) or not np.isfinite(emb).all():
            raise RuntimeError(f"the {what} has shape {emb.shape} (finite: {np.isfinite(emb).all()})")
    out = {
        "place_acc": placement_accuracy(train_emb, split.yr, query_emb, split.yq),
        "place_trust": float(mx.metrics.trustworthiness(split.xq, query_emb, n_neighbors=K, n_samples=None)),
    }
    s = H.score(train_emb, split.yr, X=split.xr)
    out.update({k: float(s[k]) for k in TRAIN_SCORES})
    out["mean6"] = float(np.mean([out[k] for k in TRAIN_SCORES]))
    return out


# ---- routes ----------------------------------------------------------------------------------
@dataclass
class Placed:
    train_emb: np.ndarray
    query_emb: np.ndarray
    fit_s: float
    place_s: float


@dataclass
class Context:
    """What a route needs besides the split: seed, device, budgets, DLME settings, a fit cache."""

    seed: int
    device: str = "cpu"
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    dlme_kwargs: dict[str, Any] = field(default_factory=dict)
    placement: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def budget(self, route: str) -> dict[str, Any]:
        return dict(self.budgets.get(route, {}))


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def transform_kwargs(model: Any, placement: str | None) -> dict[str, Any]:
    """``{"placement": placement}`` for ``model.transform``, or ``{}`` without one; a transform
    without such a parameter refuses a placement with ``TypeError``."""
    if placement is None:
        return {}
    if "placement" not in inspect.signature(model.transform).parameters:
        raise TypeError(f"{type(model).__name__}.transform has no `placement` option")
    return {"placement": placement}


def _dlme_fit(split: Split, ctx: Context):
    """The reference's DLME fit, shared by the two DLME routes of one split."""
    if "dlme" not in ctx.cache:
        ref = split.ref.copy()
        kw = {**ctx.budget("dlme"), **ctx.dlme_kwargs}
        model, sec = H.timed(
            lambda: mx.tl.dlme(
                ref,
                use_rep="X_pca",
                random_state=ctx.seed,
                device=ctx.device,
                progress=False,
                return_model=True,
                **kw,
            )
        )
        ctx.cache["dlme"] = (model, ref, _np(ref.obsm["X_dlme"]), sec)
    return ctx.cache["dlme"]


def route_dlme(split: Split, ctx: Context) -> Placed:
    model, _, train, fit_s = _dlme_fit(split, ctx)
    kw = transform_kwargs(model, ctx.placement)
    q, place_s = H.timed(lambda: model.transform(split.xq, **kw))
    return Placed(train, _np(q), fit_s, place_s)


def route_dlme_embed(split: Split, ctx: Context) -> Placed:
    model, ref, train, fit_s = _dlme_fit(split, ctx)
    kw = {} if split.images else {"scale_query": True, "max_value": MAX_VALUE}
    out, place_s = H.timed(lambda: mx.tl.embed(split.query_genes, model, reference=ref, copy=True, **kw))
    return Placed(train, _np(out.obsm["X_dlme"]), fit_s, place_s)


def route_umap(split: Split, ctx: Context) -> Placed:
    import umap

    est = umap.UMAP(n_neighbors=K, random_state=ctx.seed, **ctx.budget("umap"))
    _, fit_s = H.timed(lambda: est.fit(split.xr))
    q, place_s = H.timed(lambda: est.transform(split.xq))
    return Placed(_np(est.embedding_), _np(q), fit_s, place_s)


def route_ingest(split: Split, ctx: Context) -> Placed:
    ref, q = split.ref.copy(), split.query.copy()
    kw = ctx.budget("ingest")

    def fit():
        sc.pp.neighbors(ref, n_neighbors=K, use_rep="X_pca", random_state=ctx.seed)
        sc.tl.umap(ref, random_state=ctx.seed, **kw)

    _, fit_s = H.timed(fit)
    _, place_s = H.timed(lambda: sc.tl.ingest(q, ref, embedding_method="umap"))
    return Placed(_np(ref.obsm["X_umap"]), _np(q.obsm["X_umap"]), fit_s, place_s)


def route_opentsne(split: Split, ctx: Context) -> Placed:
    import openTSNE

    kw = ctx.budget("opentsne")
    tkw = {"n_iter": kw.pop("transform_n_iter")} if "transform_n_iter" in kw else {}
    est = openTSNE.TSNE(random_state=ctx.seed, n_jobs=_tsne_jobs() or 1, **kw)
    emb, fit_s = H.timed(lambda: est.fit(split.xr.astype(np.float64)))
    q, place_s = H.timed(lambda: emb.transform(split.xq.astype(np.float64), **tkw))
    return Placed(_np(emb), _np(q), fit_s, place_s)


def route_torchdr_umap(split: Split, ctx: Context) -> Placed:
    import torchdr

    kw = {"backend": None} if ctx.device == "cpu" else {}
    kw.update(ctx.budget("torchdr_umap"))
    with H._global_rng_kept():
        est = torchdr.UMAP(n_components=2, device=ctx.device, random_state=ctx.seed, verbose=False, **kw)
        train, fit_s = H.timed(lambda: est.fit_transform(split.xr))
        q, place_s = H.timed(lambda: est.transform(split.xq, X_train=split.xr))
    return Placed(_np(train), _np(q), fit_s, place_s)


def knn_graph(x: np.ndarray, k: int = K):
    """CNE's kNN graph, exact: each row's ``k`` nearest other rows, 1 both ways (what CNE builds
    from annoy's approximate search, which it does not seed, or from pykeops' exact one on a GPU)."""
    import scipy.sparse as sp

    ind = H.knn_indices(x, k)
    n = x.shape[0]
    adj = sp.coo_matrix((np.ones(ind.size), (np.repeat(np.arange(n), k), ind.ravel())), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    return sp.csr_matrix(adj)


def route_cne(split: Split, ctx: Context) -> Placed:
    import cne

    kw = {"print_freq_epoch": None, **ctx.budget("cne")}
    if ctx.device != "cpu":
        kw["device"] = ctx.device
    with H._global_rng_kept():
        est = cne.CNE(parametric=True, seed=ctx.seed, **kw)
        train, fit_s = H.timed(lambda: est.fit_transform(split.xr, init=split.xr, graph=knn_graph(split.xr)))
        q, place_s = H.timed(lambda: est.transform(split.xq))
    return Placed(_np(train), _np(q), fit_s, place_s)


#: CLI name -> (table name, route, module it needs)
ROUTES: dict[str, tuple[str, Callable[[Split, Context], Placed], str | None]] = {
    "dlme": ("DLME model.transform (manifex)", route_dlme, None),
    "dlme_embed": ("DLME tl.embed (manifex)", route_dlme_embed, None),
    "umap": ("UMAP.transform (umap-learn)", route_umap, "umap"),
    "ingest": ("tl.ingest onto UMAP (scanpy)", route_ingest, None),
    "opentsne": ("TSNEEmbedding.transform (openTSNE)", route_opentsne, "openTSNE"),
    "torchdr_umap": ("UMAP.transform (TorchDR)", route_torchdr_umap, "torchdr"),
    "cne": ("CNE parametric transform (contrastive-ne)", route_cne, "cne"),
}


def unavailable(route: str) -> str | None:
    """Why ``route`` cannot run here (its module does not import), or ``None``."""
    mod = ROUTES[route][2]
    if mod is None:
        return None
    try:
        __import__(mod)
    except Exception as e:  # a broken install (e.g. a missing dependency) counts too
        hint = " (pip install --no-deps contrastive-ne annoy pykeops)" if route == "cne" else ""
        return f"{mod} does not import: {type(e).__name__}: {e}{hint}"
    return None


#: routes whose first call compiles numba code (warmed up before any timing)
NUMBA_ROUTES = ("umap", "ingest")
#: sets whose reference half has more than 4,096 cells
LARGE_SETS = {"mnist", "usps", "cite_cbmc"}


def warm_up(routes: Sequence[str], *, large: bool = False) -> None:
    """Run the numba routes among ``routes`` once on a tiny random split, untimed, so that no
    row's seconds include numba's compilation; ``large``: also on a reference above 4,096 cells
    (where umap-learn and scanpy switch to pynndescent's approximate search)."""
    todo = [r for r in routes if r in NUMBA_ROUTES]
    rng = np.random.default_rng(0)
    ctx = Context(0, budgets={"umap": {"n_epochs": 5}, "ingest": {"maxiter": 5}})
    for n in (120, 8400) if large else (120,):
        if not todo:
            break
        toy = mx.datasets.image_anndata(rng.random((n, 5, 4), dtype=np.float32), np.arange(n) % 3)
        split = split_set(toy, "warm-up", 0, images=True)
        for r in todo:
            ROUTES[r][1](split, ctx)


def placement_row(split: Split, route: str, ctx: Context) -> dict[str, Any]:
    """Place ``split``'s query with one route and score it: one row of the table."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {sorted(ROUTES)}, got {route!r}")
    name, fn, _ = ROUTES[route]
    p = fn(split, ctx)
    return {
        "dataset": split.name,
        "route": name,
        "seed": ctx.seed,
        **placement_scores(split, p.train_emb, p.query_emb),
        "fit_s": float(p.fit_s),
        "place_s": float(p.place_s),
    }


# ---- report ----------------------------------------------------------------------------------
COLUMNS = ["place_acc", "place_trust", *TRAIN_SCORES, "mean6", "fit_s", "place_s"]


def table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Mean ± sd over seeds per (set, route); per set the best ``place_acc`` route in bold (its
    name and value) and the best ``place_trust`` value in bold."""
    df = pd.DataFrame(rows)
    out = H.summarize(df[["dataset", "route", "seed", *COLUMNS]].to_dict("records"), ("dataset", "route"))
    means = df.groupby(["dataset", "route"], sort=False)[["place_acc", "place_trust"]].mean().reset_index()
    best = {
        col: [
            (out["dataset"] == ds) & out["route"].isin(m.loc[m[col] == m[col].max(), "route"])
            for ds, m in means.groupby("dataset", sort=False)
        ]
        for col in ("place_acc", "place_trust")
    }
    for col, cols in (("place_acc", ["route", "place_acc"]), ("place_trust", ["place_trust"])):
        for sel in best[col]:
            for c in cols:
                out.loc[sel, c] = [f"**{v}**" for v in out.loc[sel, c]]
    return out


def _notes(
    seeds: Sequence[int],
    device: str,
    sizes: dict[str, str],
    dlme_kwargs: dict[str, Any],
    budgets: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    smoke: bool,
) -> list[str]:
    t = H.thread_counts()
    lines = [
        f"- seeds {list(seeds)}; device {device} (DLME, TorchDR, CNE); threads: torch {t['torch']}, numba "
        f"{t['numba']}, openTSNE n_jobs {_tsne_jobs() or 1} (OMP_NUM_THREADS={t['OMP_NUM_THREADS']}, "
        f"NUMBA_NUM_THREADS={t['NUMBA_NUM_THREADS']}, MKL_NUM_THREADS={t['MKL_NUM_THREADS']})",
        "- sets (reference + query cells, PCs, classes): " + "; ".join(f"{k} {v}" for k, v in sizes.items()),
        "- DLME: `mx.tl.dlme(ref, use_rep='X_pca', random_state=seed, return_model=True"
        + "".join(f", {k}={v!r}" for k, v in {**budgets.get("dlme", {}), **dlme_kwargs}.items())
        + ")`; the other methods with their defaults"
        + (
            " except the smoke budgets " + json.dumps({k: v for k, v in budgets.items() if k != "dlme"})
            if budgets
            else ""
        )
        + f"; TorchDR {H.torchdr_version()} with backend=None on the CPU; CNE on the exact 15-NN graph of the reference PCs (its annoy graph is not seeded)",
    ]
    if skipped:
        lines.append("- skipped routes: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    lines += [
        "",
        "Split 50/50 stratified by label (seed s); reference: normalize_total, log1p, 2,000 HVGs, scale "
        "(max 10), 50 PCs (images: 50 PCs of the pixels); query: projected on the reference's PCs with "
        "the reference's gene means and scaling. `place_acc`: accuracy of a 15-NN classifier fitted on the "
        "reference's 2-d map and applied to the placed query; `place_trust`: the query's trustworthiness "
        "(k=15) against its PCs. `knn_acc` … `trust`, `mean6`: the harness's six scores of the reference "
        "map itself (trust against the reference PCs). `fit_s` / `place_s`: wall seconds of the fit on the "
        "reference and of the placement (ingest: neighbors + UMAP / ingest; `dlme_embed` shares the DLME "
        "fit and its placement includes manifex's own gene projection; umap-learn and ingest ran once on "
        "a tiny random split first, so no time includes numba's compilation). Bold: per set, the route with the "
        "best mean `place_acc` (and the best `place_trust`).",
        "",
    ]
    if smoke:
        lines = ["**Smoke check of the code path (tiny budgets, one seed): not a result.**", "", *lines]
    return lines


def run(
    sets: Sequence[str],
    seeds: Sequence[int],
    routes: Sequence[str],
    *,
    out: str,
    dlme_kwargs: dict[str, Any] | None = None,
    placement: str | None = None,
    device: str = "cpu",
    budgets: dict[str, dict[str, Any]] | None = None,
    max_cells: int | None = None,
    machine_note: str = "",
    smoke: bool = False,
) -> list[dict[str, Any]]:
    """Every set × seed × route; the report at ``out`` (+ .csv) is rewritten after every seed."""
    budgets = dict(budgets or {})
    skipped = {r: why for r in routes if (why := unavailable(r))}
    for r, why in skipped.items():
        print(f"skipping route {r}: {why}", flush=True)
    routes = [r for r in routes if r not in skipped]
    # references above 4,096 cells take another (pynndescent) path in umap-learn and scanpy
    warm_up(routes, large=any(s in LARGE_SETS for s in sets) and (max_cells is None or max_cells > 8192))
    rows: list[dict[str, Any]] = []
    sizes: dict[str, str] = {}
    for name in sets:
        adata, images = load_set(name, max_cells)
        for seed in seeds:
            split = split_set(adata, name, seed, images=images)
            sizes[name] = (
                f"{split.xr.shape[0]} + {split.xq.shape[0]}, {split.xr.shape[1]}, {adata.obs['label'].nunique()}"
            )
            print(f"== {name} seed {seed}: {sizes[name]}", flush=True)
            ctx = Context(seed, device, budgets, dict(dlme_kwargs or {}), placement)
            for r in routes:
                rows.append(placement_row(split, r, ctx))
                print(
                    {c: round(v, 4) if isinstance(v, float) else v for c, v in rows[-1].items()}, flush=True
                )
            H.RESULTS.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(out.replace(".md", ".csv"), index=False)
            tab = table(rows)
            H.write_report(
                out,
                "Placement of new cells: DLME transform / embed, umap-learn, ingest, openTSNE, TorchDR, CNE"
                + (" (SMOKE CHECK)" if smoke else ""),
                [
                    "",
                    *_notes(seeds, device, sizes, dlme_kwargs or {}, budgets, skipped, smoke),
                    tab.to_markdown(index=False, disable_numparse=True),
                    "",
                ],
                machine_note,
            )
    print(tab.to_markdown(index=False, disable_numparse=True))
    return rows


def _dict_arg(p: argparse.ArgumentParser, text: str, flag: str) -> dict[str, Any]:
    try:
        val = json.loads(text)
    except json.JSONDecodeError:
        try:
            val = ast.literal_eval(text)
        except (ValueError, SyntaxError) as e:
            p.error(f"{flag} must be a JSON object (or Python dict literal): {e}")
    if not isinstance(val, dict):
        p.error(f"{flag} must be a dict, got {type(val).__name__}")
    return val


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=None, choices=[*SCRNA_SETS, *IMAGE_SETS])
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    p.add_argument("--dlme-kwargs", default="{}", help="extra mx.tl.dlme keyword arguments (JSON object)")
    p.add_argument(
        "--placement",
        default=None,
        help="manifex placement option passed to DLME's model.transform (refused while transform has none)",
    )
    p.add_argument("--device", default="cpu", help="torch device of DLME, TorchDR and CNE (default cpu)")
    p.add_argument("--max-cells", type=int, default=None, help="stratified subsample of each set first")
    p.add_argument("--smoke", action="store_true", help="tiny: 600 cells of pbmc3k (or digits), 1 seed")
    p.add_argument("--out", default=None, help="report path (default results/placement.md, smoke: _smoke)")
    p.add_argument("--machine-note", default="", help="what else ran on the machine (added to the report)")
    args = p.parse_args(argv)
    dlme_kwargs = _dict_arg(p, args.dlme_kwargs, "--dlme-kwargs")
    if args.placement is not None:
        try:
            transform_kwargs(mx.models.DLME(), args.placement)
        except TypeError as e:
            p.error(f"--placement: {e} in this version")
    budgets: dict[str, dict[str, Any]] = {}
    sets, seeds, max_cells = args.sets, args.seeds, args.max_cells
    if args.smoke:
        budgets = SMOKE_BUDGETS
        sets = sets or ["pbmc3k" if "pbmc3k" in mx.datasets.available(H.data_dir()) else "digits"]
        seeds, max_cells = seeds or [0], max_cells or 600
    out = args.out or str(H.RESULTS / ("placement_smoke.md" if args.smoke else "placement.md"))
    sc.settings.verbosity = 0
    # expected and harmless here: a seeded umap-learn runs on one thread; scale densifies
    warnings.filterwarnings("ignore", message="n_jobs value .* overridden")
    warnings.filterwarnings("ignore", message="zero-centering a sparse array")
    run(
        sets or DEFAULT_SETS,
        seeds or [0, 1, 2],
        args.routes,
        out=out,
        dlme_kwargs=dlme_kwargs,
        placement=args.placement,
        device=args.device,
        budgets=budgets,
        max_cells=max_cells,
        machine_note=args.machine_note,
        smoke=args.smoke,
    )


if __name__ == "__main__":
    main()
