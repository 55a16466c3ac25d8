"""Command line: ``manifex demo`` runs DLME on scanpy's bundled pbmc68k_reduced."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .models._contract import SPACES


def demo(
    out: str = "manifex_demo.png", *, n_steps: int | None = None, device: str = "auto", seed: int = 0
) -> str:
    """Embed scanpy's ``pbmc68k_reduced`` with DLME and with scanpy's UMAP, side by side.

    Writes a PNG with both maps coloured by ``bulk_labels`` and their kNN accuracy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    import manifex as mx

    adata = sc.datasets.pbmc68k_reduced()
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    t0 = time.perf_counter()
    mx.tl.dlme(adata, n_steps=n_steps, device=device, random_state=seed)
    t_dlme = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc.pp.neighbors(adata, random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    t_umap = time.perf_counter() - t0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, basis, secs in ((axes[0], "dlme", t_dlme), (axes[1], "umap", t_umap)):
        acc = mx.metrics.knn_accuracy(adata.obsm[f"X_{basis}"], labels)
        sc.pl.embedding(
            adata,
            basis=basis,
            color="bulk_labels",
            ax=ax,
            show=False,
            legend_loc="none" if basis == "dlme" else "right margin",
        )
        ax.set_title(
            f"{'DLME (manifex)' if basis == 'dlme' else 'UMAP (scanpy)'} — kNN acc {acc:.3f}, {secs:.0f}s"
        )
    fig.suptitle(
        f"pbmc68k_reduced ({adata.n_obs} cells), coloured by bulk_labels; device {adata.uns['dlme']['device']}"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(
        f"DLME: {t_dlme:.1f}s on {adata.uns['dlme']['device']}; UMAP: {t_umap:.1f}s. Figure written to {out}"
    )
    return out


_METHODS = ("dlme", "tsimcne", "n2d")


def _value(text: str) -> Any:
    """A ``--param`` value: JSON when it parses (numbers, true/false, null, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"manifex: --param expects NAME=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        v = _value(v)
        out[k.strip().replace("-", "_")] = tuple(v) if isinstance(v, list) else v
    return out


def _store(path: str) -> tuple[Path, bool]:
    """``path`` checked to be an existing .h5ad file or .zarr store, and whether it is zarr."""
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"manifex: {path} does not exist")
    if p.suffix == ".zarr" or p.is_dir():
        return p, True
    if p.suffix != ".h5ad":
        raise SystemExit(f"manifex: {path}: expected an .h5ad file or a .zarr store")
    return p, False


def _read(path: str, *, backed: bool = False):
    import anndata as ad

    p, is_zarr = _store(path)
    if is_zarr:
        return ad.read_zarr(p)
    return ad.read_h5ad(p, backed="r" if backed else None)


def _open_images(path: str, key: str) -> tuple[Any, Any, Any]:
    """An AnnData of the observations of ``path`` (obs only) and its ``obsm[key]`` images left on
    disk (an h5py dataset or zarr array), without reading ``obsm`` or ``X``; plus the open file."""
    import anndata as ad

    try:
        from anndata.io import read_elem
    except ImportError:  # pragma: no cover - anndata < 0.11
        from anndata.experimental import read_elem

    p, is_zarr = _store(path)
    if is_zarr:
        import zarr

        root = zarr.open_group(str(p), mode="r")
    else:
        import h5py

        root = h5py.File(p, "r")
    if "obsm" not in root or key not in root["obsm"]:
        raise SystemExit(f"manifex: {path} has no images at obsm/{key}")
    return ad.AnnData(obs=read_elem(root["obs"])), root["obsm"][key], root


def _write_adata(adata: Any, path: str) -> None:
    if path.endswith(".zarr"):
        adata.write_zarr(path)
    else:
        adata.write_h5ad(path)


def fit(args: argparse.Namespace) -> int:
    """``manifex fit METHOD DATA``: train, write the model and the embedding (rank 0)."""
    import manifex as mx

    from .train._distributed import init_from_env

    w = init_from_env(args.device)
    kwargs = _params(args.param)
    handle = None
    if args.backed and args.out:
        raise SystemExit(
            "manifex: --backed leaves the input on disk; write the results with --embedding-out "
            "and --model-out instead of --out"
        )
    if args.backed and args.method == "tsimcne" and args.image_key:
        adata, kwargs["images"], handle = _open_images(args.data, args.image_key)
    else:
        adata = _read(args.data, backed=args.backed and args.data.endswith(".h5ad"))
        if args.backed and not getattr(adata, "isbacked", False):
            raise SystemExit(
                "manifex: --backed streams the genes (X) of an .h5ad file, or t-SimCNE's images "
                "(--image-key) of an .h5ad / .zarr; write this store as .h5ad or drop --backed"
            )
    for name in ("use_rep", "layer", "key_added", "n_steps", "random_state"):
        v = getattr(args, name)
        if v is not None:
            kwargs[name] = v
    kwargs.update(device=args.device, return_model=True)
    if args.method == "tsimcne" and args.image_key and handle is None:
        kwargs["image_key"] = args.image_key
    t0 = time.perf_counter()
    model = getattr(mx.tl, args.method)(adata, **kwargs)
    key = model.input_spec_.key_added
    if handle is not None:  # the images came from the file's obsm/<image_key>: a query's are there too
        model.input_spec_ = model.input_spec_.replace(
            key=args.image_key, description=f"obsm[{args.image_key!r}]"
        )
    if w.is_main:
        if args.model_out:
            model.save(args.model_out, overwrite=args.overwrite)
        if args.embedding_out:
            np.save(args.embedding_out, adata.obsm[f"X_{key}"])
        if args.out:
            _write_adata(adata, args.out)
        print(
            f"manifex fit {args.method}: {adata.n_obs} cells in {time.perf_counter() - t0:.1f}s on "
            f"{w.size} process(es); obsm['X_{key}']"
            + "".join(f", {k} {v}" for k, v in (("model", args.model_out), ("out", args.out)) if v)
        )
    if hasattr(handle, "close"):  # an h5py file (a zarr group needs no closing)
        handle.close()
    return 0


def transform(args: argparse.Namespace) -> int:
    """``manifex transform MODEL DATA``: embed a query in chunks of rows, writing as it goes."""
    import manifex as mx

    model = mx.models.load_model(args.model, device=args.device)
    if getattr(model, "kind_", None) == "image":
        return _transform_images(model, args)
    adata = _read(args.data, backed=args.data.endswith(".h5ad"))
    n = adata.n_obs
    key = "manifex_transform"  # a key of our own in each chunk, whatever the query already holds
    opts: dict[str, Any] = {"space": args.space, "key_added": key}
    if args.use_rep:
        opts["use_rep"] = args.use_rep

    def embed_rows(s: int, e: int) -> np.ndarray:
        chunk = adata[s:e]
        chunk = chunk.to_memory() if getattr(adata, "isbacked", False) else chunk.copy()
        mx.tl.embed(chunk, model, **opts)
        return np.asarray(chunk.obsm[f"X_{key}"], dtype=np.float32)

    _write_in_chunks(args.out, n, args.chunk_size, embed_rows)
    print(f"manifex transform: {n} cells -> {args.out} ({args.space})")
    return 0


def _write_in_chunks(path: str, n: int, chunk_size: int, embed_rows: Any) -> None:
    """Write ``embed_rows(start, stop)`` for consecutive row chunks into the .npy ``path``, which
    is created at the first chunk (its width is the embedding's) and filled as it goes."""
    out = None
    for s in range(0, n, chunk_size):
        emb = embed_rows(s, min(n, s + chunk_size))
        if out is None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, emb.shape[1]))
        out[s : s + emb.shape[0]] = emb
    if out is not None:
        out.flush()


def _transform_images(model: Any, args: argparse.Namespace) -> int:
    """``manifex transform`` of an image model: the query's ``obsm`` images read from disk in
    chunks of rows (never the whole array)."""
    spec = model.input_spec_
    key = args.image_key or (spec.key if spec is not None else None)
    if not key:
        raise SystemExit(
            "manifex: this model was trained on images given as an array; name the query's with --image-key"
        )
    _, images, handle = _open_images(args.data, key)
    n = int(images.shape[0])
    _write_in_chunks(
        args.out, n, args.chunk_size, lambda s, e: model.transform(np.asarray(images[s:e]), space=args.space)
    )
    if hasattr(handle, "close"):
        handle.close()
    print(f"manifex transform: {n} images (obsm/{key}) -> {args.out} ({args.space})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``manifex`` command (``demo``, ``fit``, ``transform``); ``manifex <command> -h`` for help."""
    parser = argparse.ArgumentParser(
        prog="manifex", description="Deep parametric manifold embeddings for single-cell data."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="DLME vs UMAP on scanpy's bundled pbmc68k_reduced; writes a PNG")
    p.add_argument("--out", default="manifex_demo.png", help="output PNG (default: manifex_demo.png)")
    p.add_argument(
        "--n-steps", type=int, default=None, help="optimiser steps (default: scaled with data size)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    p.add_argument("--seed", type=int, default=0)

    f = sub.add_parser(
        "fit",
        help="train a method on an .h5ad / .zarr (also under torchrun --nproc-per-node N -m manifex fit)",
    )
    f.add_argument("method", choices=_METHODS)
    f.add_argument("data", help="input .h5ad file or .zarr store")
    f.add_argument("--model-out", help="write the fitted model to this file")
    f.add_argument("--out", help="write the AnnData with the embedding to this .h5ad / .zarr")
    f.add_argument("--embedding-out", help="write obsm['X_<key>'] to this .npy file")
    f.add_argument("--use-rep", help="obsm key to train on (default: X_pca when present)")
    f.add_argument("--layer", help="AnnData layer to train on")
    f.add_argument("--image-key", help="t-SimCNE: obsm key of the images")
    f.add_argument(
        "--backed",
        action="store_true",
        help="leave the data on disk and read minibatches: the genes (X) of an .h5ad, or with "
        "--image-key t-SimCNE's images (obsm) of an .h5ad / .zarr; use --embedding-out / --model-out",
    )
    f.add_argument("--key-added", help="key of the results (default: the method's name)")
    f.add_argument("--n-steps", type=int, help="optimiser steps (DLME, N2D)")
    f.add_argument("--random-state", type=int, help="seed")
    f.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    f.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="any other parameter")
    f.add_argument("--overwrite", action="store_true", help="replace an existing model file")

    t = sub.add_parser("transform", help="embed a query with a saved model, in chunks of rows")
    t.add_argument("model", help="model file written by `manifex fit --model-out` or model.save")
    t.add_argument("data", help="query .h5ad (read backed) or .zarr")
    t.add_argument("--out", required=True, help="output .npy (written chunk by chunk)")
    t.add_argument("--space", default="embedding", choices=SPACES)
    t.add_argument("--use-rep", help="obsm key of the query holding the model input")
    t.add_argument(
        "--image-key", help="image models: obsm key of the query's images (default: the training key)"
    )
    t.add_argument("--chunk-size", type=int, default=100_000)
    t.add_argument("--device", default="auto")

    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out, n_steps=args.n_steps, device=args.device, seed=args.seed)
        return 0
    if args.command == "fit":
        return fit(args)
    return transform(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
