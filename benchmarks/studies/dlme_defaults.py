"""Which DLME settings buy how much, on the panel and on labelled sets the defaults were not chosen on.

    python -m benchmarks.studies.dlme_defaults --variants default steps1000 ... \
        [--datasets pbmc3k paul15 pbmc4k mnist usps] [--seeds 0] [--peers] [--out NAME]

Each variant is a set of :func:`manifex.tl.dlme` keyword arguments (``VARIANTS``); every variant
maps the same 50 PCs as the panel (:mod:`benchmarks.bench_panel`) and is scored by the harness
(kNN, linear, k-means ACC / NMI / ARI, trustworthiness; ``mean6`` their mean). ``--peers`` adds
scanpy's and TorchDR's UMAP in the same run. ``seconds`` is the wall time of the call alone, in
one process. Rows go to ``results/<out>.csv`` as they finish; ``results/<out>.md`` holds the
table per dataset and, per variant, the mean over datasets of mean6 and of its gap to the better
UMAP.
"""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from .. import bench_panel as P
from .. import harness as H

#: name -> mx.tl.dlme keyword arguments
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "steps2000": {"n_steps": 2000},
    "steps1000": {"n_steps": 1000},
    "steps600": {"n_steps": 600},
    "steps600-lr2e-3": {"n_steps": 600, "lr": 2e-3},
    "steps400-lr2e-3": {"n_steps": 400, "lr": 2e-3},
    "batch150-steps1000": {"n_steps": 1000, "batch_size": 150},
    "batch150-steps1000-lr2e-3": {"n_steps": 1000, "batch_size": 150, "lr": 2e-3},
    "steps400": {"n_steps": 400},
    "steps800": {"n_steps": 800},
    "steps600-nu5e-3": {"n_steps": 600, "nu_y": 5e-3},
    "steps600-nu2e-2": {"n_steps": 600, "nu_y": 2e-2},
    "steps600-k10": {"n_steps": 600, "n_neighbors": 10},
    "steps600-k25": {"n_steps": 600, "n_neighbors": 25},
    "steps600-aug-default": {"n_steps": 600, "augment": "default"},
    "steps600-batch500": {"n_steps": 600, "batch_size": 500},
    "epochs40": {"n_epochs": 40},
    "epochs120": {"n_epochs": 120},
    "batch500": {"batch_size": 500},
    "nu5e-3": {"nu_y": 5e-3},
    "nu2e-2": {"nu_y": 2e-2},
    "k10": {"n_neighbors": 10},
    "k25": {"n_neighbors": 25},
    "aug-default": {"augment": "default"},
    "lr2e-3": {"lr": 2e-3},
    "step-schedule": {"lr_schedule": "step"},
    "width256": {"encoder_dims": (256, 256, 80), "projector_dims": (256, 80)},
    "nu_z10": {"nu_z": 10.0},
    "nu_z1000": {"nu_z": 1000.0},
    "anr1e3": {"aug_near_rate": 1e3},
    "anr1e7": {"aug_near_rate": 1e7},
    "standardize": {"standardize": True},
    # exaggeration throughout (these rows predate the late-exaggeration default)
    "exag2": {"exaggeration": 2.0, "exaggeration_start": 0.0},
    "exag4": {"exaggeration": 4.0, "exaggeration_start": 0.0},
    "paper-loss": {"exaggeration": 1.0},
    "late4": {"exaggeration": 4.0, "exaggeration_start": 0.75},
    "late8": {"exaggeration": 8.0, "exaggeration_start": 0.75},
    "late4-half": {"exaggeration": 4.0, "exaggeration_start": 0.5},
    "nu_z10-anr1e3": {"nu_z": 10.0, "aug_near_rate": 1e3},
}
PEERS = ["scanpy_umap", "torchdr_umap"]


def _variant(spec: str) -> tuple[str, dict[str, Any]]:
    """A name from VARIANTS, or ``name=python-dict`` for a one-off setting."""
    if "=" in spec:
        import ast

        name, kw = spec.split("=", 1)
        return name, ast.literal_eval(kw)
    return spec, VARIANTS[spec]


def summarize(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per variant: mean over datasets of mean6, of kNN accuracy and of the gap to the better UMAP."""
    df = pd.DataFrame(rows)
    per = df.groupby(["dataset", "method"])[["mean6", "knn_acc", "seconds"]].mean().reset_index()
    peers = per[per.method.isin([P.METHODS[m][0] for m in PEERS])]
    out = []
    for method, g in per.groupby("method"):
        gaps, kgaps = [], []
        for _, r in g.iterrows():
            pr = peers[peers.dataset == r.dataset]
            if len(pr):
                gaps.append(r.mean6 - pr.mean6.max())
                kgaps.append(r.knn_acc - pr.knn_acc.max())
        out.append(
            {
                "method": method,
                "n_datasets": g.dataset.nunique(),
                "mean6": g.mean6.mean(),
                "knn_acc": g.knn_acc.mean(),
                "gap_mean6_vs_best_umap": sum(gaps) / len(gaps) if gaps else float("nan"),
                "worst_gap_mean6": min(gaps) if gaps else float("nan"),
                "worst_gap_knn": min(kgaps) if kgaps else float("nan"),
                "seconds": g.seconds.mean(),
            }
        )
    return pd.DataFrame(out).sort_values("mean6", ascending=False)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["default", "steps1000", "steps600"])
    p.add_argument("--datasets", nargs="+", default=P.DEFAULT_DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--peers", action="store_true", help="scanpy's and TorchDR's UMAP in the same run")
    p.add_argument("--out", default="dlme_defaults")
    p.add_argument("--machine-note", default="")
    args = p.parse_args(argv)
    variants = [_variant(v) for v in args.variants]
    if args.peers:
        import torchdr  # noqa: F401  (not inside any timed call)
    rows: list[dict[str, Any]] = []
    for ds in args.datasets:
        adata = P.load(ds)
        print(f"== {ds}: {adata.n_obs} cells", flush=True)
        for seed in args.seeds:
            for m in PEERS if args.peers else []:
                rows.append(P.panel_row(ds, m, adata, seed))
                print(
                    {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True
                )
            for name, kw in variants:
                r = P.panel_row(ds, "dlme", adata, seed, method_kwargs=kw)
                r["method"] = f"DLME {name}"
                rows.append(r)
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
            pd.DataFrame(rows).to_csv(H.RESULTS / f"{args.out}.csv", index=False)
            _write(rows, variants, args)


def _write(rows, variants, args) -> None:
    threads = H.thread_counts()
    lines = [
        "",
        "Variants (mx.tl.dlme keyword arguments on X_pca; everything else default):",
        "",
        *[f"- `{n}`: `{kw}`" for n, kw in variants],
        "",
        f"Seeds {args.seeds}; threads: torch {threads['torch']}, numba {threads['numba']}.",
        "",
        "## Over datasets",
        "",
        summarize(rows).round(4).to_markdown(index=False),
        "",
        "## Per dataset (mean ± sd over seeds)",
        "",
    ]
    H.write_report(
        H.RESULTS / f"{args.out}.md",
        "DLME settings study",
        [*lines, H.summarize(rows).to_markdown(index=False)],
        machine_note=args.machine_note,
    )


if __name__ == "__main__":
    main()
