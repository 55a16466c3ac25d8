"""DLME's late exaggeration (α = 4 from 75 % of the budget) against the paper's loss, 3 seeds.

    python -m benchmarks.studies.dlme_late_exaggeration

Reads the rows the runs below wrote (``results/*.csv``) and writes
``results/dlme_late_exaggeration_3seeds.md``: per set, the paper's loss (the defaults before
this change) against late exaggeration, beside the better peer (scanpy's or TorchDR's UMAP,
same PCs, same seeds). The rows come from

* the paper's loss: ``bench_panel --seeds 0 1 2`` (``panel.csv``; panel sets) and
  ``studies.dlme_defaults`` with ``default`` (``dlme_ablation2_heldout.csv`` seed 0,
  ``dlme_seeds_default.csv`` seeds 1–2, ``dlme_seeds_default_bladder.csv``; held-out sets);
* late exaggeration: ``studies.dlme_defaults --variants late4`` (``dlme_late_exaggeration.csv``
  seed 0, ``dlme_seeds_late4.csv`` seeds 1–2, ``dlme_seeds_late4_heldout.csv``);
* peers: ``panel.csv`` and ``panel_heldout.csv``.

Every DLME row is ``mx.tl.dlme(adata, random_state=seed, **variant)`` on the same PCs, scored by
the same harness.
"""

from __future__ import annotations

import pandas as pd

from .. import harness as H

R = H.RESULTS
COLS = ["knn_acc", "linear_acc", "acc", "nmi", "ari", "trust", "mean6"]
PAPER = "paper's loss (α = 1)"
LATE = "α = 4 from 75 % of the budget"


def _read(name: str, method: str | None = None) -> pd.DataFrame:
    d = pd.read_csv(R / f"{name}.csv")
    return d if method is None else d[d.method == method]


def _table(dlme: dict[str, pd.DataFrame], peers: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    rows = pd.concat([d.assign(method=label) for label, d in dlme.items()])
    t = H.summarize(rows[["dataset", "method", "seed", *COLS]].to_dict("records"))
    best = peers.groupby(["dataset", "method"])[["mean6", "knn_acc"]].mean().groupby("dataset").max()
    t["best peer mean6"] = t.dataset.map(best.mean6).round(3)
    t["best peer kNN"] = t.dataset.map(best.knn_acc).round(3)
    means = {k: float(d.groupby("dataset").mean6.mean().mean()) for k, d in dlme.items()}
    means["best peer"] = float(best.mean6.mean())
    return t.sort_values(["dataset", "method"]), means


def main() -> None:
    panel = _read("panel")
    sets = {
        "Panel (the sets the defaults are chosen on)": (
            {
                PAPER: panel[panel.method == "DLME (manifex)"],
                LATE: pd.concat([_read("dlme_late_exaggeration", "DLME late4"), _read("dlme_seeds_late4")]),
            },
            panel[panel.method != "DLME (manifex)"],
        ),
        "Held-out sets (no part in the choice)": (
            {
                PAPER: pd.concat(
                    [
                        _read("dlme_ablation2_heldout", "DLME default"),
                        _read("dlme_seeds_default"),
                        _read("dlme_seeds_default_bladder"),
                    ]
                ),
                LATE: _read("dlme_seeds_late4_heldout"),
            },
            _read("panel_heldout").query("method != 'DLME (manifex)'"),
        ),
    }
    lines = [""]
    for title, (dlme, peers) in sets.items():
        t, means = _table(dlme, peers)
        lines += [f"## {title}", "", t.to_markdown(index=False), ""]
        lines += [
            "Mean of mean6 over the sets: " + "; ".join(f"{k} {v:.3f}" for k, v in means.items()) + ".",
            "",
        ]
    lines += [
        "Machine: the 2-core AMD EPYC CPU, one torch and numba thread per run, other one-thread "
        "benchmarks beside (scores do not depend on it). See the module docstring of "
        "`benchmarks/studies/dlme_late_exaggeration.py` for the runs behind each row.",
        "",
    ]
    H.write_report(
        R / "dlme_late_exaggeration_3seeds.md",
        "DLME: late exaggeration against the paper's loss, 3 seeds",
        lines,
    )


if __name__ == "__main__":
    main()
