"""The regression suite: rerun the benchmarks behind the headline tables, then their summary.

    python -m benchmarks.suite                    # every entry (many hours on a CPU), then the summary
    python -m benchmarks.suite --only dlme n2d    # some entries
    python -m benchmarks.suite --list             # the entries and their commands, nothing run
    python -m benchmarks.suite --summary          # only rewrite results/summary.md from the CSVs

Each entry runs as its own process (``python -m benchmarks.<script> ...``), writes its report
and CSV into ``benchmarks/results/`` and its log into ``benchmarks/results/raw/`` (not kept
in git). The ``gpu`` entry runs only where CUDA is available. The one-off studies in
``benchmarks/studies/`` are not part of the suite. ``results/summary.md`` is the headline
table, computed from the CSVs (mean ± sd over the seeds present).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import harness as H


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
        "DLME vs UMAP / t-SNE / PCA maps, pbmc3k and paul15",
        2.0,
        writes=("dlme.csv",),
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


# ---- the headline table ------------------------------------------------------------------------


def _stat(df: pd.DataFrame, col: str, **where: str | tuple[str, ...]) -> str | None:
    """``mean ± sd`` (``mean`` for one row) of ``col`` over the rows matching ``where``."""
    m = np.ones(len(df), bool)
    for k, v in where.items():
        if k not in df:
            return None
        m &= df[k].astype(str).isin([v] if isinstance(v, str) else list(v)).to_numpy()
    vals = pd.to_numeric(df.loc[m, col], errors="coerce").dropna() if col in df else pd.Series(dtype=float)
    if vals.empty:
        return None
    return f"{vals.mean():.3f}" + (f" ± {vals.std(ddof=1):.3f}" if len(vals) > 1 else "")


def _pair(df: pd.DataFrame, cols: tuple[str, ...], **where) -> str | None:
    parts = [_stat(df, c, **where) for c in cols]
    return None if any(p is None for p in parts) else " / ".join(parts)  # type: ignore[arg-type]


def _minutes(df: pd.DataFrame, **where) -> str:
    s = _stat(df, "seconds", **where)
    return f", {float(s.split()[0]) / 60:.0f} min" if s else ""


_USED: set[str] = set()


def _csv(name: str, results: Path) -> pd.DataFrame:
    f = results / name
    if not f.exists():
        return pd.DataFrame()
    _USED.add(name)
    return pd.read_csv(f)


def _provenance(csv: str, results: Path) -> str:
    """``commit …, date`` from the header of the report written beside ``csv``."""
    import re

    reports = [results / csv.replace(".csv", ".md"), results / (csv.split("_")[0] + ".md")]
    text = next((md.read_text() for md in reports if md.exists()), "")
    commit, date = re.search(r"commit: (\w+)", text), re.search(r"date: ([\d-]+)", text)
    return ", ".join(x for x in (commit and f"commit {commit[1]}", date and date[1]) if x)


def summary_rows(results: Path = H.RESULTS) -> list[tuple[str, str, str]]:
    """(task, manifex, baselines) of each headline row whose CSV is present."""
    rows: list[tuple[str, str, str]] = []

    def add(task: str, ours: tuple[str, str | None], theirs: list[tuple[str, str | None]]) -> None:
        if ours[1] is None:
            return
        base = "; ".join(f"{label} {v}" for label, v in theirs if v is not None)
        rows.append((task, f"{ours[0]} {ours[1]}", base))

    d = _csv("dlme.csv", results)
    for ds, col, what in (
        ("pbmc3k", "knn_acc", "2-d kNN accuracy"),
        ("pbmc3k", "mean", "mean of six quality metrics"),
        ("paul15", "mean", "mean of six quality metrics"),
    ):
        add(
            f"{ds} map, {what}",
            ("DLME", _stat(d, col, dataset=ds, method="DLME (manifex)")),
            [("UMAP", _stat(d, col, dataset=ds, method="UMAP (scanpy)"))],
        )
    for ds, label in (("usps", "USPS (9,298 digits)"), ("mnist", "MNIST test (10k)")):
        t = _csv(f"tsimcne_{ds}.csv", results)
        ts = "t-SimCNE (cpu)"
        add(
            f'{label}, 2-d kNN accuracy, `preset="cpu"`{_minutes(t, method=ts)}',
            ("t-SimCNE", _stat(t, "knn_acc", method=ts)),
            [
                ("UMAP on pixels", _stat(t, "knn_acc", method="UMAP (pixels)")),
                ("t-SNE", _stat(t, "knn_acc", method="t-SNE (pixels)")),
            ],
        )
    t = _csv("tsimcne_pbmc3k.csv", results)
    add(
        "pbmc3k, expression variant, 2-d kNN accuracy",
        ("t-SimCNE", _stat(t, "knn_acc", method="t-SimCNE expression (cpu)")),
        [("UMAP", _stat(t, "knn_acc", method="UMAP (PCA)"))],
    )
    for csv, preset, budget in (
        ("n2d.csv", "N2D (default)", "default budget"),
        ("n2d_paper.csv", "N2D (paper)", '`preset="paper"` (1000 epochs)'),
    ):
        n = _csv(csv, results)
        for ds, label in (("usps", "USPS"), ("mnist", "MNIST test")):
            theirs = [
                ("published", _pair(n, ("acc", "nmi"), dataset=ds, method="N2D published (1000 epochs)"))
            ]
            if preset == "N2D (paper)":
                theirs.append(
                    (
                        "one mixture start (the reference's)",
                        _stat(n, "acc", dataset=ds, method="N2D, mixture n_init=1 (reference)"),
                    )
                )
            else:
                theirs.append(
                    ("Leiden", _pair(n, ("acc", "nmi"), dataset=ds, method="Leiden (resolution tuned to k)"))
                )
            add(
                f"{label} clustering ACC / NMI, {budget}",
                ("N2D", _pair(n, ("acc", "nmi"), dataset=ds, method=preset)),
                theirs,
            )
    n = _csv("n2d.csv", results)
    for ds in ("pbmc3k", "paul15"):
        add(
            f"{ds} clustering ARI",
            ("N2D", _stat(n, "ari", dataset=ds, method="N2D (default)")),
            [
                ("k-means on PCs", _stat(n, "ari", dataset=ds, method="k-means on 50 PCs")),
                ("Leiden", _stat(n, "ari", dataset=ds, method="Leiden (resolution tuned to k)")),
            ],
        )
    q = _csv("query.csv", results)
    for ds in ("pbmc3k", "paul15"):
        kw = {"dataset": ds, "experiment": "transfer"}
        add(
            f"{ds} label transfer to a held-out half",
            ("kNN in DLME latent", _stat(q, "acc_no_unknown", method="kNN in DLME latent z", **kw)),
            [
                ("`sc.tl.ingest`", _stat(q, "acc_no_unknown", method="ingest label transfer (scanpy)", **kw)),
                ("kNN in PCA", _stat(q, "acc_no_unknown", method="kNN in reference PCA (50-d)", **kw)),
            ],
        )
    if "experiment" in q:
        u = q[(q["experiment"] == "unknown") & (q["method"] == "kNN in DLME latent z")]
        for ds, g in u.groupby("dataset", sort=False):
            parts = [
                f"{r.removed} {r.removed_called_unknown:.2f} (known {r.known_acc:.2f})"
                for r in g.itertuples()
                if isinstance(r.removed, str)
            ]
            dist = ", ".join(f"{v:.2f}" for v in g["removed_unknown_distance"].dropna())
            if parts:
                rows.append(
                    (
                        f"{ds}, a type removed from the reference: share called unknown (known cells' accuracy)",
                        "; ".join(parts),
                        f"embedding distance alone: {dist}" if dist else "",
                    )
                )
    kw = {"dataset": "paul15", "experiment": "one-shot"}
    add(
        "one-shot accuracy on held-out classes, paul15",
        ("DLME latent", _stat(q, "one_shot_acc", method="DLME latent z, 80-d (transform)", **kw)),
        [
            ("PCA", _stat(q, "one_shot_acc", method="PCA of reference, 50-d", **kw)),
            ("ingest", _stat(q, "one_shot_acc", method="ingest onto reference UMAP (scanpy)", **kw)),
        ],
    )
    qt = _csv("query_tsimcne.csv", results)
    block0 = (
        "t-SimCNE backbone block 0, flattened (transform, block=0)",
        "t-SimCNE backbone block 0, flattened (transform, layer=0)",
    )
    for ds, label in (("mnist", "MNIST"), ("usps", "USPS")):
        add(
            f"one-shot accuracy on held-out classes, {label}",
            ("t-SimCNE first block (`block=0`)", _stat(qt, "one_shot_acc", dataset=ds, method=block0)),
            [
                (
                    "DLME latent",
                    _stat(qt, "one_shot_acc", dataset=ds, method="DLME latent z, 80-d (transform)"),
                ),
                ("PCA", _stat(qt, "one_shot_acc", dataset=ds, method="PCA of reference, 50-d")),
                (
                    "ingest",
                    _stat(qt, "one_shot_acc", dataset=ds, method="ingest onto reference UMAP (scanpy)"),
                ),
            ],
        )
    return rows


def write_summary(results: Path = H.RESULTS) -> Path:
    """Write ``summary.md``: the headline table from the suite's CSVs, with their dates."""
    _USED.clear()
    rows = summary_rows(results)
    table = pd.DataFrame(rows, columns=["task", "manifex", "baselines in the same run"])
    sources = sorted(_USED)
    lines = [
        "",
        "Mean ± sd over the seeds in each CSV (one value: one seed). Each row's numbers, machine and",
        "commit are in the report of its benchmark (`benchmarks/results/<name>.md`).",
        "",
        table.to_markdown(index=False),
        "",
        "Computed by `python -m benchmarks.suite --summary` from: "
        + ", ".join(f"`{s}` ({_provenance(s, results)})" for s in sources)
        + ".",
        "",
    ]
    out = results / "summary.md"
    out.write_text("\n".join(["# Headline results", *lines]))
    return out


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
    p.add_argument("--summary", action="store_true", help="only rewrite results/summary.md")
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
    print(f"[suite] wrote {write_summary()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
