"""Query mapping: one-shot learning of held-out classes, label transfer, unknown-class calls.

    python -m benchmarks.bench_query [--datasets pbmc3k paul15 mnist usps] [--seeds 0 1 2]
                                     [--n-steps 600] [--skip-transfer] [--skip-unknown]

Three experiments, all through the public API (``mx.tl.dlme(..., return_model=True)``,
``mx.tl.embed``, ``mx.tl.transfer_labels``, ``mx.metrics.one_shot_accuracy``):

1. **One-shot on held-out classes** (pbmc3k, paul15, MNIST, USPS). Per seed, classes are drawn
   with :func:`manifex.metrics.holdout_classes`; the reference (preprocessing, HVGs, scaling,
   PCA, DLME) sees only the other classes. The held-out cells are prepared with the reference's
   genes and scaling and embedded with ``model.transform`` via ``mx.tl.embed``; N-way 1-shot
   episodes (N = number of held-out classes, 15 queries per class, nearest prototype) are run
   in: DLME's 2-d map, DLME's 80-d latent ``z``, the reference's PCA (50-d and 2-d) and
   scanpy's ``sc.tl.ingest`` onto a UMAP of the reference.
2. **Label transfer** to a random held-out half of pbmc3k and paul15 (reference = the other
   half): kNN vote / prototypes in DLME's map and latent, against ``sc.tl.ingest``'s label
   transfer and kNN in PCA space.
3. **Unknown class**: one class is removed from the reference half (a different one per seed);
   the share of its query cells called "unknown" (by the embedding-distance check, the
   expression-coverage check, and both) and the accuracy on the other query cells (unknown
   calls count as errors) are reported.

Writes ``benchmarks/results/query.md`` and ``query.csv``. The experiments can run as separate
processes (``--skip-*``, ``--out``) and be merged with ``--merge part1.csv part2.csv ...``.
"""

from __future__ import annotations

import argparse
import ast
import time
from typing import Any

import numpy as np
import pandas as pd
import scanpy as sc
import torch

import manifex as mx

from . import harness as H

SCRNA = {"pbmc3k", "paul15", "pbmc4k"}
N_HOLDOUT = {"pbmc3k": 3, "paul15": 3, "mnist": 5, "usps": 5}
REMOVED = {"pbmc3k": ["B cells", "NK cells", "CD14+ Monocytes"], "paul15": ["Baso", "Ery", "Mo"]}
IMG_REF_CELLS = 6000
IMG_QUERY_PER_CLASS = 300


# ---- data ------------------------------------------------------------------------------------
def load(name: str, seed: int) -> tuple[Any, Any]:
    """(reference pool, query pool) with ``obs['label']``: counts for scRNA, pixels for images."""
    if name in SCRNA:
        a = mx.datasets.load_scrna(name, H.data_dir())
        sc.pp.filter_genes(a, min_cells=3)
        return a, None
    tr = mx.datasets.load_images(name, H.data_dir(), split="train")
    te = mx.datasets.load_images(name, H.data_dir(), split="test")
    return tr, te


def prep_reference(a, name: str, seed: int):
    """Reference preprocessing: scRNA normalize/log1p/HVG/scale/PCA; images PCA of pixels."""
    a = a.copy()
    if name in SCRNA:
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
        sc.pp.highly_variable_genes(a, n_top_genes=2000, subset=True)
        sc.pp.scale(a, max_value=10)
    sc.pp.pca(a, n_comps=50, random_state=seed)
    return a


def prep_query(q, ref, name: str):
    """Query preprocessing up to (not including) the reference's scaling, genes as the reference."""
    q = q.copy()
    if name in SCRNA:
        sc.pp.normalize_total(q, target_sum=1e4)
        sc.pp.log1p(q)
    return q[:, ref.var_names].copy()


def embed_kwargs(ref, name: str) -> dict[str, Any]:
    """``mx.tl.embed`` arguments of a query of ``name``: scRNA-seq queries get the reference's
    scaling (``sc.pp.scale``'s gene means and sds, clipped at 10 as the reference was)."""
    return {"reference": ref, "scale_query": name in SCRNA, "max_value": 10 if name in SCRNA else None}


