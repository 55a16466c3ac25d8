"""DLME beside its peers on one panel: scanpy's UMAP / t-SNE / PCA, TorchDR's UMAP / InfoTSNE and
openTSNE.

    python -m benchmarks.bench_panel [--datasets pbmc3k paul15 pbmc4k mnist usps] [--seeds 0 1 2]
        [--methods dlme scanpy_umap torchdr_umap torchdr_infotsne scanpy_tsne opentsne pca]
        [--dlme-kwargs "{'n_steps': 2000}"] [--device cpu] [--out benchmarks/results/panel.md]

Every method maps the same 50 PCs of a dataset: for scRNA-seq ``X_pca`` after the standard
preprocessing (:func:`manifex.datasets.preprocess_scrna`: normalize_total, log1p, 2000 HVGs,
scale, 50 PCs); for images (MNIST test split, all of USPS) 50 PCs of the flattened pixels
scaled to [0, 1]. Each map is scored by the harness (:func:`benchmarks.harness.score`): kNN
accuracy, linear accuracy, k-means ACC / NMI / ARI and trustworthiness against the PCs;
``mean6`` is their mean. Beside them, two global scores that are not in ``mean6`` (Kobak &
Berens 2019): ``cpd``, the Spearman correlation of the distances between 1,000 sampled cells in
the map and in the PCs, and ``knc``, the share of each class's 3 nearest classes (class means in
the PCs) that stay its nearest classes in the map (NaN with 3 classes or fewer). ``seconds`` is
the wall time of the method's call alone (no loading, copying or scoring), in one process, so the
first scanpy UMAP includes numba's compilation.
Threads are whatever the environment sets (``OMP_NUM_THREADS``, ``NUMBA_NUM_THREADS``); the
report states them. The table (mean ± sd over seeds) and a CSV of every row are rewritten after
every seed of every dataset, so an interrupted run leaves its results.
"""

from __future__ import annotations

import argparse
import ast
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scanpy as sc

import manifex as mx

from . import harness as H

#: image datasets and the split the panel uses (None: all images)
IMAGES = {"mnist": "test", "usps": None}
SCORES = ["knn_acc", "linear_acc", "acc", "nmi", "ari", "trust"]
#: global layout scores reported beside the six (not part of mean6)
GLOBAL_SCORES = ["cpd", "knc"]
DEFAULT_DATASETS = ["pbmc3k", "paul15", "pbmc4k", "mnist", "usps"]


def _dlme(adata, pcs, seed: int, device: str, **kwargs):
    a = adata.copy()
    kwargs = {"use_rep": "X_pca", "device": device, **kwargs}
    _, sec = H.timed(lambda: mx.tl.dlme(a, random_state=seed, progress=False, **kwargs))
    return a.obsm["X_dlme"], sec


def _tsne_jobs() -> int | None:
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


#: CLI name -> (table name, fn(adata, pcs, seed, device, **kwargs) -> (embedding, seconds))
METHODS: dict[str, tuple[str, Callable[..., tuple[np.ndarray, float]]]] = {
    "dlme": ("DLME (manifex)", _dlme),
    "scanpy_umap": (
        "UMAP (scanpy)",
        lambda adata, pcs, seed, device, **kw: H.umap_baseline(adata, random_state=seed, **kw),
    ),
    "torchdr_umap": (
        "UMAP (TorchDR)",
        lambda adata, pcs, seed, device, **kw: H.torchdr_umap_baseline(
            pcs, random_state=seed, device=device, **kw
        ),
    ),
    "torchdr_infotsne": (
        "InfoTSNE (TorchDR)",
        lambda adata, pcs, seed, device, **kw: H.torchdr_infotsne_baseline(
            pcs, random_state=seed, device=device, **kw
        ),
    ),
    "scanpy_tsne": (
        "t-SNE (scanpy)",
        lambda adata, pcs, seed, device, **kw: H.tsne_baseline(
            adata, random_state=seed, n_jobs=_tsne_jobs(), **kw
        ),
    ),
    "opentsne": (
        "t-SNE (openTSNE)",
        lambda adata, pcs, seed, device, **kw: H.opentsne_baseline(
            pcs, random_state=seed, n_jobs=_tsne_jobs(), **kw
        ),
    ),
    "pca": ("PCA", lambda adata, pcs, seed, device, **kw: H.pca_baseline(pcs, random_state=seed, **kw)),
}


def load(name: str):
    """AnnData of a panel dataset with its 50 PCs in ``obsm["X_pca"]`` and labels in ``obs["label"]``."""
    if name in IMAGES:
        a = mx.datasets.load_images(name, H.data_dir(), split=IMAGES[name])
        sc.pp.pca(a, n_comps=50, random_state=0)
        return a
    return mx.datasets.preprocess_scrna(mx.datasets.load_scrna(name, H.data_dir()))


