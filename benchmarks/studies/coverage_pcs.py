"""The coverage check's joint PCA: how many components, and which ``min_coverage``.

    python -m benchmarks.studies.coverage_pcs [--n-pcs 15 30]

For each case a random half of the cells is the query and the other half, minus one class, the
reference (prepared as in :mod:`benchmarks.bench_query`: normalise, log1p, 2,000 HVGs, scale;
the query scaled with the reference's gene statistics). The coverage of every query cell is
computed as ``mx.tl.transfer_labels`` computes it (15 neighbours, ``random_state=0``; the
same steps are written out below as :func:`expression_pair` and :func:`reference_coverage`, with
the number of joint PCs as a parameter) for each number of joint PCs; the table gives the share of the removed class and of the known cells
below each threshold. Cases: the removed classes of ``bench_query`` (pbmc3k, paul15) and each
of the eight PBMC 4k clusters once (seed = cluster index), plus two splits with nothing removed.

Writes ``benchmarks/results/coverage_pcs.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import scanpy as sc

from .. import bench_query as Q
from .. import harness as H

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8)
CLIP = 10.0  # z-scores are clipped here, as sc.pp.scale(max_value=10) does
EXPECTED_REF_NEIGHBOURS, MAX_NEIGHBOURS = 5.0, 200


def _dense(adata, genes) -> np.ndarray:
    x = adata[:, genes].X
    return (x.toarray() if hasattr(x, "toarray") else np.asarray(x)).astype(np.float32, copy=False)


def expression_pair(query, reference) -> tuple[np.ndarray, np.ndarray]:
    """Query and reference on the reference's genes, in the reference's standard units.

    The pairs of this study have a reference scaled by ``sc.pp.scale`` (it records each gene's
    ``mean`` / ``std``) and a log-normalised query: the query is scaled with those statistics
    (clipped as the reference is), then both are centred and scaled by the reference's own
    mean and standard deviation and clipped at ±10.
    """
    genes = reference.var_names[reference.var_names.isin(query.var_names)]
    hv = reference.var["highly_variable"].reindex(genes).fillna(False).to_numpy(bool)
    genes = genes[hv] if hv.sum() >= 50 else genes
    xr, xq = _dense(reference, genes), _dense(query, genes)
    if not (xr.min() < 0 <= xq.min()):
        raise ValueError("expected a scaled reference and an unscaled query")
    lim = float(np.abs(xr).max())
    mean = reference.var["mean"].reindex(genes).to_numpy(np.float32)
    std = reference.var["std"].reindex(genes).to_numpy(np.float32)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
    mean = np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)
    xq = np.clip((xq - mean[None, :]) / std[None, :], -lim, lim).astype(np.float32)
    mu, sd = xr.mean(0), xr.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0).astype(np.float32)
    return np.clip((xq - mu) / sd, -CLIP, CLIP), np.clip((xr - mu) / sd, -CLIP, CLIP)


def reference_coverage(
    xq: np.ndarray, xr: np.ndarray, *, n_pcs: int, n_neighbors: int = 15, random_state: int = 0
) -> np.ndarray:
    """Coverage of each query cell in a joint PCA of both (the steps of ``transfer_labels``).

    PCA of the stacked rows; each cell's ``K = max(n_neighbors, ⌈5 / p₀⌉)`` (at most 200)
    nearest other cells, ``p₀ = n_ref / (n − 1)``; the share of reference cells among them,
    averaged over the cell's neighbours, divided by ``p₀``.
    """
    from sklearn.decomposition import PCA

    nr, n = xr.shape[0], xr.shape[0] + xq.shape[0]
    p0 = nr / (n - 1)
    k = int(min(max(n_neighbors, np.ceil(EXPECTED_REF_NEIGHBOURS / max(p0, 1e-12))), MAX_NEIGHBOURS, n - 1))
    x = np.vstack([xr, xq]).astype(np.float32, copy=False)
    n_comp = int(min(n_pcs, x.shape[1], n - 1))
    if 1 <= n_comp < x.shape[1]:
        solver = "randomized" if min(x.shape) > 4 * n_comp else "full"
        x = PCA(n_comp, svd_solver=solver, random_state=random_state).fit_transform(x)
    idx = H.knn_indices(x, k, random_state=random_state)
    is_ref = np.zeros(n, dtype=np.float64)
    is_ref[:nr] = 1.0
    share = is_ref[idx].mean(1)
    return (share[idx].mean(1)[nr:] / p0).astype(np.float32)


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
    xq, xr = expression_pair(q, ref)
    rem = labels[~half] == removed
    rows = []
    for npc in n_pcs:
        cov = reference_coverage(xq, xr, n_pcs=npc, n_neighbors=15, random_state=0)
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