def pca_of_query(q, ref, name: str, model=None) -> np.ndarray:
    """The query on the reference's PCs, centred on the reference's means (a baseline space).

    ``mx.tl.embed(..., space="input")`` of a model trained on the reference's ``X_pca``: the
    query scaled like the reference and projected on its loadings, without the network. Without
    ``model`` a one-step DLME of the reference is fitted for it (the input space does not depend
    on the training).
    """
    if model is None:
        model = mx.tl.dlme(
            ref.copy(), n_steps=1, random_state=0, progress=False, device="cpu", return_model=True
        )
    out = mx.tl.embed(
        q, model, space="input", key_added="pca_of_reference", copy=True, **embed_kwargs(ref, name)
    )
    return out.obsm["X_pca_of_reference"]


def fit_dlme(ref, seed: int, dlme: dict[str, Any]):
    """The reference's DLME fit with the run's keyword arguments (``n_steps``, ``--dlme-kwargs``)."""
    return H.timed(
        lambda: mx.tl.dlme(ref, random_state=seed, progress=False, device="cpu", return_model=True, **dlme)
    )


def embed_query(q, ref, model, name: str):
    kw = embed_kwargs(ref, name)
    _, sec = H.timed(lambda: mx.tl.embed(q, model, **kw))
    mx.tl.embed(q, model, space="latent", **kw)
    return sec


