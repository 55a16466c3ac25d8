"""The headline table, computed from the CSVs in ``benchmarks/results/`` (no benchmark is rerun).

    python -m benchmarks.summary            # rewrite summary.md and the README's table
    python -m benchmarks.summary --check    # exit 1 if either differs from what the CSVs give
    python -m benchmarks.suite --summary    # the same as the first line

One table, written in two places: ``benchmarks/results/summary.md`` (which the docs' benchmarks
page includes) and ``README.md`` between the lines ``<!-- results:begin -->`` and
``<!-- results:end -->``. Every figure in it is a mean (± sd over the seeds where one row holds
one dataset) of rows of one CSV. Each row names the CSV it comes from and the commit and date of
that run, read from the header of the report the benchmark wrote beside the CSV (the CSVs carry
no date of their own). Where two CSVs hold runs of the same claim (a rerun under another name),
the row comes from the newest run; the older ones are listed under the table as not shown.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import harness as H

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
COMMAND = "python -m benchmarks.summary"
#: the machine most runs used; other machines are named in the row's run column
MAIN_CPU = "AMD EPYC"

#: the report holding the commit and date of a CSV whose report has another name
REPORT_OF = {
    "tsimcne_usps.csv": "tsimcne.md",
    "tsimcne_mnist.csv": "tsimcne.md",
    "tsimcne_pbmc3k.csv": "tsimcne.md",
}

#: published figures that no CSV holds (the report beside the CSV quotes them): (values, source)
PUBLISHED = {
    "dlme_paper_mnist": ((0.976, 0.977), "Zang et al., ECCV 2022, MNIST: linear SVM, k-means ACC"),
}


@dataclass(frozen=True)
class Run:
    """One CSV of ``benchmarks/results/`` with the commit, date and machine of its run."""

    csv: str
    df: pd.DataFrame
    commit: str
    date: str  # "YYYY-MM-DD HH:MM" (or "YYYY-MM-DD"), "" when the report gives none
    cpu: str

    def label(self) -> str:
        where = "" if not self.cpu or self.cpu.startswith(MAIN_CPU) else f", {self.cpu}"
        when = ", ".join(x for x in (self.commit, self.date.split()[0] if self.date else "") if x)
        return f"`{self.csv}` ({when}{where})" if when or where else f"`{self.csv}`"


def _header(report: Path) -> tuple[str, str, str]:
    """(commit, date, cpu) from the first lines of a report written by :func:`harness.report_header`."""
    if not report.exists():
        return "", "", ""
    head = "\n".join(report.read_text().splitlines()[:8])
    commit = re.search(r"commit: (\w+)", head)
    date = re.search(r"date: (\d{4}-\d\d-\d\d(?: \d\d:\d\d)?)", head)
    cpu = re.search(r"machine: ([^,;\n]+)", head)
    name = cpu[1].replace("(R)", "").replace(" Processor", "").strip() if cpu else ""
    return (commit[1] if commit else ""), (date[1] if date else ""), name


class Results:
    """The CSVs of one results folder, read once, with the runs a table used and passed over."""

    def __init__(self, folder: Path = H.RESULTS) -> None:
        self.folder = Path(folder)
        self._runs: dict[str, Run | None] = {}
        self.superseded: dict[str, set[str]] = {}  # older CSV -> the newer CSVs shown instead

    def get(self, csv: str) -> Run | None:
        if csv not in self._runs:
            f = self.folder / csv
            if not f.exists():
                self._runs[csv] = None
            else:
                report = self.folder / REPORT_OF.get(csv, csv.removesuffix(".csv") + ".md")
                self._runs[csv] = Run(csv, pd.read_csv(f), *_header(report))
        return self._runs[csv]

    def newest(self, csvs: Sequence[str], col: str, **where) -> Run | None:
        """The newest of ``csvs`` holding a value of ``col`` in rows matching ``where``; the
        others that hold one are recorded as superseded by it."""
        holding = [r for r in map(self.get, csvs) if r is not None and _values(r.df, col, **where).size]
        if not holding:
            return None
        best = max(holding, key=lambda r: r.date)  # ISO dates sort as strings; ties: the first
        for r in holding:
            self.supersede(r.csv, best.csv)
        return best

    def supersede(self, older: str, newer: str) -> None:
        """Record ``older`` as an earlier run of a claim shown from ``newer`` (when it is earlier)."""
        a, b = self.get(older), self.get(newer)
        if a is not None and b is not None and a.date < b.date:
            self.superseded.setdefault(older, set()).add(newer)


def _values(df: pd.DataFrame, col: str, **where) -> np.ndarray:
    """The finite values of ``col`` in the rows of ``df`` matching ``where`` (a value or a tuple)."""
    if col not in df:
        return np.array([])
    m = np.ones(len(df), bool)
    for k, v in where.items():
        if k not in df:
            return np.array([])
        m &= df[k].astype(str).isin([v] if isinstance(v, str) else list(v)).to_numpy()
    vals = pd.to_numeric(df.loc[m, col], errors="coerce").to_numpy(float)
    return vals[np.isfinite(vals)]


def stat(run: Run | None, col: str, *, sd: bool = True, **where) -> str | None:
    """``mean ± sd`` of ``col`` over the matching rows (``mean`` alone for one row or ``sd=False``)."""
    if run is None:
        return None
    v = _values(run.df, col, **where)
    if v.size == 0:
        return None
    return f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if sd and v.size > 1 else "")


def n_seeds(run: Run | None, **where) -> int:
    if run is None or "seed" not in run.df:
        return 0
    return int(np.unique(_values(run.df, "seed", **where)).size)


def _seeds(n: int) -> str:
    return "one seed" if n == 1 else f"{n} seeds"


def minutes(run: Run | None, **where) -> str:
    v = _values(run.df, "seconds", **where) if run is not None else np.array([])
    return f"{v.mean() / 60:.0f} min" if v.size else ""


def bold_best(cells: list[list[str | None]]) -> list[str]:
    """Join each method's values with `` / ``, the best of each column (at the shown precision,
    ties included) in bold; ``cells[i][j]`` is method i on dataset j."""
    out = [[c or "–" for c in row] for row in cells]
    for j in range(len(cells[0])):
        vals = [float(row[j]) for row in cells if row[j] is not None]
        if len(vals) > 1:
            for i, row in enumerate(cells):
                if row[j] is not None and float(row[j]) == max(vals):
                    out[i][j] = f"**{row[j]}**"
    return [" / ".join(row) for row in out]


@dataclass(frozen=True)
class Row:
    task: str
    manifex: str
    baselines: str
    runs: tuple[Run, ...]


def _join(parts: Sequence[tuple[str, str | None]], sep: str = "; ") -> str:
    return sep.join(f"{label} {v}" for label, v in parts if v is not None)


# ---- the rows ---------------------------------------------------------------------------------

PANEL = (("pbmc3k", "pbmc3k"), ("paul15", "paul15"), ("pbmc4k", "10x PBMC 4k"), ("mnist", "MNIST test"),
         ("usps", "USPS"))  # fmt: skip
HELDOUT = (("human_kidney", "human kidney"), ("mouse_bladder", "mouse bladder"),
           ("worm_neuron", "worm neurons"), ("cite_cbmc", "CITE-seq CBMC"))  # fmt: skip
PEERS = (("DLME (manifex)", "DLME"), ("UMAP (scanpy)", "scanpy UMAP"), ("UMAP (TorchDR)", "TorchDR UMAP"))


def _maps(res: Results, csvs: Sequence[str], sets, col: str, what: str) -> Row | None:
    run = res.newest(csvs, col, dataset=sets[0][0], method=PEERS[0][0])
    if run is None:
        return None
    cells = [[stat(run, col, sd=False, dataset=ds, method=m) for ds, _ in sets] for m, _ in PEERS]
    if any(c is None for c in cells[0]):
        return None
    joined = bold_best(cells)
    names = " / ".join(label for _, label in sets)
    seeds = _seeds(n_seeds(run, method=PEERS[0][0]))
    return Row(
        f"{what} ({seeds}): {names}",
        f"{PEERS[0][1]} {joined[0]}",
        _join([(PEERS[i][1], joined[i]) for i in (1, 2)]),
        (run,),
    )


def _panel_rows(res: Results) -> list[Row]:
    # bench_dlme's maps of pbmc3k and paul15 beside scanpy's UMAP: the panel reran them
    res.supersede("dlme.csv", "panel.csv")
    return [
        r
        for r in (
            _maps(res, ("panel.csv",), PANEL, "mean6", "maps on the panel, mean of six quality metrics"),
            _maps(res, ("panel.csv",), PANEL, "knn_acc", "the same maps, 2-d kNN accuracy"),
            _maps(
                res,
                ("panel_heldout.csv",),
                HELDOUT,
                "mean6",
                "labelled sets the defaults were not chosen on, mean of six",
            ),
        )
        if r is not None
    ]


def _budget_row(res: Results) -> Row | None:
    b160, b320, panel = (
        res.get("dlme_budget_images.csv"),
        res.get("dlme_budget_mnist320.csv"),
        res.get("panel.csv"),
    )
    if b160 is None or panel is None:
        return None
    sets = (("mnist", "MNIST test"), ("usps", "USPS"))
    cells = [
        [stat(b160, "mean6", sd=False, dataset=ds, method="DLME epochs160") for ds, _ in sets],
        [stat(panel, "mean6", sd=False, dataset=ds, method="UMAP (TorchDR)") for ds, _ in sets],
    ]
    if any(c is None for row in cells for c in row):
        return None
    ours, theirs = bold_best(cells)
    s320 = stat(b320, "mean6", sd=False, dataset="mnist", method="DLME epochs320")
    task = (
        f"{' / '.join(label for _, label in sets)}, mean of six with more passes: `n_epochs=160` "
        f"({_seeds(n_seeds(b160, method='DLME epochs160'))})"
    )
    manifex = f"DLME {ours}"
    runs = [b160, panel]
    if s320 is not None:
        task += f", and `n_epochs=320` on MNIST ({_seeds(n_seeds(b320, method='DLME epochs320'))})"
        manifex += f"; {s320} at 320"
        runs.insert(1, b320)
    return Row(task, manifex, f"TorchDR UMAP {theirs} (the panel's run, default budget)", tuple(runs))


def _dlme_paper_row(res: Results) -> Row | None:
    run = res.get("dlme_paper.csv")
    if run is None:
        return None
    epochs = {
        int(m[1]): name
        for name in run.df["method"].astype(str).unique()
        if (m := re.fullmatch(r"DLME \(manifex\), (\d+) epochs", name))
    }
    if not epochs:
        return None
    n = max(epochs)
    umap = next((m for m in run.df["method"].astype(str).unique() if m.startswith("UMAP")), None)
    cols = ("svc_linear", "kmeans_acc")
    ours = " / ".join(stat(run, c, method=epochs[n]) or "–" for c in cols)
    pub, _ = PUBLISHED["dlme_paper_mnist"]
    theirs = [
        ("UMAP", " / ".join(stat(run, c, method=umap) or "–" for c in cols) if umap else None),
        ("the paper's DLME (best of a sweep)", " / ".join(f"{v:.3f}" for v in pub)),
    ]
    return Row(
        f"MNIST (60,000 training images), the DLME paper's protocol: linear SVM / k-means ACC "
        f"({n} epochs, {_seeds(n_seeds(run, method=epochs[n]))})",
        f"DLME {ours}",
        _join(theirs),
        (run,),
    )


def _tsimcne_rows(res: Results) -> list[Row]:
    rows = []
    for ds, label in (("usps", "USPS (9,298 digits)"), ("mnist", "MNIST test (10k)")):
        run = res.get(f"tsimcne_{ds}.csv")
        ours = stat(run, "knn_acc", method="t-SimCNE (cpu)", dataset=ds)
        if ours is None:
            continue
        rows.append(
            Row(
                f'{label}, 2-d kNN accuracy, `preset="cpu"` ({minutes(run, method="t-SimCNE (cpu)", dataset=ds)}'
                ", one thread)",
                f"t-SimCNE {ours}",
                _join(
                    [
                        ("UMAP on pixels", stat(run, "knn_acc", method="UMAP (pixels)", dataset=ds)),
                        ("t-SNE on pixels", stat(run, "knn_acc", method="t-SNE (pixels)", dataset=ds)),
                    ]
                ),
                (run,),
            )
        )
    run = res.get("tsimcne_pbmc3k.csv")
    if run is not None:
        methods = [m for m in run.df["method"].astype(str).unique() if m.startswith("t-SimCNE expression")]
        if methods:
            epochs = run.df.loc[run.df["method"] == methods[0], "epochs"].astype(str).iloc[0]
            when = ' at the `"cpu"` preset\'s earlier schedule' if "earlier" in methods[0] else ""
            rows.append(
                Row(
                    f"pbmc3k, expression variant{when} ({epochs} epochs), 2-d kNN accuracy",
                    f"t-SimCNE {stat(run, 'knn_acc', method=methods[0])}",
                    _join([("UMAP", stat(run, "knn_acc", method="UMAP (PCA)"))]),
                    (run,),
                )
            )
    return rows


def _n2d_rows(res: Results) -> list[Row]:
    rows = []
    for csv, method, budget in (
        ("n2d.csv", "N2D (default)", "default budget"),
        ("n2d_paper.csv", "N2D (paper)", '`preset="paper"` (1000 epochs'),
    ):
        run = res.get(csv)
        for ds, label in (("usps", "USPS"), ("mnist", "MNIST test")):
            ours = [stat(run, c, dataset=ds, method=method) for c in ("acc", "nmi")]
            if None in ours:
                continue
            pub = [stat(run, c, dataset=ds, method="N2D published (1000 epochs)") for c in ("acc", "nmi")]
            theirs = [("published", None if None in pub else " / ".join(pub))]  # type: ignore[arg-type]
            if method == "N2D (paper)":
                mins = minutes(run, dataset=ds, method=method)
                task = f"{label} clustering ACC / NMI, {budget}, {mins} per seed, {_seeds(n_seeds(run, dataset=ds, method=method))})"
                theirs.append(
                    (
                        "one mixture start (the reference's)",
                        stat(run, "acc", dataset=ds, method="N2D, mixture n_init=1 (reference)"),
                    )
                )
            else:
                task = f"{label} clustering ACC / NMI, {budget} ({_seeds(n_seeds(run, dataset=ds, method=method))})"
                leiden = [
                    stat(run, c, dataset=ds, method="Leiden (resolution tuned to k)") for c in ("acc", "nmi")
                ]
                theirs.append(("Leiden", None if None in leiden else " / ".join(leiden)))  # type: ignore[arg-type]
            rows.append(Row(task, f"N2D {' / '.join(ours)}", _join(theirs), (run,)))  # type: ignore[arg-type]
    run = res.get("n2d.csv")
    for ds in ("pbmc3k", "paul15"):
        ours = stat(run, "ari", dataset=ds, method="N2D (default)")
        if ours is None:
            continue
        rows.append(
            Row(
                f"{ds} clustering ARI ({_seeds(n_seeds(run, dataset=ds, method='N2D (default)'))})",
                f"N2D {ours}",
                _join(
                    [
                        ("k-means on PCs", stat(run, "ari", dataset=ds, method="k-means on 50 PCs")),
                        ("Leiden", stat(run, "ari", dataset=ds, method="Leiden (resolution tuned to k)")),
                    ]
                ),
                (run,),
            )
        )
    return rows


QUERY_RUNS = ("query_transfer.csv", "query.csv")  # label transfer and unknown calls, any order


def _query_rows(res: Results) -> list[Row]:
    rows = []
    for ds in ("pbmc3k", "paul15"):
        kw = {"dataset": ds, "experiment": "transfer"}
        latent = "kNN in DLME latent z"
        run = res.newest(QUERY_RUNS, "acc_no_unknown", method=latent, **kw)
        ours = stat(run, "acc_no_unknown", method=latent, **kw)
        if ours is None:
            continue
        rows.append(
            Row(
                f"{ds} label transfer to a held-out half ({_seeds(n_seeds(run, method=latent, **kw))})",
                f"kNN in DLME latent {ours}",
                _join(
                    [
                        (
                            "`sc.tl.ingest`",
                            stat(run, "acc_no_unknown", method="ingest label transfer (scanpy)", **kw),
                        ),
                        (
                            "kNN in PCA",
                            stat(run, "acc_no_unknown", method="kNN in reference PCA (50-d)", **kw),
                        ),
                    ]
                ),
                (run,),
            )
        )
    for ds in ("pbmc3k", "paul15"):
        kw = {"dataset": ds, "experiment": "unknown", "method": "kNN in DLME latent z"}
        run = res.newest(QUERY_RUNS, "removed_called_unknown", **kw)
        if run is None:
            continue
        df = run.df
        g = df[(df["dataset"] == ds) & (df["experiment"] == "unknown") & (df["method"] == kw["method"])]
        g = g[g["removed"].apply(lambda v: isinstance(v, str))]
        parts = [
            f"{r.removed} {r.removed_called_unknown:.2f} (known {r.known_acc:.2f})" for r in g.itertuples()
        ]
        dist = ", ".join(f"{v:.2f}" for v in g["removed_unknown_distance"].dropna())
        rows.append(
            Row(
                f"{ds}, a type removed from the reference (one per seed): share called unknown "
                "(accuracy on the known cells)",
                "; ".join(parts),
                f"embedding distance alone: {dist}" if dist else "",
                (run,),
            )
        )
    return rows


BLOCK0 = (
    "t-SimCNE backbone block 0, flattened (transform, block=0)",
    "t-SimCNE backbone block 0, flattened (transform, layer=0)",
)
ONESHOT_BASELINES = (
    ("DLME latent", "DLME latent z, 80-d (transform)"),
    ("PCA", "PCA of reference, 50-d"),
    ("ingest", "ingest onto reference UMAP (scanpy)"),
)


def _oneshot_rows(res: Results) -> list[Row]:
    rows = []
    for ds, label, ours_label, ours_method in (
        ("paul15", "paul15", "DLME latent", "DLME latent z, 80-d (transform)"),
        ("mnist", "MNIST", "t-SimCNE first block (`block=0`)", BLOCK0),
        ("usps", "USPS", "t-SimCNE first block (`block=0`)", BLOCK0),
    ):
        kw = {"dataset": ds, "experiment": "one-shot"}
        run = res.newest(("query_tsimcne.csv", "query.csv"), "one_shot_acc", method=ours_method, **kw)
        ours = stat(run, "one_shot_acc", method=ours_method, **kw)
        if ours is None:
            continue
        theirs = [
            (name, stat(run, "one_shot_acc", method=m, **kw))
            for name, m in ONESHOT_BASELINES
            if m != ours_method
        ]
        rows.append(
            Row(
                f"one-shot accuracy on held-out classes, {label} ({_seeds(n_seeds(run, method=ours_method, **kw))})",
                f"{ours_label} {ours}",
                _join(theirs),
                (run,),
            )
        )
    return rows


SECTIONS: tuple[Callable[[Results], list[Row] | Row | None], ...] = (
    _panel_rows,
    _budget_row,
    _dlme_paper_row,
    _tsimcne_rows,
    _n2d_rows,
    _query_rows,
    _oneshot_rows,
)


def rows(res: Results) -> list[Row]:
    """The headline rows whose CSVs are present, in order."""
    out: list[Row] = []
    for section in SECTIONS:
        got = section(res)
        out += got if isinstance(got, list) else ([got] if got is not None else [])
    return out


# ---- the text ---------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(folder: Path = H.RESULTS) -> str:
    """The generated block: a lead sentence, the table and the runs it comes from."""
    res = Results(folder)
    body = rows(res)
    lines = [
        f"Computed from `benchmarks/results/*.csv` by `{COMMAND}` (edit the code, not this table). "
        f"2-core {MAIN_CPU} CPU, no GPU, unless the run column names another machine; baselines ran "
        "in the same run on the same data unless the row says otherwise. Mean ± sd over seeds; "
        "rows over several datasets show means only, the best of each in bold.",
        "",
        "| task | manifex | baselines | run (CSV, commit, date) |",
        "|---|---|---|---|",
    ]
    for r in body:
        lines.append(
            "| "
            + " | ".join(
                _cell(x) for x in (r.task, r.manifex, r.baselines, "; ".join(x.label() for x in r.runs))
            )
            + " |"
        )
    shown = {x.csv for r in body for x in r.runs}
    older = {csv: newer for csv, newer in res.superseded.items() if csv not in shown}
    if older:
        lines += [
            "",
            "Older runs of the same claims, not shown: "
            + "; ".join(
                f"{res.get(csv).label()}, superseded by " + ", ".join(f"`{n}`" for n in sorted(newer))  # type: ignore[union-attr]
                for csv, newer in sorted(older.items())
            )
            + ".",
        ]
    partly = {csv: newer for csv, newer in res.superseded.items() if csv in shown}
    if partly:
        lines += [
            "",
            "Runs shown for some rows and superseded for others: "
            + "; ".join(
                f"`{csv}` (by " + ", ".join(f"`{n}`" for n in sorted(newer)) + ")"
                for csv, newer in sorted(partly.items())
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


def summary_text(folder: Path = H.RESULTS) -> str:
    """The whole of ``summary.md``."""
    return "# Headline results\n\n" + table(folder)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with what lies between its ``<!-- name:begin -->`` and ``<!-- name:end -->``
    lines replaced by ``block`` (set off by blank lines)."""
    begin, end = _markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start or text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"the file needs exactly one {begin} line followed by one {end} line")
    return text[: start + len(begin)] + "\n\n" + block + "\n" + text[stop:]


