"""Wall time at small n: ``mx.tl.dlme`` against scanpy's neighbors + UMAP, each call in a fresh process.

    python -m benchmarks.bench_speed [--dataset pbmc3k] [--repeats 3] [--out benchmarks/results/speed.md]

The data is preprocessed once (:func:`manifex.datasets.preprocess_scrna`: normalize_total,
log1p, 2,000 HVGs, scale, 50 PCs) and written to a temporary ``.h5ad``. Every measurement then
runs in a new Python process that reads it and times one call: ``sc.pp.neighbors(adata,
n_neighbors=15)`` + ``sc.tl.umap(adata)`` (numba's compilation included, as a user meets it in
a new session) or ``mx.tl.dlme(adata)`` with its defaults (torch's first-call costs included).
Imports and reading the file are not timed. The two run alternately ``--repeats`` times; the
report gives every time and the medians, with the threads the processes saw.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from . import harness as H

CHILD = """
import json, sys, time
import anndata as ad, scanpy as sc, torch
import manifex as mx
adata = ad.read_h5ad(sys.argv[2])
t0 = time.perf_counter()
if sys.argv[1] == "scanpy":
    sc.pp.neighbors(adata, n_neighbors=15, random_state=0)
    sc.tl.umap(adata, random_state=0)
else:
    mx.tl.dlme(adata, progress=False)
sec = time.perf_counter() - t0
extra = {}
if sys.argv[1] == "dlme":
    extra = {"n_steps": int(adata.uns["dlme"]["n_steps"]), "device": adata.uns["dlme"]["device"]}
print(json.dumps({"seconds": sec, "torch_threads": torch.get_num_threads(), **extra}))
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="pbmc3k")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(H.RESULTS / "speed.md"))
    p.add_argument("--machine-note", default="")
    args = p.parse_args(argv)
    import manifex as mx

    adata = mx.datasets.preprocess_scrna(mx.datasets.load_scrna(args.dataset, H.data_dir()))
    times: dict[str, list[float]] = {"scanpy": [], "dlme": []}
    info: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "data.h5ad")
        adata.write_h5ad(path)
        for r in range(args.repeats):
            for method in ("scanpy", "dlme"):
                res = H.run_json(["-c", CHILD, method, path])
                times[method].append(res["seconds"])
                info = {**info, **{k: v for k, v in res.items() if k != "seconds"}}
                print(r, method, res, flush=True)
    med = {m: statistics.median(t) for m, t in times.items()}
    threads = H.thread_counts()
    lines = [
        "",
        f"Data: {args.dataset}, {adata.n_obs} cells × 50 PCs. Each time is one call in a fresh process "
        "(imports and reading the .h5ad not timed), the two methods alternating.",
        "",
        "| method | times (s) | median (s) |",
        "|---|---|---|",
        f"| scanpy `pp.neighbors` + `tl.umap` | {', '.join(f'{t:.1f}' for t in times['scanpy'])} "
        f"| {med['scanpy']:.1f} |",
        f"| `mx.tl.dlme` (defaults: {info.get('n_steps')} steps on {info.get('device')}) "
        f"| {', '.join(f'{t:.1f}' for t in times['dlme'])} | {med['dlme']:.1f} |",
        "",
        f"Ratio DLME / scanpy (medians): {med['dlme'] / med['scanpy']:.2f}. Threads: torch "
        f"{info.get('torch_threads')}, OMP_NUM_THREADS={threads['OMP_NUM_THREADS']}, "
        f"NUMBA_NUM_THREADS={threads['NUMBA_NUM_THREADS']}.",
        "",
    ]
    H.write_report(
        args.out, "Wall time at small n: DLME vs scanpy neighbors + UMAP", lines, args.machine_note
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
