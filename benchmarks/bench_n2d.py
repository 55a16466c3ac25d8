"""N2D clustering against k-means on PCA and Leiden on scanpy's graph (issue: N2D).

    python -m benchmarks.bench_n2d [--datasets mnist usps pbmc3k paul15 pbmc4k]
                                   [--preset default|fast|paper] [--seeds 0 1 2]

Images: MNIST test (10,000) and USPS (all 9,298), flattened pixels scaled to [0, 1] as in the
reference; N2D runs on the pixels, the baselines on 50 PCs of them. scRNA-seq: pbmc3k,
paul15 and 10x PBMC 4k after the standard scanpy preprocessing (normalize_total, log1p, 2000
HVGs, scale, 50 PCs); every method clusters ``X_pca``. Every method gets the true number of
classes: k-means with ``n_init=10``; Leiden (igraph flavour) on ``sc.pp.neighbors`` with its
resolution bisected until it gives that many clusters. Clusters are scored against the labels by
ACC (Hungarian matching), NMI and ARI (:func:`manifex.metrics.cluster_scores`).

Two cheap extra rows reuse each N2D run: the reference's single-initialisation mixture
(``GaussianMixture(n_init=1)``) on the same manifold, which isolates the effect of restarts,
and the number of clusters BIC would choose on that manifold.

Writes ``benchmarks/results/n2d.md`` (+ .csv) after every seed, and ``n2d_maps.png``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scanpy as sc

import manifex as mx

from . import harness as H

PUBLISHED = {"mnist": {"acc": 0.948, "nmi": 0.882}, "usps": {"acc": 0.958, "nmi": 0.901}}
IMAGES = {"mnist": "test", "usps": None}


def leiden_k(adata, k: int, *, seed: int, max_iter: int = 30) -> tuple[np.ndarray, float]:
    """Leiden clusters with the resolution bisected to give ``k`` clusters (closest if never exact)."""
    lo, hi = 0.005, 5.0
    best: tuple[int, np.ndarray, float] | None = None
    for _ in range(max_iter):
        res = float(np.sqrt(lo * hi))  # bisect on a log scale
        sc.tl.leiden(
            adata, resolution=res, key_added="_leiden", random_state=seed, flavor="igraph", n_iterations=2
        )
        labels = adata.obs["_leiden"].to_numpy()
        n = len(np.unique(labels))
        if best is None or abs(n - k) < abs(best[0] - k):
            best = (n, labels, res)
        if n == k:
            break
        if n < k:
            lo = res
        else:
            hi = res
    return best[1], best[2]


def bic_k(model, manifold: np.ndarray, seed: int) -> int:
    """The k in ``model.k_range`` whose mixture on ``manifold`` has the lowest BIC, as
    ``N2D(n_clusters=None)`` chooses it (up to 3 k-means starts each)."""
    from sklearn.mixture import GaussianMixture

    ks = range(model.k_range[0], max(model.k_range[0], min(model.k_range[1], len(manifold) - 1)) + 1)
    kw = dict(covariance_type="full", init_params="kmeans", max_iter=300, random_state=seed)
    kw.update(n_init=min(model.gmm_n_init, 3), reg_covar=model.gmm_reg_covar)
    bic = [GaussianMixture(k, **kw).fit(manifold).bic(manifold) for k in ks]
    return int(list(ks)[int(np.argmin(bic))])


def load(name: str):
    if name in IMAGES:
        a = mx.datasets.load_images(name, H.data_dir(), split=IMAGES[name])
        sc.pp.pca(a, n_comps=50, random_state=0)
        return a, "X"
    return mx.datasets.preprocess_scrna(mx.datasets.load_scrna(name, H.data_dir())), "X_pca"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["usps", "mnist", "pbmc3k", "paul15", "pbmc4k"])
    p.add_argument("--preset", default="default", choices=["default", "fast", "paper"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--bic", action="store_true", help="also report the k that BIC picks on each manifold")
    p.add_argument("--out", default=str(H.RESULTS / "n2d.md"))
    p.add_argument("--machine-note", default="", help="what else ran on the machine (for the report's notes)")
    p.add_argument("--n2d-kwargs", default="{}", help="extra mx.tl.n2d keyword arguments, as a Python dict")
    p.add_argument(
        "--combine",
        nargs="+",
        metavar="CSV",
        help="only merge the CSVs of earlier runs (e.g. images and scRNA run in parallel) into --out",
    )
    args = p.parse_args(argv)
    if args.combine:
        import pandas as pd

        frames = [pd.read_csv(f) for f in args.combine]
        rows = [{k: v for k, v in r.items() if not pd.isna(v)} for f in frames for r in f.to_dict("records")]
        args.seeds = sorted({int(r["seed"]) for r in rows if "ae_steps" in r})
        write(rows, args)
        return
    extra = eval(args.n2d_kwargs)
    if args.preset == "paper":  # the reference's fixed schedule: every epoch, every cell
        extra.setdefault("early_stopping", False)
    sc.settings.verbosity = 1
    rows: list[dict] = []
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    def add(name: str, method: str, seed: int, labels, pred, seconds: float, **more) -> None:
        s = mx.metrics.cluster_scores(np.zeros((len(labels), 1)), labels, labels_pred=pred)
        rows.append({"dataset": name, "method": method, "seed": seed, **s, "seconds": seconds, **more})
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)

    for name in args.datasets:
        adata, rep = load(name)
        labels = adata.obs["label"].astype(str).to_numpy()
        k = len(np.unique(labels))
        print(
            f"== {name}: {adata.n_obs} cells × {adata.n_vars} features, {k} classes, N2D on {rep}", flush=True
        )
        for seed in args.seeds:
            a = adata.copy()

            def run(a=a, k=k, rep=rep, seed=seed):
                return mx.tl.n2d(
                    a,
                    n_clusters=k,
                    use_rep=rep,
                    preset=args.preset,
                    random_state=seed,
                    progress=False,
                    return_model=True,
                    **extra,
                )

            model, sec = H.timed(run)
            t = model.timings_
            add(
                name,
                f"N2D ({args.preset})",
                seed,
                labels,
                a.obs["n2d"].to_numpy(),
                sec,
                ae_steps=int(model.history_["n_steps"]),
                ae_seconds=t["autoencoder"],
                sec_per_epoch=t["autoencoder"] / max(1, len(model.history_["loss"])),
                final_loss=float(model.history_["loss"][-1]),
            )
            manifold = a.obsm["X_n2d_manifold"]
            t0 = time.perf_counter()
            ref = GaussianMixture(k, covariance_type="full", random_state=seed).fit(manifold)
            add(
                name,
                "N2D, mixture n_init=1 (reference)",
                seed,
                labels,
                ref.predict(manifold),
                time.perf_counter() - t0,
            )
            if args.bic:
                rows[-2]["k_bic"] = bic_k(model, manifold, seed)
            if seed == args.seeds[0]:
                maps[f"{name}: N2D clusters"] = (a.obsm["X_n2d"], a.obs["n2d"].to_numpy())
                maps[f"{name}: N2D map, true labels"] = (a.obsm["X_n2d"], labels)
            if args.no_baselines:
                write(rows, args)  # after every seed: a long run that is stopped keeps what it measured
                continue
            t0 = time.perf_counter()
            km = KMeans(k, n_init=10, random_state=seed).fit_predict(adata.obsm["X_pca"])
            add(name, "k-means on 50 PCs", seed, labels, km, time.perf_counter() - t0)
            b = adata.copy()
            t0 = time.perf_counter()
            sc.pp.neighbors(b, use_rep="X_pca", random_state=seed)
            ld, res = leiden_k(b, k, seed=seed)
            add(
                name,
                "Leiden (resolution tuned to k)",
                seed,
                labels,
                ld,
                time.perf_counter() - t0,
                resolution=res,
                k_found=len(np.unique(ld)),
            )
            write(rows, args)
        if name in PUBLISHED:
            rows.append(
                {"dataset": name, "method": "N2D published (1000 epochs)", "seed": 0, **PUBLISHED[name]}
            )
        write(rows, args)
    H.plot_maps(maps, args.out.replace(".md", "_maps.png"), ncols=4)


def write(rows: list[dict], args) -> None:
    notes = (
        "ACC (Hungarian matching), NMI and ARI of each method's clusters against the labels, with the "
        "true number of classes given to every method; mean ± sd over seeds "
        f"{args.seeds}. `seconds` is wall time inside one process on the machine above "
        "(the first UMAP call of a process includes numba compilation, ~15 s). "
        f"{args.machine_note} "
        "N2D: autoencoder on pixels (images) or on X_pca (scRNA-seq), UMAP(20 neighbours, min_dist 0) "
        "of the code, full-covariance mixture with 10 restarts; `k_bic` is the number of clusters the "
        "BIC would choose on the same manifold. 'mixture n_init=1 (reference)' refits the reference's "
        "single-initialisation mixture on the same manifold. "
        f"Preset: {args.preset}; extra arguments: {args.n2d_kwargs}."
    )
    cols = ["acc", "nmi", "ari", "seconds", "ae_steps", "sec_per_epoch", "k_bic"]
    slim = [{k: v for k, v in r.items() if k in ("dataset", "method", "seed", *cols)} for r in rows]
    table = H.write_markdown(slim, args.out, title=f"N2D clustering (preset {args.preset})", notes=notes)
    import pandas as pd

    pd.DataFrame(rows).to_csv(args.out.replace(".md", ".csv"), index=False)
    print(table.to_string(), flush=True)


if __name__ == "__main__":
    main()
