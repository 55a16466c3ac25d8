"""Atlas scale: cost curves beside scanpy, and training from a backed .h5ad larger than its budget.

    python -m benchmarks.bench_atlas scale [--sizes 10000 100000 1000000] [--methods scanpy dlme n2d]
    python -m benchmarks.bench_atlas stream [--n 200000] [--genes 2000]
    python -m benchmarks.bench_atlas images [--n 300000] [--size 32] [--channels 3]
    python -m benchmarks.bench_atlas ddp [--n 100000] [--nprocs 1 2] [--method dlme] [--device cpu]

``scale``: synthetic data of 30 Gaussian clusters in 50 dimensions (float32; the cluster is the
label). Each (method, size) runs in a fresh subprocess, so its wall time includes imports and
numba compilation as a user's would, and its peak resident memory (ru_maxrss) is its own.
scanpy's row is ``sc.pp.neighbors`` + ``sc.tl.umap`` with defaults; DLME, N2D and t-SimCNE's
expression variant run ``mx.tl.<method>`` with defaults (t-SimCNE with ``preset="quick"``, 20 / 5 /
10 epochs, or ``--tsimcne-epochs``: its budget is counted in epochs and does not shrink with the
data). The
map's quality is the 2-d kNN accuracy of the cluster labels on a seeded sample of 10,000 cells
(5-fold, :func:`manifex.metrics.knn_accuracy`); N2D's clusters (``n_clusters=30``) also by
their adjusted Rand index against the 30 (``cluster_ari``). Writes ``benchmarks/results/atlas_scale.md``.

``stream``: writes an h5ad of ``n`` cells × ``genes`` sparse log-expression values (10 cell
types, ~10 % non-zero), opens it with ``backed="r"`` and trains DLME on the genes (``X``) in a
fresh subprocess; reports peak memory against the size of the dense matrix. Writes
``benchmarks/results/atlas_stream.md``.

``images``: writes an .h5ad whose ``obsm["image"]`` holds ``n`` uint8 images (10 classes) and
trains t-SimCNE on them twice, each in a fresh subprocess: left on disk (the h5py dataset,
read per minibatch) and loaded into memory first. Both use a small two-convolution backbone
(the data path under test does not depend on it; ResNet-18 would make each CPU run hours) and
the same seed, so the two maps must agree. Reports wall time, images per second, peak memory
and the images' size. Writes ``benchmarks/results/atlas_stream_images.md``.

``ddp``: writes the synthetic data of ``scale`` (``n`` cells, in ``obsm["X_pca"]``) to an .h5ad
and trains on it through the command line, as a user would launch it: ``manifex fit`` in one
process and ``torchrun --nproc-per-node N -m manifex fit`` for each N > 1, with the same global
batch and step budget. Each run gets ``--threads`` (default: all cores) divided among its
processes (``OMP_NUM_THREADS``), so on a CPU the rows compare one process using every core with
several processes sharing them. Reports wall time (launch to exit), the model's kNN and training
seconds, ms per step, the largest process's peak memory and the map's 2-d kNN accuracy. Writes
``benchmarks/results/atlas_ddp.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from . import harness as H


def synthetic(n: int, d: int = 50, k: int = 30, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d)).astype(np.float32)
    labels = rng.integers(0, k, n)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x[s:e] = centers[labels[s:e]] + rng.normal(size=(e - s, d)).astype(np.float32)
    return x, labels


def _peak_gb() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh at exec (ru_maxrss keeps
    the parent's peak across fork + exec), else ru_maxrss."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _quality(emb, labels) -> float:
    import numpy as np

    import manifex as mx

    idx = np.random.default_rng(1).choice(len(labels), size=min(10_000, len(labels)), replace=False)
    return float(mx.metrics.knn_accuracy(emb[idx], labels[idx]))


def child_scale(method: str, n: int, tsimcne_epochs: list[int] | None = None, device: str = "auto") -> dict:
    import anndata as ad
    import scanpy as sc

    import manifex as mx

    x, labels = synthetic(n)
    adata = ad.AnnData(X=x, obsm={"X_pca": x}, obs={"cluster": labels.astype(str)})
    t0 = time.perf_counter()
    info: dict = {}
    if method == "scanpy":
        sc.pp.neighbors(adata, use_rep="X_pca")
        t1 = time.perf_counter()
        sc.tl.umap(adata)
        info = {"knn_s": round(t1 - t0, 1), "train_s": round(time.perf_counter() - t1, 1)}
        emb = adata.obsm["X_umap"]
    else:
        kwargs: dict = {}
        if method == "tsimcne":
            kwargs = {"preset": "quick"} if tsimcne_epochs is None else {"n_epochs": tuple(tsimcne_epochs)}
        if method == "n2d":
            kwargs["n_clusters"] = 30
        getattr(mx.tl, method)(adata, progress=False, device=device, **kwargs)
        emb = adata.obsm[f"X_{method}"]
        uns = adata.uns[method]
        timings = uns.get("timings") or {}
        info = {k: round(float(v), 1) for k, v in timings.items() if isinstance(v, int | float)}
        knn = uns.get("knn") or {}
        if knn:
            info["knn_method"] = knn.get("method")
            info["knn_recall"] = knn.get("recall")
        info["n_steps"] = uns.get("n_steps")
        if method == "n2d":  # the clusters against the 30 true ones
            from sklearn.metrics import adjusted_rand_score

            info["cluster_ari"] = round(float(adjusted_rand_score(labels, adata.obs["n2d"])), 4)
        if method == "tsimcne":
            info["n_epochs"] = "/".join(str(e) for e in (tsimcne_epochs or (20, 5, 10)))
    wall = time.perf_counter() - t0
    return {
        "method": method,
        "n_cells": n,
        "wall_s": round(wall, 1),
        **info,
        "peak_rss_gb": round(_peak_gb(), 2),
        "knn_acc_2d": round(_quality(emb, labels), 3),
    }


def write_counts_h5ad(path: Path, n: int, genes: int, seed: int = 0) -> float:
    """A sparse log1p-normalised h5ad written in row chunks; returns the dense size in GB."""
    import h5py
    import numpy as np
    import scipy.sparse as sp
    from anndata.io import write_elem

    rng = np.random.default_rng(seed)
    programs = rng.random((10, genes)) < 0.1
    rate = np.where(programs, rng.gamma(2.0, 1.5, (10, genes)), 0.02).astype(np.float32)
    types = rng.integers(0, 10, n)
    with h5py.File(path, "w") as f:
        parts = []
        for s in range(0, n, 20_000):
            e = min(n, s + 20_000)
            counts = rng.poisson(rate[types[s:e]]).astype(np.float32)
            lib = counts.sum(1, keepdims=True) + 1
            parts.append(sp.csr_matrix(np.log1p(counts / lib * 1e4).astype(np.float32)))
        write_elem(f, "X", sp.vstack(parts, format="csr"))
        import anndata as ad
        import pandas as pd

        write_elem(f, "obs", pd.DataFrame({"type": types.astype(str)}, index=[f"c{i}" for i in range(n)]))
        write_elem(f, "var", pd.DataFrame(index=[f"g{i}" for i in range(genes)]))
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
        del ad
    return n * genes * 4 / 2**30


def child_stream(path: str, n_steps: int | None) -> dict:
    import anndata as ad
    import numpy as np

    import manifex as mx

    adata = ad.read_h5ad(path, backed="r")
    t0 = time.perf_counter()
    model = mx.models.DLME(progress=False, n_steps=n_steps).fit(adata.X, feature_names=adata.var_names)
    wall = time.perf_counter() - t0
    labels = np.asarray(adata.obs["type"])
    return {
        "n_cells": adata.n_obs,
        "genes": adata.n_vars,
        "wall_s": round(wall, 1),
        "knn_s": round(model.timings_["knn_s"], 1),
        "train_s": round(model.timings_["train_s"], 1),
        "n_steps": int(model.history_["n_steps"]),
        "ms_per_step": round(1000 * model.timings_["train_s"] / model.history_["n_steps"], 1),
        "peak_rss_gb": round(_peak_gb(), 2),
        "knn_acc_2d": round(_quality(model.embedding_, labels), 3),
    }


def write_images_h5ad(path: Path, n: int, size: int, channels: int, seed: int = 0) -> float:
    """An .h5ad of ``n`` uint8 images (10 classes of smooth random patterns + noise) in
    ``obsm["image"]``, written in chunks; returns the images' size in GB."""
    import h5py
    import numpy as np
    import pandas as pd
    from anndata.io import write_elem

    rng = np.random.default_rng(seed)
    coarse = rng.random((10, size // 4, size // 4, channels))
    patterns = np.kron(coarse, np.ones((1, 4, 4, 1))) * 200.0
    labels = rng.integers(0, 10, n)
    with h5py.File(path, "w") as f:
        write_elem(f, "obs", pd.DataFrame({"type": labels.astype(str)}, index=[f"i{i}" for i in range(n)]))
        write_elem(f, "var", pd.DataFrame(index=pd.Index([], dtype=str)))
        for key in ("varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
        obsm = f.create_group("obsm")
        obsm.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        shape = (n, size, size, channels)
        ds = obsm.create_dataset("image", shape=shape, dtype="uint8")  # contiguous, as anndata writes it
        for s in range(0, n, 20_000):
            e = min(n, s + 20_000)
            noise = rng.normal(scale=25.0, size=(e - s, size, size, channels))
            ds[s:e] = np.clip(patterns[labels[s:e]] + noise, 0, 255).astype(np.uint8)
    return n * size * size * channels / 2**30


class _SmallCNN:
    """A two-convolution backbone (``out_dim`` 64) that keeps the CPU run short; the data path
    under test does not depend on it."""

    @staticmethod
    def make(channels: int):
        import torch
        from torch import nn

        torch.manual_seed(0)  # the same initial weights in both runs
        net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        net.out_dim = 64
        return net


def child_images(path: str, where: str, epochs: int) -> dict:
    """t-SimCNE on the images of ``path``: left on disk (``where="disk"``) or loaded first."""
    import h5py
    import numpy as np

    import manifex as mx

    f = h5py.File(path, "r")
    src = f["obsm/image"]
    t0 = time.perf_counter()
    images = src if where == "disk" else src[:]
    load_s = time.perf_counter() - t0
    model = mx.models.TSimCNE(
        backbone=_SmallCNN.make(src.shape[-1]),
        n_epochs=(epochs, 1, 1),
        batch_size=512,
        augment="natural",
        progress=False,
        device="cpu",
        random_state=0,
    ).fit(images)
    wall = time.perf_counter() - t0
    labels = np.asarray(f["obs/type"][:]).astype(str)
    h = model.history_
    emb = model.embedding_
    np.save(Path(path).with_name(f"emb_{where}.npy"), emb)
    return {
        "images": where,
        "n_images": int(src.shape[0]),
        "shape": "×".join(str(v) for v in src.shape[1:]),
        "wall_s": round(wall, 1),
        "load_s": round(load_s, 1),
        "n_steps": int(h["n_steps"]),
        "images_per_s": round(h["n_steps"] * h["batch_size"] / h["seconds"], 0),
        "peak_rss_gb": round(_peak_gb(), 2),
        "knn_acc_2d": round(_quality(emb, labels), 3),
    }


def write_synthetic_h5ad(path: Path, n: int) -> None:
    """The ``scale`` data (``n`` cells × 50 dims, 30 clusters) as an .h5ad, as ``scale`` builds it:
    the coordinates in ``X`` and ``obsm["X_pca"]`` (what the methods read by default), the
    cluster in ``obs["cluster"]``."""
    import anndata as ad

    x, labels = synthetic(n)
    ad.AnnData(X=x, obs={"cluster": labels.astype(str)}, obsm={"X_pca": x}).write_h5ad(path)


def child_ddp(path: str, nproc: int, method: str, device: str, threads: int, n_steps: int | None) -> dict:
    """``manifex fit`` of ``path`` in ``nproc`` processes (torchrun when more than one)."""
    import resource
    import subprocess
    import sys

    import anndata as ad
    import numpy as np

    import manifex as mx

    out = Path(path).with_name(f"ddp{nproc}")
    cmd = ["-m", "manifex", "fit", method, path, "--device", device, "--random-state", "0"]
    cmd += ["--model-out", f"{out}.mx", "--embedding-out", f"{out}.npy", "--overwrite"]
    if n_steps is not None:
        cmd += ["--n-steps", str(n_steps)]
    if method == "n2d":
        cmd += ["--param", "n_clusters=30"]
    if nproc > 1:
        cmd = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *cmd]
    threads_each = max(1, threads // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_each)}
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    model = mx.models.load_model(f"{out}.mx", device="cpu")
    timings, history = model.timings_ or {}, model.history_ or {}
    labels = np.asarray(ad.read_h5ad(path, backed="r").obs["cluster"])
    steps = int(history.get("n_steps", 0))
    train_s = float(timings.get("train_s", history.get("seconds", float("nan"))))
    return {
        "method": method,
        "processes": nproc,
        "threads_each": threads_each,
        "device": device,
        "n_cells": len(labels),
        "wall_s": round(wall, 1),
        "knn_s": round(float(timings.get("knn_s", float("nan"))), 1),
        "train_s": round(train_s, 1),
        "n_steps": steps,
        "ms_per_step": round(1000 * train_s / steps, 1) if steps else float("nan"),
        # the largest single process among the waited-for descendants
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
        "knn_acc_2d": round(_quality(np.load(f"{out}.npy"), labels), 3),
    }


def _run_child(args: list[str]) -> dict:
    return H.run_json(["-m", "benchmarks.bench_atlas", *args])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    s.add_argument("--methods", nargs="+", default=["scanpy", "dlme"])
    s.add_argument("--out", default=str(H.RESULTS / "atlas_scale.md"))
    s.add_argument(
        "--tsimcne-epochs",
        nargs=3,
        type=int,
        default=None,
        help="t-SimCNE's (stage 1, 2, 3) epochs instead of preset 'quick' (20 5 10)",
    )
    st = sub.add_parser("stream")
    st.add_argument("--n", type=int, default=200_000)
    st.add_argument("--genes", type=int, default=2000)
    st.add_argument("--n-steps", type=int, default=None)
    st.add_argument("--out", default=str(H.RESULTS / "atlas_stream.md"))
    im = sub.add_parser("images")
    im.add_argument("--n", type=int, default=300_000)
    im.add_argument("--size", type=int, default=32)
    im.add_argument("--channels", type=int, default=3)
    im.add_argument("--epochs", type=int, default=1)
    im.add_argument("--out", default=str(H.RESULTS / "atlas_stream_images.md"))
    dd = sub.add_parser("ddp")
    dd.add_argument("--n", type=int, default=100_000)
    dd.add_argument("--nprocs", nargs="+", type=int, default=[1, 2])
    dd.add_argument("--method", default="dlme", choices=("dlme", "tsimcne", "n2d"))
    dd.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    dd.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared by a run")
    dd.add_argument("--n-steps", type=int, default=None, help="optimiser steps (default: the method's)")
    dd.add_argument("--out", default=str(H.RESULTS / "atlas_ddp.md"))
    c = sub.add_parser("child")
    c.add_argument("what")
    c.add_argument("arg")
    c.add_argument("value")
    c.add_argument("extra", nargs="*", default=[])
    args = p.parse_args(argv)

    if args.part == "child":
        if args.what == "ddp":  # arg: path; value: processes; extra: method device threads steps
            method, device, threads, steps = args.extra
            row = child_ddp(
                args.arg,
                int(args.value),
                method,
                device,
                int(threads),
                None if steps == "none" else int(steps),
            )
            print(json.dumps(row))
        elif args.what == "images":
            print(json.dumps(child_images(args.arg, args.value, int(args.extra[0]))))
        elif args.what == "stream":
            steps = None if args.value == "none" else int(args.value)
            print(json.dumps(child_stream(args.arg, steps)))
        else:
            epochs = json.loads(args.extra[0]) if args.extra else None
            print(json.dumps(child_scale(args.arg, int(args.value), epochs)))
        return
    import pandas as pd

    threads = {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    if args.part == "scale":
        rows = []
        for n in args.sizes:
            for method in args.methods:
                extra = (
                    [json.dumps(args.tsimcne_epochs)] if method == "tsimcne" and args.tsimcne_epochs else []
                )
                rows.append(_run_child(["child", "scale", method, str(n), *extra]))
                print(rows[-1], flush=True)
                pd.DataFrame(rows).to_csv(Path(args.out).with_suffix(".csv"), index=False)
        body = pd.DataFrame(rows).to_markdown(index=False)
        title = "Atlas scale: cost curve beside scanpy (synthetic 30 clusters × 50 dims)"
    elif args.part == "images":
        import numpy as np

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "images.h5ad"
            images_gb = write_images_h5ad(path, args.n, args.size, args.channels)
            rows = []
            for where in ("disk", "memory"):
                rows.append(_run_child(["child", "images", str(path), where, str(args.epochs)]))
                rows[-1]["images_gb"] = round(images_gb, 2)
                print(rows[-1], flush=True)
            diff = float(
                np.abs(
                    np.load(path.with_name("emb_disk.npy")) - np.load(path.with_name("emb_memory.npy"))
                ).max()
            )
        body = pd.DataFrame(rows).to_markdown(index=False)
        body += f"\n\nLargest difference between the two maps: {diff:.2g}."
        title = "t-SimCNE on images left on disk (h5py, read per minibatch) against the same images loaded"
    elif args.part == "ddp":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "synthetic.h5ad"
            write_synthetic_h5ad(path, args.n)
            rows = []
            for nproc in args.nprocs:
                steps = "none" if args.n_steps is None else str(args.n_steps)
                extra = [args.method, args.device, str(args.threads), steps]
                rows.append(_run_child(["child", "ddp", str(path), str(nproc), *extra]))
                print(rows[-1], flush=True)
                pd.DataFrame(rows).to_csv(Path(args.out).with_suffix(".csv"), index=False)
        body = pd.DataFrame(rows).to_markdown(index=False)
        title = "One process against several (torch.distributed) through `manifex fit`"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "stream.h5ad"
            dense_gb = write_counts_h5ad(path, args.n, args.genes)
            row = _run_child(
                ["child", "stream", str(path), "none" if args.n_steps is None else str(args.n_steps)]
            )
            row["dense_matrix_gb"] = round(dense_gb, 2)
            row["file_gb"] = round(path.stat().st_size / 2**30, 2)
        print(row, flush=True)
        body = pd.DataFrame([row]).to_markdown(index=False)
        title = "Training DLME on genes streamed from a backed .h5ad"
    H.write_report(args.out, title, ["", body, "", f"Threads: {threads}.", ""])


if __name__ == "__main__":
    main()
