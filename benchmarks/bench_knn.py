"""kNN graph backends at 10k, 100k and 1M cells × 50 dimensions, beside scanpy's neighbors.

    python -m benchmarks.bench_knn [--sizes 10000 100000 1000000]
                                   [--methods exact faiss pynndescent scanpy]
                                   [--threads 1] [--device cpu] [--exact-max 100000]
                                   [--crossover 5000 10000 20000 50000] [--timeout 2400]

Data: 30 Gaussian clusters (centres N(0, 5²), unit noise) in 50 dimensions, float32, K = 15.
Every (size, method) runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``,
which unlike ``tracemalloc`` also sees torch's and faiss's allocations) belongs to it alone.
torch, numba, OpenMP / BLAS and faiss all get ``--threads`` threads. Numba code (pynndescent,
umap) is compiled on 10,000 cells before the clock starts.

Methods: ``exact``, ``faiss`` and ``pynndescent`` are :func:`manifex.neighbors.knn_graph`'s
backends (faiss's time includes its nprobe calibration); ``scanpy`` is ``sc.pp.neighbors``
(``use_rep="X"``, ``n_neighbors=16``: 15 neighbours besides the cell itself), which builds a
pynndescent graph and its UMAP connectivities. Recall is :func:`manifex.neighbors.knn_recall`
on 1,000 seeded cells, against exact search. Exact search above ``--exact-max`` cells is
skipped and its time extrapolated from the largest measured size (it grows as n²).

``--crossover`` times exact and faiss at a few sizes between 5k and 50k: where ``"auto"``
switches on this device. Writes ``knn.md`` and ``knn.csv`` into ``--out-dir`` after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import harness as H

K = 15


def synthetic(n: int, d: int = 50, n_clusters: int = 30, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=5.0, size=(n_clusters, d)).astype(np.float32)
    return centers[rng.integers(0, n_clusters, n)] + rng.normal(size=(n, d)).astype(np.float32)


def _scanpy_indices(x, threads: int):
    import anndata as ad
    import numpy as np
    import scanpy as sc

    sc.settings.n_jobs = threads
    a = ad.AnnData(x)
    sc.pp.neighbors(a, n_neighbors=K + 1, use_rep="X", random_state=0)
    dist = a.obsp["distances"].tocsr()
    counts = np.diff(dist.indptr)
    ind = np.empty((x.shape[0], K), dtype=np.int64)
    full = counts == K
    ind[full] = dist.indices.reshape(-1)[np.repeat(full, counts)].reshape(-1, K)
    for r in np.where(~full)[0]:  # rows with fewer stored entries: pad with their first one
        row = dist.indices[dist.indptr[r] : dist.indptr[r + 1]]
        ind[r] = np.resize(row if row.size else np.array([(r + 1) % x.shape[0]]), K)
    return ind


def child(n: int, method: str, threads: int, device: str) -> dict[str, Any]:
    import resource

    import torch

    import manifex as mx

    torch.set_num_threads(threads)
    x = synthetic(n)
    # first calls of torch's and faiss's kernels happen outside the timing
    mx.neighbors.knn_graph(synthetic(2000, seed=2), K, method="exact", device=device, measure_recall=False)
    if method in ("pynndescent", "scanpy"):  # compile numba outside the timing (5,000 cells miss some)
        warm = synthetic(10_000, seed=1)
        if method == "scanpy":
            _scanpy_indices(warm, threads)
        else:
            mx.neighbors.knn_graph(warm, K, method="pynndescent", n_jobs=threads, measure_recall=False)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    params: dict[str, Any] = {}
    if method == "scanpy":
        ind = _scanpy_indices(x, threads)
    else:
        ind, info = mx.neighbors.knn_graph(
            x, K, method=method, device=device, n_jobs=threads, random_state=0, measure_recall=False
        )
        params = info["params"]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    recall = mx.neighbors.knn_recall(x, ind, n_sample=1000, random_state=0, device=device)
    return {
        "n_cells": n,
        "method": method,
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "recall": round(recall, 4),
        "recall_check_s": round(time.perf_counter() - t1, 2),
        "peak_rss_mb": round(peak),
        "rss_before_mb": round(base),
        "input_mb": round(x.nbytes / 2**20),
        "index": params.get("index", ""),
        "nprobe": params.get("nprobe", ""),
    }


def _run_child(n: int, method: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, "-m", "benchmarks.bench_knn", "--child", str(n), method]
    cmd += ["--threads", str(args.threads), "--device", args.device]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"n_cells": n, "method": method, "note": f"stopped after {args.timeout} s"}
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["?"]
        return {"n_cells": n, "method": method, "note": f"failed: {tail[0][:120]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write(rows: list[dict[str, Any]], cross: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import pandas as pd

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = {m: i for i, m in enumerate(["exact", "faiss", "pynndescent", "scanpy"])}
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["n_cells", "method"], key=lambda c: c.map(order) if c.name == "method" else c)
    df.to_csv(out / "knn.csv", index=False)
    if cross:
        pd.DataFrame(cross).to_csv(out / "knn_crossover.csv", index=False)
    lines = [
        "",
        f"Synthetic 30-cluster data, 50 dimensions, float32, K = {K}; {args.threads} thread(s) for torch, "
        f"numba, OpenMP/BLAS and faiss; device {args.device}. `seconds`: building the graph "
        "(faiss: training, adding, nprobe calibration on 1,000 cells and search; scanpy: "
        "`sc.pp.neighbors`, pynndescent + connectivities, numba compiled beforehand), wall clock; "
        "`cpu_s`: the process's CPU time for it (with one thread, the cost without other load on "
        "the shared cores). `recall`: "
        "`mx.neighbors.knn_recall` on 1,000 cells against exact search (its cost is `recall_check_s`). "
        "`peak_rss_mb`: peak resident memory of the process (data included; `rss_before_mb` is the peak "
        "before the call).",
        "",
        df.fillna("").to_markdown(index=False),
        "",
    ]
    if cross:
        lines += [
            '## Where `method="auto"` switches from exact search to faiss',
            "",
            pd.DataFrame(cross).fillna("").to_markdown(index=False),
            "",
        ]
    H.write_report(out / "knn.md", "kNN graph backends", lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    p.add_argument("--methods", nargs="+", default=["exact", "faiss", "pynndescent", "scanpy"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--exact-max", type=int, default=100_000)
    p.add_argument("--crossover", nargs="*", type=int, default=[5_000, 10_000, 20_000, 50_000])
    p.add_argument("--timeout", type=int, default=2400, help="seconds per (size, method)")
    p.add_argument("--out-dir", default=str(H.RESULTS))
    p.add_argument(
        "--update",
        action="store_true",
        help="keep the rows of an earlier knn.csv (and knn_crossover.csv) that this run does not redo",
    )
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.threads, args.device)))
        return

    cross: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    out = Path(args.out_dir)
    if args.update:
        import pandas as pd

        if (out / "knn.csv").exists():
            rows = pd.read_csv(out / "knn.csv").to_dict("records")
        if not args.crossover and (out / "knn_crossover.csv").exists():
            cross = pd.read_csv(out / "knn_crossover.csv").to_dict("records")

    def put(row: dict[str, Any]) -> None:
        for i, old in enumerate(rows):
            if (old["n_cells"], old["method"]) == (row["n_cells"], row["method"]):
                rows[i] = row
                return
        rows.append(row)

    for n in args.crossover:
        row: dict[str, Any] = {"n_cells": n}
        for m in ("exact", "faiss"):
            r = _run_child(n, m, args)
            row[f"{m}_s"] = r.get("seconds", r.get("note"))
            row[f"{m}_cpu_s"] = r.get("cpu_s")
            if m == "faiss":
                row["faiss_recall"] = r.get("recall")
        cross.append(row)
        print(row, flush=True)
        _write([], cross, args)

    exact_at: tuple[int, float, float] | None = None
    for n in args.sizes:
        for m in args.methods:
            if m == "exact" and n > args.exact_max:
                note = f"skipped (> {args.exact_max} cells)"
                if exact_at is not None:
                    f = (n / exact_at[0]) ** 2
                    note += f"; ≈ {exact_at[1] * f:,.0f} s ({exact_at[2] * f:,.0f} s CPU) extrapolated as n²"
                r = {"n_cells": n, "method": m, "note": note}
            else:
                r = _run_child(n, m, args)
                if m == "exact" and "seconds" in r:
                    exact_at = (n, float(r["seconds"]), float(r["cpu_s"]))
            put(r)
            print(r, flush=True)
            _write(rows, cross, args)


if __name__ == "__main__":
    main()