def readme_text(readme: str, block: str) -> str:
    """``readme`` with the text between its result markers replaced by ``block``."""
    return replace_block(readme, "results", block)


# ---- the docs' table of DLME's longer budgets ----------------------------------------------------

BUDGET_SETS = (
    ("mnist", "MNIST test", "epochs160"),
    ("mnist", "MNIST test, `n_epochs=320`", "epochs320"),
    ("usps", "USPS", "epochs160"),
    ("human_kidney", "human kidney", "epochs160"),
    ("mouse_bladder", "mouse bladder", "epochs160"),
    ("worm_neuron", "worm neurons", "epochs160"),
    ("cite_cbmc", "CITE-seq CBMC", "epochs160"),
)
BUDGET_RUNS = ("dlme_budget_images.csv", "dlme_budget_mnist320.csv", "dlme_budget_heldout.csv")
DEFAULT_RUNS = ("panel.csv", "panel_heldout.csv")


def budget_table(folder: Path = H.RESULTS) -> str:
    """The table of ``docs/benchmarks/dlme_defaults.md``: DLME at twice (four times) the default
    passes against the default and the better UMAP of the panel runs, per dataset."""
    res = Results(folder)
    lines = [
        "| data | default mean6 | more passes mean6 | kNN default → more | better peer mean6 (kNN) | wall time |",
        "|:--|--:|--:|--:|--:|--:|",
    ]
    used: list[Run] = []
    for ds, label, variant in BUDGET_SETS:
        method = f"DLME {variant}"
        more = res.newest(BUDGET_RUNS, "mean6", dataset=ds, method=method)
        base = res.newest(DEFAULT_RUNS, "mean6", dataset=ds, method=PEERS[0][0])
        if more is None or base is None:
            continue
        peers = {
            name: float(_values(base.df, "mean6", dataset=ds, method=m).mean())
            for m, name in (("UMAP (scanpy)", "scanpy"), ("UMAP (TorchDR)", "TorchDR"))
            if _values(base.df, "mean6", dataset=ds, method=m).size
        }
        if not peers:
            continue
        peer = max(peers, key=lambda k: round(peers[k], 3))
        peer_m = "UMAP (scanpy)" if peer == "scanpy" else "UMAP (TorchDR)"
        cells = [
            stat(base, "mean6", dataset=ds, method=PEERS[0][0]),
            stat(more, "mean6", dataset=ds, method=method),
            f"{peers[peer]:.3f}",
        ]
        means = [float(c.split()[0]) for c in cells]  # type: ignore[union-attr]
        cells = [f"**{c}**" if m == max(means) else c for c, m in zip(cells, means)]  # type: ignore[misc]
        t0 = _values(base.df, "seconds", dataset=ds, method=PEERS[0][0]).mean()
        t1 = _values(more.df, "seconds", dataset=ds, method=method).mean()
        n = n_seeds(more, dataset=ds, method=method)
        name = label if n == n_seeds(base, dataset=ds, method=PEERS[0][0]) else f"{label} ({_seeds(n)})"
        knn = " → ".join(
            stat(r, "knn_acc", sd=False, dataset=ds, method=m) or "–"
            for r, m in ((base, PEERS[0][0]), (more, method))
        )
        lines.append(
            f"| {name} | {cells[0]} | {cells[1]} | {knn} | {cells[2]} "
            f"({stat(base, 'knn_acc', sd=False, dataset=ds, method=peer_m)}), {peer} | {t1 / t0:.1f}× |"
        )
        used += [x for x in (more, base) if x not in used]
    lines += [
        "",
        "The best mean6 of each row in bold; wall time: the longer run's mean over the default's "
        "(on the machines its runs name). Computed by "
        f"`{COMMAND}` from: " + "; ".join(r.label() for r in used) + ".",
    ]
    return "\n".join(lines) + "\n"


