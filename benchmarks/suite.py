"""The regression suite: rerun the benchmarks behind the headline tables, then their summary.

    python -m benchmarks.suite                    # every entry (many hours on a CPU), then the summary
    python -m benchmarks.suite --only dlme n2d    # some entries
    python -m benchmarks.suite --list             # the entries and their commands, nothing run
    python -m benchmarks.suite --summary          # only rewrite the headline table from the CSVs

Each entry runs as its own process (``python -m benchmarks.<script> ...``), writes its report
and CSV into ``benchmarks/results/`` and its log into ``benchmarks/results/raw/`` (not kept
in git). The ``gpu`` entry runs only where CUDA is available. The one-off studies in
``benchmarks/studies/`` are not part of the suite. The headline table (``results/summary.md``
and the README's table) is computed from the CSVs by :mod:`benchmarks.summary` (mean ± sd over
the seeds present); ``--summary`` recomputes it without running anything.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import harness as H
from . import summary as S


@dataclass(frozen=True)
class Entry:
    """One benchmark run of the suite."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    about: str = ""
    hours_cpu: float = 0.0  # rough wall time on a 2-core CPU
    cuda_only: bool = False
    writes: tuple[str, ...] = field(default_factory=tuple)

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"benchmarks.{self.module}", *self.args]


SUITE: tuple[Entry, ...] = (
    Entry(
        "dlme",
        "bench_dlme",
        (),
        "DLME vs UMAP / t-SNE / PCA maps, pbmc3k and paul15 (dlme.md; the table's map rows are the panel's)",
        2.0,
        writes=("dlme.csv",),
    ),
    Entry(
        "panel",
        "bench_panel",
        (),
        "DLME vs scanpy and TorchDR UMAP, t-SNE, PCA on pbmc3k, paul15, PBMC 4k, MNIST, USPS, 3 seeds",
        2.0,
        writes=("panel.csv",),
    ),
    Entry(
        "panel_heldout",
        "bench_panel",
        (
            *("--datasets", "human_kidney", "mouse_bladder", "worm_neuron", "cite_cbmc"),
            *("--out", str(H.RESULTS / "panel_heldout.md")),
        ),
        "the same on four labelled sets the DLME defaults were not chosen on, 3 seeds",
        2.0,
        writes=("panel_heldout.csv",),
    ),
    Entry(
        "tsimcne",
        "bench_tsimcne",
        ("--datasets", "usps", "mnist", "pbmc3k", "--preset", "cpu"),
        "t-SimCNE vs UMAP / t-SNE on USPS and MNIST pixels, expression variant on pbmc3k",
        1.0,
        writes=("tsimcne_usps.csv", "tsimcne_mnist.csv", "tsimcne_pbmc3k.csv"),
    ),
    Entry(
        "n2d",
        "bench_n2d",
        (),
        "N2D vs k-means and Leiden, default budget, images and scRNA-seq",
        3.0,
        writes=("n2d.csv",),
    ),
    Entry(
        "n2d_paper",
        "bench_n2d",
        ("--datasets", "usps", "mnist", "--preset", "paper", "--out", str(H.RESULTS / "n2d_paper.md")),
        "N2D at the paper's budget (1000 epochs), USPS and MNIST, 3 seeds",
        7.0,
        writes=("n2d_paper.csv",),
    ),
    Entry(
        "query", "bench_query", (), "one-shot, label transfer and unknown calls", 4.0, writes=("query.csv",)
    ),
    Entry(
        "query_transfer",
        "bench_query",
        ("--skip-oneshot", "--out", str(H.RESULTS / "query_transfer.md")),
        "label transfer and unknown calls alone (the query entry's parts without one-shot)",
        1.0,
        writes=("query_transfer.csv",),
    ),
    Entry(
        "query_tsimcne",
        "bench_query",
        (
            *("--datasets", "mnist", "usps", "--skip-transfer", "--skip-unknown"),
            *("--tsimcne-epochs", "cpu", "--out", str(H.RESULTS / "query_tsimcne.md")),
        ),
        "one-shot on images with t-SimCNE's blocks",
        3.0,
        writes=("query_tsimcne.csv",),
    ),
    Entry("readme_figure", "readme_figure", (), "the README figure: DLME beside UMAP on pbmc3k", 0.2),
    Entry(
        "gpu",
        "bench_gpu",
        (),
        "timings and quality on a CUDA device",
        0.2,
        cuda_only=True,
        writes=("gpu.csv",),
    ),
)


# ---- running --------------------------------------------------------------------------------


def run(entries: list[Entry], log_dir: Path) -> dict[str, int]:
    log_dir.mkdir(parents=True, exist_ok=True)
    codes: dict[str, int] = {}
    for e in entries:
        log = log_dir / f"{e.name}.log"
        print(f"[suite] {e.name}: {' '.join(e.command()[1:])}  (log: {log})", flush=True)
        t0 = time.perf_counter()
        with log.open("w") as f:
            codes[e.name] = subprocess.call(e.command(), stdout=f, stderr=subprocess.STDOUT)
        print(f"[suite] {e.name}: exit {codes[e.name]} after {time.perf_counter() - t0:.0f} s", flush=True)
    return codes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=[e.name for e in SUITE], help="run only these entries")
    p.add_argument("--list", action="store_true", help="print the entries and their commands")
    p.add_argument(
        "--summary",
        "--summary-only",
        action="store_true",
        help="run nothing: only rewrite results/summary.md and the README's table from the CSVs",
    )
    args = p.parse_args(argv)
    failed: list[str] = []
    if args.list:
        for e in SUITE:
            gpu = " [CUDA only]" if e.cuda_only else ""
            print(
                f"{e.name:14s} ~{e.hours_cpu:g} h{gpu}  {e.about}\n    python -m benchmarks.{e.module} {' '.join(e.args)}"
            )
        return 0
    if not args.summary:
        import torch

        chosen = [e for e in SUITE if (args.only is None or e.name in args.only)]
        skipped = [e.name for e in chosen if e.cuda_only and not torch.cuda.is_available()]
        if skipped:
            print(f"[suite] no CUDA device: skipping {', '.join(skipped)}", flush=True)
        codes = run([e for e in chosen if e.name not in skipped], H.RESULTS / "raw")
        failed = [n for n, c in codes.items() if c != 0]
        if failed:
            print(f"[suite] failed: {', '.join(failed)} (see results/raw/<name>.log)", flush=True)
    stale = S.write()
    print(f"[suite] headline table: {', '.join(map(str, stale)) or 'up to date'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
