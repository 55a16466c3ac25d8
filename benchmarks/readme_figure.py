"""The README picture: DLME beside scanpy's UMAP on pbmc3k, coloured by cell type.

    python -m benchmarks.readme_figure

Default DLME settings (``mx.tl.dlme(adata)``) on the 50 PCs of the standard scanpy
preprocessing; UMAP with scanpy's defaults on the same PCs. kNN accuracy (k=15, 5-fold CV on
the 2-d map) in the titles. Writes ``results/pbmc3k_dlme_umap.png``.
"""

from __future__ import annotations

import manifex as mx

from . import harness as H


def main() -> None:
    adata = mx.datasets.preprocess_scrna(mx.datasets.load_scrna("pbmc3k", H.data_dir()))
    labels = adata.obs["label"].to_numpy()
    _, sec_d = H.timed(lambda: mx.tl.dlme(adata, random_state=0, progress=False))
    emb_u, sec_u = H.umap_baseline(adata, random_state=0)
    maps = {}
    for name, emb, sec in (("DLME", adata.obsm["X_dlme"], sec_d), ("UMAP", emb_u, sec_u)):
        m = H.score(emb, labels, X=adata.obsm["X_pca"])
        maps[f"{name} (kNN acc {m['knn_acc']:.3f})"] = (emb, labels)
        print(name, f"{sec:.0f}s", m, flush=True)
    H.plot_maps(maps, H.RESULTS / "pbmc3k_dlme_umap.png", suptitle="pbmc3k (2,638 cells)", legend=True)


if __name__ == "__main__":
    main()