def ingest(
    q, ref, name: str, seed: int, labels: bool = False, xp: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """scanpy's neighbors + UMAP on the reference, ``sc.tl.ingest`` of the query.

    ``sc.tl.ingest`` places a query of genes scaled like the reference on the reference's PCs
    after centring it on its *own* mean. That representation is handed to it directly: the query
    on the reference's PCs (``xp``, :func:`pca_of_query`) centred on its own mean, the same
    numbers (ingest then uses the query's ``obsm["X_pca"]`` as the reference's ``use_rep``).
    """
    r = ref.copy()
    qq = q.copy()
    xp = pca_of_query(q, ref, name) if xp is None else np.asarray(xp)
    qq.obsm["X_pca"] = xp - xp.mean(0)
    t0 = time.perf_counter()
    sc.pp.neighbors(r, n_neighbors=15, use_rep="X_pca", random_state=seed)
    sc.tl.umap(r, random_state=seed)
    sc.tl.ingest(qq, r, obs="label" if labels else None, embedding_method="umap")
    sec = time.perf_counter() - t0
    return qq.obsm["X_umap"], (qq.obs["label"].astype(str).to_numpy() if labels else None), sec


# ---- experiments -----------------------------------------------------------------------------
#: the short t-SimCNE schedule of the query tables (``--tsimcne-epochs short``)
SHORT_TSIMCNE = (60, 5, 60)


def fit_tsimcne(images: np.ndarray, seed: int, epochs: tuple[int, int, int] | None):
    """t-SimCNE on the reference images: a short schedule (60, 5, 60 epochs unless ``epochs``
    says otherwise; batch 256, stage 3 at the full lr), digits augmentations."""
    model = mx.models.TSimCNE(
        n_epochs=epochs or SHORT_TSIMCNE,
        batch_size=256,
        finetune_lr_factor=1.0,
        augment="digits",
        device="cpu",
        random_state=seed,
        progress=False,
    )
    return H.timed(lambda: model.fit(images))


def oneshot_split(name: str, seed: int) -> tuple[Any, Any, list[str]]:
    """(reference pool, held-out query pool, held-out classes) of one seed's one-shot split.

    scRNA-seq: the held-out classes' cells are the query. Images: up to ``IMG_REF_CELLS``
    training images of the kept classes are the reference, ``IMG_QUERY_PER_CLASS`` test images
    of each held-out class the query.
    """
    pool, test_pool = load(name, seed)
    labels = pool.obs["label"].astype(str).to_numpy()
    train_mask, held = mx.metrics.holdout_classes(
        labels, n_holdout=N_HOLDOUT[name], min_size=20, random_state=seed
    )
    rng = np.random.default_rng(seed)
    if name in SCRNA:
        return pool[train_mask], pool[~train_mask], list(held)
    idx = np.flatnonzero(train_mask)
    ref_pool = pool[np.sort(rng.choice(idx, min(IMG_REF_CELLS, idx.size), replace=False))]
    tl = test_pool.obs["label"].astype(str).to_numpy()
    sel = np.concatenate(
        [
            rng.choice(np.flatnonzero(tl == c), min(IMG_QUERY_PER_CLASS, (tl == c).sum()), replace=False)
            for c in held
        ]
    )
    return ref_pool, test_pool[np.sort(sel)], list(held)


def one_shot(
    name: str,
    seed: int,
    dlme: dict[str, Any],
    n_episodes: int,
    tsimcne: bool = False,
    tsimcne_epochs: tuple[int, int, int] | None = None,
) -> list[dict[str, Any]]:
    ref_pool, q_pool, held = oneshot_split(name, seed)
    ref = prep_reference(ref_pool, name, seed)
    model, sec_fit = fit_dlme(ref, seed, dlme)
    q = prep_query(q_pool, ref, name)
    sec_emb = embed_query(q, ref, model, name)
    ql = q.obs["label"].astype(str).to_numpy()
    xp = pca_of_query(q, ref, name, model)
    emb_i, _, sec_i = ingest(q, ref, name, seed, xp=xp)
    spaces = {
        "DLME 2-d map (transform)": (q.obsm["X_dlme"], sec_fit + sec_emb),
        "DLME latent z, 80-d (transform)": (q.obsm["X_dlme_latent"], sec_fit + sec_emb),
        "PCA of reference, 50-d": (xp, np.nan),
        "PCA of reference, 2-d": (xp[:, :2], np.nan),
        "ingest onto reference UMAP (scanpy)": (emb_i, sec_i),
    }
    if tsimcne and name not in SCRNA:
        ts, sec_ts = fit_tsimcne(ref_pool.obsm["image"], seed, tsimcne_epochs)
        qi = q_pool.obsm["image"]
        spaces["t-SimCNE 2-d map (transform)"] = (ts.transform(qi), sec_ts)
        spaces["t-SimCNE backbone features (transform)"] = (ts.transform(qi, space="latent"), sec_ts)
        spaces["t-SimCNE backbone block 0, flattened (transform, block=0)"] = (
            ts.transform(qi, space="latent", block=0),
            sec_ts,
        )
    rows = []
    for method, (emb, sec) in spaces.items():
        res = mx.metrics.one_shot_accuracy(
            emb, ql, k_shot=1, n_query=15, n_episodes=n_episodes, random_state=seed
        )
        rows.append(
            {
                "dataset": name,
                "method": method,
                "seed": seed,
                "one_shot_acc": res["mean"],
                "episode_sd": res["sd"],
                "n_way": res["n_way"],
                "chance": res["chance"],
                "seconds": sec,
                "held_out": "|".join(held),
                "n_reference": ref.n_obs,
                "n_query": q.n_obs,
            }
        )
        print(rows[-1], flush=True)
    return rows


def _acc(pred: np.ndarray, truth: np.ndarray) -> float:
    return float((np.asarray(pred).astype(str) == np.asarray(truth).astype(str)).mean())


def transfer(name: str, seed: int, dlme: dict[str, Any], removed: str | None = None) -> list[dict[str, Any]]:
    pool, _ = load(name, seed)
    rng = np.random.default_rng(seed)
    half = np.zeros(pool.n_obs, bool)
    half[rng.choice(pool.n_obs, pool.n_obs // 2, replace=False)] = True
    ref_mask = half.copy()
    if removed is not None:
        ref_mask &= pool.obs["label"].astype(str).to_numpy() != removed
    ref = prep_reference(pool[ref_mask], name, seed)
    model, sec_fit = fit_dlme(ref, seed, dlme)
    q = prep_query(pool[~half], ref, name)
    embed_query(q, ref, model, name)
    truth = q.obs["label"].astype(str).to_numpy()
    mx.tl.embed(ref, model, reference=ref, space="latent")  # the reference in the same latent space
    q.obsm["X_pca_ref"] = pca_of_query(q, ref, name, model)
    ref.obsm["X_pca_ref"] = ref.obsm["X_pca"]
    configs = [
        ("kNN in DLME map", "dlme", "knn"),
        ("prototype in DLME map", "dlme", "prototype"),
        ("kNN in DLME latent z", "dlme_latent", "knn"),
        ("prototype in DLME latent z", "dlme_latent", "prototype"),
        ("kNN in reference PCA (50-d)", "pca_ref", "knn"),
    ]
    rows = []
    exp = "transfer" if removed is None else "unknown"
    known = truth != removed if removed is not None else np.ones(truth.size, bool)
    for method, basis, how in configs:
        out = {}
        for mode in (None, "distance", "coverage", "auto"):
            t0 = time.perf_counter()
            mx.tl.transfer_labels(
                q, ref, label_key="label", basis=basis, method=how, unknown=mode, key_added="pred"
            )
            out[mode] = (q.obs["pred"].astype(str).to_numpy(), time.perf_counter() - t0)
        pred_forced, pred = out[None][0], out["auto"][0]
        row = {"dataset": name, "experiment": exp, "method": method, "seed": seed}
        if removed is None:
            row.update(
                acc_no_unknown=_acc(pred_forced, truth),
                acc_with_unknown=_acc(pred, truth),
                unknown_rate=float((pred == "unknown").mean()),
                unknown_rate_distance=float((out["distance"][0] == "unknown").mean()),
                unknown_rate_coverage=float((out["coverage"][0] == "unknown").mean()),
            )
        else:
            row.update(
                removed=removed,
                removed_unknown_distance=float((out["distance"][0][~known] == "unknown").mean()),
                removed_unknown_coverage=float((out["coverage"][0][~known] == "unknown").mean()),
                removed_called_unknown=float((pred[~known] == "unknown").mean()),
                known_acc=_acc(pred[known], truth[known]),
                known_called_unknown=float((pred[known] == "unknown").mean()),
            )
        row["seconds"] = sec_fit + out["auto"][1] if "DLME" in method else out["auto"][1]
        rows.append(row)
        print(row, flush=True)
    if removed is None:
        _, lab_i, sec_i = ingest(q, ref, name, seed, labels=True, xp=q.obsm["X_pca_ref"])
        row = {
            "dataset": name,
            "experiment": exp,
            "method": "ingest label transfer (scanpy)",
            "seed": seed,
            "acc_no_unknown": _acc(lab_i, truth),
            "seconds": sec_i,
        }
        rows.append(row)
        print(row, flush=True)
    return rows


def _table(rows: list[dict[str, Any]], cols: list[str], by=("dataset", "method")) -> str:
    df = pd.DataFrame(rows)
    keep = [c for c in df.columns if c in cols or c in by or c == "seed"]
    return H.summarize(df[keep].to_dict("records"), by).to_markdown(index=False)


def write_report(
    rows: list[dict[str, Any]], out: str, *, settings: str, n_episodes: int, machine_note: str = ""
) -> None:
    """``query.md`` (three tables, mean ± sd over seeds) and ``query.csv`` (per-seed rows)."""
    H.RESULTS.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out.replace(".md", ".csv"), index=False)
    one = [r for r in rows if r.get("experiment") == "one-shot"]
    tra = [r for r in rows if r.get("experiment") == "transfer"]
    unk = [r for r in rows if r.get("experiment") == "unknown"]
    lines = [
        f"- {settings}",
        "- values are mean ± sd over seeds; seconds are wall time (compare within a dataset only)",
        "",
    ]
    if one:
        lines += [
            "## One-shot accuracy on held-out classes",
            "",
            "N-way 1-shot episodes (N = number of held-out classes; 15 queries per class; nearest "
            f"prototype), {n_episodes} episodes per seed. `one_shot_acc` is the mean over episodes "
            "(then mean ± sd over seeds, each seed holding out different classes); `episode_sd` the sd over "
            "episodes. Held-out cells never reach the reference's preprocessing, PCA or DLME fit; they are "
            "embedded by `mx.tl.embed` (model.transform). Seconds: DLME fit + embed, or neighbors + UMAP + "
            "ingest for the baseline. Images: reference = up to "
            f"{IMG_REF_CELLS} training images of the kept digits, query = {IMG_QUERY_PER_CLASS} test images "
            "per held-out digit; PCA (50) of pixels is the input.",
            "",
            _table(one, ["one_shot_acc", "episode_sd", "n_way", "chance", "seconds"]),
            "",
        ]
    if tra:
        lines += [
            "## Label transfer to a random held-out half",
            "",
            "Reference = a random half (preprocessed alone), query = the other half. `acc_no_unknown`: "
            "every cell gets a known label; `acc_with_unknown`: the default unknown calls "
            "(`unknown='auto'`: the embedding-distance check at `unknown_threshold=0.99` or expression "
            "coverage below `min_coverage=0.5`), unknown counts as an error; `unknown_rate`: share called "
            "unknown, by either check, the distance check alone and the coverage check alone.",
            "",
            _table(
                tra,
                [
                    "acc_no_unknown",
                    "acc_with_unknown",
                    "unknown_rate",
                    "unknown_rate_distance",
                    "unknown_rate_coverage",
                    "seconds",
                ],
            ),
            "",
        ]
    if unk:
        removed = sorted({f"{r['dataset']}: {r['removed']}" for r in unk})
        lines += [
            "## A class removed from the reference",
            "",
            "Reference = a random half minus one class (one per seed: "
            + "; ".join(removed)
            + "), query = the other half. Share of the removed class's query cells called unknown by "
            "the embedding-distance check alone (`removed_unknown_distance`, `unknown_threshold=0.99`), the "
            "expression-coverage check alone (`removed_unknown_coverage`, `min_coverage=0.5`; the same in "
            "every embedding) and the default `unknown='auto'` (either; `removed_called_unknown`); "
            "`known_acc`: accuracy on the other query cells with the default (unknown = error); "
            "`known_called_unknown`: share of those called unknown.",
            "",
            _table(
                unk,
                [
                    "removed_unknown_distance",
                    "removed_unknown_coverage",
                    "removed_called_unknown",
                    "known_acc",
                    "known_called_unknown",
                    "seconds",
                ],
                by=("dataset", "removed", "method"),
            ),
            "",
        ]
    lines += ["Per-seed values (with held-out / removed classes) are in `query.csv`.", ""]
    H.write_report(
        out,
        "Query mapping: one-shot learning, label transfer, unknown classes",
        lines,
        "; one torch thread per process, experiments run as parallel processes. " + machine_note,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--datasets", nargs="+", default=["pbmc3k", "paul15", "mnist", "usps"])
    p.add_argument("--transfer-datasets", nargs="+", default=["pbmc3k", "paul15"])
    p.add_argument("--unknown-datasets", nargs="+", default=["pbmc3k"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n-steps", type=int, default=600, help="DLME steps; 0 = the default budget")
    p.add_argument(
        "--tsimcne-epochs",
        default=None,
        help="also fit t-SimCNE on image references with these stage epochs (e.g. 20,5,10; "
        "'short' = 60,5,60)",
    )
    p.add_argument("--dlme-kwargs", default="{}", help="extra mx.tl.dlme keyword arguments, a dict literal")
    p.add_argument("--n-episodes", type=int, default=200)
    p.add_argument("--skip-oneshot", action="store_true")
    p.add_argument("--skip-transfer", action="store_true")
    p.add_argument("--skip-unknown", action="store_true")
    p.add_argument("--merge", nargs="+", help="only write the report from these per-part CSV files")
    p.add_argument("--out", default=str(H.RESULTS / "query.md"))
    p.add_argument("--machine-note", default="", help="what else ran on the machine (for the report)")
    args = p.parse_args(argv)
    extra = ast.literal_eval(args.dlme_kwargs)
    settings = (
        f"DLME budget: n_steps={args.n_steps or 'default'} (batch 300, otherwise defaults"
        + (f", {extra}" if extra else "")
        + ") on CPU; "
        + (
            "t-SimCNE on image references: ("
            + ("60,5,60" if args.tsimcne_epochs == "short" else args.tsimcne_epochs)
            + " epochs, batch 256, stage 3 at the full lr), digits augmentations; "
            if args.tsimcne_epochs
            else ""
        )
        + "UMAP for ingest with scanpy defaults"
    )
    if args.merge:
        rows = pd.concat([pd.read_csv(f) for f in args.merge]).to_dict("records")
        rows = [
            {k: v for k, v in r.items() if not (isinstance(v, float) and np.isnan(v) and k != "seconds")}
            for r in rows
        ]
        write_report(
            rows, args.out, settings=settings, n_episodes=args.n_episodes, machine_note=args.machine_note
        )
        print(open(args.out).read())
        return
    torch.set_num_threads(1)
    sc.settings.verbosity = 0
    dlme = {"n_steps": args.n_steps or None, **extra}
    ts_epochs = (
        None
        if args.tsimcne_epochs in (None, "short")
        else tuple(int(e) for e in args.tsimcne_epochs.split(","))
    )
    rows: list[dict[str, Any]] = []

    def save() -> None:
        write_report(
            rows, args.out, settings=settings, n_episodes=args.n_episodes, machine_note=args.machine_note
        )

    if not args.skip_oneshot:
        for name in args.datasets:
            for seed in args.seeds:
                rows += [
                    dict(r, experiment="one-shot")
                    for r in one_shot(name, seed, dlme, args.n_episodes, bool(args.tsimcne_epochs), ts_epochs)
                ]
                save()
    if not args.skip_transfer:
        for name in args.transfer_datasets:
            for seed in args.seeds:
                rows += transfer(name, seed, dlme)
                save()
    if not args.skip_unknown:
        for name in args.unknown_datasets:
            for i, seed in enumerate(args.seeds):
                rows += transfer(name, seed, dlme, removed=REMOVED[name][i % len(REMOVED[name])])
                save()
    save()
    print(open(args.out).read())


if __name__ == "__main__":
    main()