def panel_row(
    dataset: str,
    method: str,
    adata,
    seed: int,
    *,
    device: str = "cpu",
    method_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Map ``adata.obsm["X_pca"]`` with one method, time the call and score the map.

    Returns ``{"dataset", "method", "seed", knn_acc, linear_acc, acc, nmi, ari, trust, "mean6",
    cpd, knc, "seconds"}``, scored against ``adata.obs["label"]`` with trustworthiness, CPD and
    KNC against the PCs; ``mean6`` is the mean of the six scores before it. ``method_kwargs`` go
    to the method (for DLME: :func:`manifex.tl.dlme`; for TorchDR and openTSNE: the estimator).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if "X_pca" not in adata.obsm or "label" not in adata.obs:
        raise KeyError("adata needs obsm['X_pca'] (the PCs every method maps) and obs['label']")
    pcs = np.asarray(adata.obsm["X_pca"])
    labels = adata.obs["label"].astype(str).to_numpy()
    name, fn = METHODS[method]
    emb, sec = fn(adata, pcs, seed, device, **(method_kwargs or {}))
    emb = np.asarray(emb)
    if emb.shape != (adata.n_obs, 2) or not np.isfinite(emb).all():
        raise RuntimeError(f"{name} returned a map of shape {emb.shape} (finite: {np.isfinite(emb).all()})")
    s = H.score(emb, labels, X=pcs)
    scores = {k: float(s[k]) for k in SCORES}
    return {
        "dataset": dataset,
        "method": name,
        "seed": seed,
        **scores,
        "mean6": float(np.mean(list(scores.values()))),
        **{k: float(s[k]) for k in GLOBAL_SCORES},
        "seconds": float(sec),
    }


def _notes(
    seeds: Sequence[int], device: str, machine_note: str, sizes: dict[str, str], dlme_kwargs: dict[str, Any]
) -> str:
    threads = H.thread_counts()
    return "\n".join(
        [
            f"Seeds {list(seeds)}; device {device} for DLME and TorchDR. Threads: torch {threads['torch']}, "
            f"numba {threads['numba']} (OMP_NUM_THREADS={threads['OMP_NUM_THREADS']}, "
            f"NUMBA_NUM_THREADS={threads['NUMBA_NUM_THREADS']})"
            + (f"; {machine_note}" if machine_note else "")
            + ".",
            "",
            "Data (cells × PCs, classes): " + "; ".join(f"{k} {v}" for k, v in sizes.items()) + ".",
            "",
            "Scores: kNN accuracy (k=15, 5-fold), linear accuracy (logistic regression, 5-fold), k-means "
            "ACC / NMI / ARI (k = number of classes), trustworthiness (k=15) against the PCs; `mean6` is "
            "their mean. Global scores, not in `mean6` (Kobak & Berens 2019): `cpd`, the Spearman "
            "correlation of pairwise distances of 1,000 sampled cells in the map and in the PCs; `knc`, "
            "the share of each class's 3 nearest classes (by class means in the PCs) that stay its 3 "
            "nearest in the map. `seconds`: wall time of the method's call alone, all methods in one "
            "process (the first scanpy UMAP includes numba compilation).",
            "",
            "Methods: DLME `mx.tl.dlme(adata, random_state=seed"
            + (f", **{dlme_kwargs}" if dlme_kwargs else "")
            + ")` on X_pca (defaults otherwise); scanpy "
            "`pp.neighbors(n_neighbors=15)` + `tl.umap`; scanpy `tl.tsne`; TorchDR "
            f"{H.torchdr_version()} `UMAP` and `InfoTSNE` with their defaults on the float32 PCs; openTSNE "
            f"{H.opentsne_version()} `TSNE(random_state=seed, n_jobs=threads)` with its defaults on the "
            "PCs; PCA: the first two components of the PCs.",
        ]
    )


def run_panel(
    datasets: Sequence[str],
    seeds: Sequence[int],
    methods: Sequence[str],
    *,
    out: str,
    dlme_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
    machine_note: str = "",
) -> list[dict[str, Any]]:
    """Every dataset × seed × method; the report at ``out`` (+ .csv) is rewritten after every seed."""
    dlme_kwargs = dict(dlme_kwargs or {})
    if any(m.startswith("torchdr") for m in methods):
        import torchdr  # noqa: F401  (imported here so no method's time includes it)
    rows: list[dict[str, Any]] = []
    sizes: dict[str, str] = {}
    for name in datasets:
        adata = load(name)
        k = adata.obs["label"].nunique()
        sizes[name] = f"{adata.n_obs} × {adata.obsm['X_pca'].shape[1]}, {k}"
        print(f"== {name}: {sizes[name]}", flush=True)
        for seed in seeds:
            for m in methods:
                kw = dlme_kwargs if m == "dlme" else {}
                rows.append(panel_row(name, m, adata, seed, device=device, method_kwargs=kw))
                print(
                    {c: round(v, 4) if isinstance(v, float) else v for c, v in rows[-1].items()}, flush=True
                )
            table = H.write_markdown(
                rows,
                out,
                title=(
                    "Panel: DLME, scanpy UMAP / t-SNE / PCA, TorchDR UMAP / InfoTSNE, openTSNE on the same PCs"
                ),
                notes=_notes(seeds, device, machine_note, sizes, dlme_kwargs),
            )
    print(table.to_string())
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument(
        "--dlme-kwargs", default="{}", help="extra mx.tl.dlme keyword arguments, a Python dict literal"
    )
    p.add_argument("--device", default="cpu", help="torch device of DLME and TorchDR (default cpu)")
    p.add_argument("--out", default=str(H.RESULTS / "panel.md"))
    p.add_argument("--machine-note", default="", help="what else ran on the machine (added to the notes)")
    args = p.parse_args(argv)
    try:
        dlme_kwargs = ast.literal_eval(args.dlme_kwargs)
    except (ValueError, SyntaxError) as e:
        p.error(f"--dlme-kwargs must be a Python dict literal: {e}")
    if not isinstance(dlme_kwargs, dict):
        p.error(f"--dlme-kwargs must be a dict, got {type(dlme_kwargs).__name__}")
    sc.settings.verbosity = 1
    run_panel(
        args.datasets,
        args.seeds,
        args.methods,
        out=args.out,
        dlme_kwargs=dlme_kwargs,
        device=args.device,
        machine_note=args.machine_note,
    )


if __name__ == "__main__":
    main()