DOCS = Path(__file__).resolve().parents[1] / "docs"
#: (file under docs/, marker name, the block's text from a results folder)
DOCS_BLOCKS: tuple[tuple[str, str, Callable[[Path], str]], ...] = (
    ("benchmarks/dlme_defaults.md", "results:dlme-budget", budget_table),
)


def write(
    folder: Path = H.RESULTS, readme: Path = README, docs: Path = DOCS, *, check: bool = False
) -> list[Path]:
    """Write (or with ``check``, only compare) ``summary.md``, the README's table and the docs'
    generated tables.

    Returns the files that differed from what the CSVs give (and were rewritten unless ``check``).
    """
    wanted = {
        Path(folder) / "summary.md": summary_text(folder),
        Path(readme): readme_text(Path(readme).read_text(), table(folder)),
    }
    for rel, name, make in DOCS_BLOCKS:
        f = Path(docs) / rel
        wanted[f] = replace_block(wanted.get(f, f.read_text()), name, make(folder))
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if not check:
        for p in stale:
            p.write_text(wanted[p])
    return stale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if a file is out of date")
    p.add_argument("--results", type=Path, default=H.RESULTS, help="the folder of CSVs and reports")
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--docs", type=Path, default=DOCS, help="the docs folder (generated tables)")
    args = p.parse_args(argv)
    stale = write(args.results, args.readme, args.docs, check=args.check)
    for f in stale:
        print(f"[summary] {'out of date' if args.check else 'wrote'}: {f}", flush=True)
    if not stale:
        print("[summary] summary.md, the README's table and the docs' tables are up to date", flush=True)
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
