"""How N2D places the cells outside its UMAP subsample: ``UMAP.transform`` or a kNN average.

    python -m benchmarks.studies.n2d_placement [--datasets mnist usps] [--sizes 2000 5000]
                                               [--seeds 0]

Above ``umap_subsample`` cells N2D fits its UMAPs on a seeded subsample; the other cells must
be placed on the fitted manifold. This study trains one N2D autoencoder per dataset and seed
(default preset, true number of clusters, ``umap_subsample=None``, ``map_2d=False``), then, on
that same code, fits the manifold UMAP on every cell (the reference) and on each subsample
size, and places the rest

- ``transform``: umap-learn's ``UMAP.transform`` (a kNN query on the fitted search index, an
  initial position from the neighbours, then a third of the fit's epochs of optimisation);
- ``nearest``: the manifold position of the cell's nearest subsample cell in code space
  (exact search with :func:`manifex.neighbors.knn_query`; ``mx.models.N2D(placement="nearest")``, the default for the Euclidean metric);
- ``mean``: the average of the positions of its ``n_neighbors`` nearest subsample cells,
  weighted by UMAP's fuzzy membership (``exp(-d / σ)``, σ from ``smooth_knn_dist``, as
  ``UMAP.transform`` starts its optimisation), kept to show why the default is not an average.

The mixture (``n_init=10``, the true k) is then fitted on every cell of each manifold and scored
by ACC / NMI / ARI; ``seconds`` is the placement alone.

Writes ``benchmarks/results/n2d_placement.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.base import clone

import manifex as mx

from .. import harness as H
from ..bench_n2d import IMAGES


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["mnist", "usps"])
    p.add_argument("--sizes", nargs="+", type=int, default=[2000, 5000])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", default=str(H.RESULTS / "n2d_placement.md"))
    p.add_argument("--machine-note", default="")
    p.add_argument(
        "--combine", nargs="+", metavar="CSV", help="only merge the CSVs of earlier runs into --out"
    )
    args = p.parse_args(argv)
    if args.combine:
        df = pd.concat([pd.read_csv(f) for f in args.combine], ignore_index=True)
        args.datasets = list(dict.fromkeys(df["dataset"]))
        args.seeds = sorted(set(df["seed"]))
        df.to_csv(args.out.replace(".md", ".csv"), index=False)
        write(df.to_dict("records"), args)
        return
    rows: list[dict] = []
    for name in args.datasets:
        a = mx.datasets.load_images(name, H.data_dir(), split=IMAGES[name])
        labels = a.obs["label"].astype(str).to_numpy()
        k = len(np.unique(labels))
        x = np.asarray(a.X, dtype=np.float32)
        for seed in args.seeds:
            model = mx.models.N2D(
                n_clusters=k, umap_subsample=None, map_2d=False, random_state=seed, progress=False
            ).fit(x)
            code = model.code_
            dim = model.manifold_.shape[1]

            def score(
                manifold, fitted_on, placement, seconds, model=model, seed=seed, labels=labels, name=name
            ):
                pred = clone(model.gmm_).fit_predict(manifold)  # N2D's mixture, unfitted
                s = mx.metrics.cluster_scores(np.zeros((len(labels), 1)), labels, labels_pred=pred)
                rows.append(
                    {
                        "dataset": name,
                        "seed": seed,
                        "fitted_on": fitted_on,
                        "placement": placement,
                        **s,
                        "seconds": round(seconds, 2),
                    }
                )
                print(rows[-1], flush=True)

            score(model.manifold_, len(x), "none (full fit)", 0.0)
            for size in args.sizes:
                rows_fit = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
                rest = np.setdiff1d(np.arange(len(x)), rows_fit, assume_unique=True)
                reducer = clone(model.umap_)  # N2D's manifold UMAP (its settings and seed), unfitted
                fitted = np.asarray(reducer.fit_transform(code[rows_fit]), dtype=np.float32)
                for placement in ("transform", "nearest", "mean"):
                    out = np.empty((len(x), dim), dtype=np.float32)
                    out[rows_fit] = fitted
                    t0 = time.perf_counter()
                    if placement == "transform":
                        out[rest] = reducer.transform(code[rest])
                    elif placement == "nearest":
                        out[rest] = fitted[
                            mx.neighbors.knn_query(code[rows_fit], code[rest], 1, device="cpu")[0][:, 0]
                        ]
                    else:
                        out[rest] = weighted_mean(code[rows_fit], fitted, code[rest], model.n_neighbors)
                    score(out, size, placement, time.perf_counter() - t0)
            pd.DataFrame(rows).to_csv(args.out.replace(".md", ".csv"), index=False)
    write(rows, args)


def weighted_mean(ref_code: np.ndarray, fitted: np.ndarray, code: np.ndarray, k: int) -> np.ndarray:
    """UMAP-membership-weighted mean of the fitted positions of each row's k nearest reference rows."""
    from umap.umap_ import smooth_knn_dist

    ind, dist = mx.neighbors.knn_query(ref_code, code, k, device="cpu")
    sigmas, rhos = smooth_knn_dist(dist, float(k), local_connectivity=0.0)
    w = np.exp(-np.maximum(dist - rhos[:, None], 0.0) / sigmas[:, None])
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("mk,mkd->md", w, fitted[ind]).astype(np.float32)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds of each (dataset, subsample, placement)."""
    g = df.groupby(["dataset", "fitted_on", "placement"], sort=False)
    out = g[["acc", "nmi", "ari", "seconds"]].agg(["mean", "std"])
    rows = []
    for key, r in out.iterrows():
        row = dict(zip(["dataset", "fitted_on", "placement"], key))
        for m in ("acc", "nmi", "ari"):
            sd = r[(m, "std")]
            row[m] = f"{r[(m, 'mean')]:.3f}" + ("" if pd.isna(sd) else f" ± {sd:.3f}")
        row["seconds"] = f"{r[('seconds', 'mean')]:.1f}"
        row["n_seeds"] = int(g.size()[key])
        rows.append(row)
    return pd.DataFrame(rows)


def write(rows: list[dict], args) -> None:
    df = pd.DataFrame(rows)
    lines = [
        "# N2D: placing the cells outside the UMAP subsample",
        "",
        f"- machine: {H.machine()}; {args.machine_note}".rstrip("; "),
        f"- command: `python -m benchmarks.studies.n2d_placement --datasets {' '.join(args.datasets)} "
        f"--sizes {' '.join(map(str, args.sizes))} --seeds {' '.join(map(str, args.seeds))}`",
        "- one autoencoder per dataset and seed (default preset, true k); every row of a dataset and "
        "seed clusters the same code; `seconds` is the placement of the cells outside the subsample",
        "",
        summary(df).to_markdown(index=False),
        "",
        "Per seed:",
        "",
        df.to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
