"""The coverage check's joint PCA: how many components, and which ``min_coverage``.

    python -m benchmarks.bench_coverage_pcs [--n-pcs 15 30]

For each case a random half of the cells is the query and the other half, minus one class, the
reference (prepared as in :mod:`benchmarks.bench_query`: normalise, log1p, 2,000 HVGs, scale;
the query scaled with the reference's gene statistics). The coverage of every query cell is
computed as ``mx.tl.transfer_labels`` does (:func:`manifex.tl._coverage.expression_pair`,
:func:`~manifex.tl._coverage.reference_coverage` with 15 neighbours, ``random_state=0``) for
each number of joint PCs; the table gives the share of the removed class and of the known cells
below each threshold. Cases: the removed classes of ``bench_query`` (pbmc3k, paul15) and each
of the eight PBMC 4k clusters once (seed = cluster index), plus two splits with nothing removed.

Writes ``benchmarks/results/coverage_pcs.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import scanpy as sc

from manifex.tl._coverage import expression_pair, reference_coverage

from . import bench_query as Q
from . import harness as H

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8)


def cases() -> list[tuple[str, int, str | None]]:
    out: list[tuple[str, int, str | None]] = []
    for name in ("pbmc3k", "paul15"):
        out += [(name, seed, removed) for seed, removed in enumerate(Q.REMOVED[name])]
    out += [("pbmc4k", i, str(i + 1)) for i in range(8)]
    out += [(name, 0, None) for name in ("pbmc3k", "paul15", "pbmc4k")]
    return out


def run_case(name: str, seed: int, removed: str | None, n_pcs: list[int]) -> list[dict]:
    pool, _ = Q.load(name, seed)
    rng = np.random.default_rng(seed)
    half = np.zeros(pool.n_obs, bool)
    half[rng.choice(pool.n_obs, pool.n_obs // 2, replace=False)] = True
    labels = pool.obs["label"].astype(str).to_numpy()
    ref = Q.prep_reference(pool[half & (labels != removed)], name, seed)
    q = Q.prep_query(pool[~half], ref, name)
    xq, xr, _ = expression_pair(q, ref)
    rem = labels[~half] == removed
    rows = []
    for npc in n_pcs:
        cov, _ = reference_coverage(xq, xr, n_pcs=npc, n_neighbors=15, random_state=0)
        for t in THRESHOLDS:
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "removed": removed or "(none)",
                    "n_pcs": npc,
                    "min_coverage": t,
                    "removed_unknown": float((cov[rem] < t).mean()) if rem.any() else np.nan,
                    "known_unknown": float((cov[~rem] < t).mean()),
                }
            )
    return rows


def write(rows: list[dict], out: str) -> None:
    df = pd.DataFrame(rows)
    df.to_csv(out.replace(".md", ".csv"), index=False)

    def cell(g: pd.DataFrame) -> str:
        r, k = g["removed_unknown"].iloc[0], g["known_unknown"].iloc[0]
        return ("–" if np.isnan(r) else f"{r:.2f}") + f" / {100 * k:.1f} %"

    table = (
        df.groupby(["dataset", "removed", "n_pcs", "min_coverage"], sort=False)
        .apply(cell, include_groups=False)
        .unstack("min_coverage")
        .reset_index()
    )
    table.columns = [str(c) if not isinstance(c, float) else f"< {c}" for c in table.columns]
    H.write_report(
        out,
        "Coverage check: joint PCs and threshold",
        [
            "- each cell: share of the removed class / of the known cells with coverage below the "
            "threshold (a random half against the other half minus the removed class)",
            "",
            table.to_markdown(index=False),
            "",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-pcs", nargs="+", type=int, default=[15, 30])
    p.add_argument("--out", default=str(H.RESULTS / "coverage_pcs.md"))
    args = p.parse_args(argv)
    sc.settings.verbosity = 0
    rows: list[dict] = []
    for name, seed, removed in cases():
        rows += run_case(name, seed, removed, args.n_pcs)
        print(name, seed, removed, flush=True)
        write(rows, args.out)
    print(open(args.out).read())


if __name__ == "__main__":
    main()
