"""DLME against scanpy's UMAP, t-SNE and PCA on pbmc3k and paul15 (issue: foundation + DLME).

    python -m benchmarks.bench_dlme [--datasets pbmc3k paul15] [--seeds 0 1 2] [--no-tsne]

Standard scanpy preprocessing (normalize_total, log1p, 2000 HVGs, scale, 50 PCs); every method
embeds ``X_pca``; all are scored by :func:`manifex.metrics.evaluate_embedding` against
``cell_type`` with trustworthiness measured against ``X_pca``. Writes
``benchmarks/results/dlme.md`` (+ .csv) and ``dlme_maps.png``.
"""

from __future__ import annotations

import argparse

import scanpy as sc

import manifex as mx

from . import harness as H


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--datasets", nargs="+", default=["pbmc3k", "paul15"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--no-tsne", action="store_true")
    p.add_argument("--out", default=str(H.RESULTS / "dlme.md"))
    p.add_argument("--dlme-kwargs", default="{}", help="extra mx.tl.dlme keyword arguments, as a Python dict")
    args = p.parse_args(argv)
    extra = eval(args.dlme_kwargs)  # command-line convenience for parameter sweeps
    sc.settings.verbosity = 1
    rows, maps = [], {}
    for name in args.datasets:
        adata = mx.datasets.preprocess_scrna(mx.datasets.load_scrna(name, H.data_dir()))
        labels = adata.obs["cell_type"].astype(str).to_numpy()
        xin = adata.obsm["X_pca"]
        for seed in args.seeds:
            a = adata.copy()
            _, sec = H.timed(lambda: mx.tl.dlme(a, random_state=seed, progress=False, **extra))  # noqa: B023
            emb = a.obsm["X_dlme"]
            rows.append(
                {
                    "dataset": name,
                    "method": "DLME (manifex)",
                    "seed": seed,
                    **H.score(emb, labels, xin),
                    "seconds": sec,
                }
            )
            print(rows[-1], flush=True)
            if seed == args.seeds[0]:
                maps[f"{name}: DLME"] = (emb, labels)
            emb_u, sec_u = H.umap_baseline(adata, random_state=seed)
            rows.append(
                {
                    "dataset": name,
                    "method": "UMAP (scanpy)",
                    "seed": seed,
                    **H.score(emb_u, labels, xin),
                    "seconds": sec_u,
                }
            )
            print(rows[-1], flush=True)
            if seed == args.seeds[0]:
                maps[f"{name}: UMAP"] = (emb_u, labels)
            if not args.no_tsne:
                emb_t, sec_t = H.tsne_baseline(adata, random_state=seed)
                rows.append(
                    {
                        "dataset": name,
                        "method": "t-SNE (scanpy)",
                        "seed": seed,
                        **H.score(emb_t, labels, xin),
                        "seconds": sec_t,
                    }
                )
                if seed == args.seeds[0]:
                    maps[f"{name}: t-SNE"] = (emb_t, labels)
        emb_p, sec_p = H.pca_baseline(xin)
        rows.append(
            {"dataset": name, "method": "PCA", "seed": 0, **H.score(emb_p, labels, xin), "seconds": sec_p}
        )
        maps[f"{name}: PCA"] = (emb_p, labels)
    notes = (
        "Scores: kNN accuracy (k=15, 5-fold), linear accuracy (logistic regression, 5-fold), "
        "k-means ACC/NMI/ARI (k = number of cell types), trustworthiness (k=15) against X_pca; "
        "`mean` is the mean of these six. Values are mean ± sd over seeds "
        f"{args.seeds}. Seconds are wall time inside one process (UMAP's first call includes numba compilation). "
        f"DLME arguments: {extra or 'defaults'}."
    )
    table = H.write_markdown(rows, args.out, title="DLME vs scanpy UMAP / t-SNE / PCA", notes=notes)
    H.plot_maps(maps, args.out.replace(".md", "_maps.png"), ncols=4 if not args.no_tsne else 3)
    print(table.to_string())


if __name__ == "__main__":
    main()
