"""One-shot accuracy on held-out classes: which DLME layer, training length and augmentation.

    python -m benchmarks.studies.oneshot_variants [--datasets pbmc3k paul15 usps] [--seeds 0 1 2]
    python -m benchmarks.studies.oneshot_variants --models tsimcne --datasets pbmc3k paul15 \\
        --out benchmarks/results/oneshot_tsimcne.md

The query benchmark (:mod:`benchmarks.bench_query`) finds DLME's latent ``z`` below the
reference's 50 PCs in one-shot accuracy on classes the reference never saw. This probe asks
whether another readout of the same kind of model closes the gap: the activations of each
encoder block (``h0`` = 500-d, ``h1`` = 300-d, ``h2`` = ``z``, 80-d), raw or CL2N (centred on
the reference's mean activation, then L2-normalised, the usual few-shot normalisation), for
DLME trained with different step budgets and augmentation presets. The split (held-out classes
per seed), the reference preprocessing and the episodes are those of ``bench_query`` (N-way
1-shot, 15 queries per class, 200 episodes, nearest prototype), so the PCA row matches it.

``--models tsimcne`` asks the same of a contrastive model: t-SimCNE's expression variant (an
MLP on the reference's PCs, two augmented views per cell, Cauchy InfoNCE), read out at its
backbone features and its 2-d map, with the ``"cpu"`` and ``"default"`` presets (scRNA-seq only).
``--models whiten`` is a linear control for the invariance idea without a network: the PCA
space whitened by the covariance of the differences between each reference cell and its
neighbours (``local_whitening``), which shrinks the directions along which neighbours differ.
``--models vicreg`` is its non-linear counterpart: DLME's encoder trained with a
variance-invariance-covariance objective (Bardes et al., ICLR 2022) on two augmented views
of each cell, which asks for invariance to the augmentations while keeping every output
dimension's variance, instead of DLME's neighbourhood-embedding loss (``fit_vicreg``).

Writes ``benchmarks/results/oneshot_variants.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd
import scanpy as sc
import torch

import manifex as mx

from .. import bench_query as Q
from .. import harness as H

VARIANTS: dict[str, dict[str, Any]] = {
    "600 steps, knn_mix (bench_query's)": {"n_steps": 600},
    "150 steps, knn_mix": {"n_steps": 150},
    "default budget, knn_mix": {"n_steps": None},
    "600 steps, augment='default'": {"n_steps": 600, "augment": "default"},
    "600 steps, augment='strong'": {"n_steps": 600, "augment": "strong"},
}


TSIMCNE_VARIANTS: dict[str, dict[str, Any]] = {
    "preset 'cpu' (60/5/60 epochs)": {"n_epochs": (60, 5, 60), "batch_size": 256, "finetune_lr_factor": 1.0},
    "preset 'default' (400/25/75 epochs)": {"preset": "default"},
}


def local_whitening(xr: np.ndarray, k: int, alpha: float, seed: int) -> np.ndarray:
    """``C^-alpha`` for ``C`` the covariance of ``x_i - x_j`` over the reference's kNN pairs (halved)."""
    nn = H.knn_indices(xr, k, random_state=seed)
    d = (xr[:, None, :] - xr[nn]).reshape(-1, xr.shape[1]).astype(np.float64)
    w, v = np.linalg.eigh(d.T @ d / (2 * len(d)))
    return (v * np.maximum(w, 1e-6 * w.max()) ** -alpha) @ v.T


VICREG_VARIANTS: dict[str, dict[str, Any]] = {
    "knn_mix views, 1500 steps": {"augment": "knn_mix"},
    "augment='default' views, 1500 steps": {"augment": "default"},
}


def vicreg_loss(za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """VICReg with its paper's weights: 25 × invariance + 25 × variance + 1 × covariance."""
    inv = torch.nn.functional.mse_loss(za, zb)
    var = cov = za.new_zeros(())
    for z in (za, zb):
        z = z - z.mean(0)
        var = var + torch.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean() / 2
        c = z.T @ z / (z.shape[0] - 1)
        cov = cov + (c.pow(2).sum() - c.diagonal().pow(2).sum()) / z.shape[1]
    return 25 * inv + 25 * var + cov


def fit_vicreg(xr: np.ndarray, seed: int, augment: str, n_steps: int = 1500, batch: int = 256):
    """DLME's encoder (500-300-80) + a 512-d expander trained by VICReg on augmented views."""
    from manifex.augment import AugmentContext, expression_preset
    from manifex.nn import MLP

    x = torch.as_tensor(xr, dtype=torch.float32)
    torch.manual_seed(seed)
    enc, expander = MLP(x.shape[1], (500, 300, 80)), MLP(80, (512,), 512)
    g = torch.Generator().manual_seed(seed)
    ctx = AugmentContext(x, torch.as_tensor(H.knn_indices(xr, 15, random_state=seed)), x.std(0), g)
    aug = expression_preset(augment)
    params = [*enc.parameters(), *expander.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-5)
    for _ in range(n_steps):
        idx = torch.randint(x.shape[0], (batch,), generator=g)
        xb = x[idx]
        loss = vicreg_loss(expander(enc(aug(xb, idx, ctx))), expander(enc(aug(xb, idx, ctx))))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval()


def cl2n(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    x = x - ref.mean(0)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def readout_rows(
    base: dict[str, Any], variant: str, readouts: dict[str, tuple[np.ndarray, np.ndarray]], score, **extra
) -> list[dict[str, Any]]:
    """A raw and a CL2N row for each ``{layer: (query, reference)}`` readout of one fitted model."""
    return [
        dict(base, variant=variant, layer=layer, readout=readout, one_shot_acc=score(emb), **extra)
        for layer, (q, r) in readouts.items()
        for readout, emb in (("raw", q), ("CL2N", cl2n(q, r)))
    ]


def run(name: str, seed: int, n_episodes: int, models: tuple[str, ...] = ("dlme",)) -> list[dict[str, Any]]:
    ref_pool, q_pool, held = Q.oneshot_split(name, seed)
    ref = Q.prep_reference(ref_pool, name, seed)
    q = Q.prep_query(q_pool, ref, name)
    ql = q.obs["label"].astype(str).to_numpy()
    xp = Q.pca_of_query(q, ref, name)

    def score(emb: np.ndarray) -> float:
        return mx.metrics.one_shot_accuracy(
            emb, ql, k_shot=1, n_query=15, n_episodes=n_episodes, random_state=seed
        )["mean"]

    base = {"dataset": name, "seed": seed, "held_out": "|".join(held)}
    rows = [
        dict(base, variant="PCA of reference, 50-d", readout="raw", one_shot_acc=score(xp)),
        dict(
            base,
            variant="PCA of reference, 50-d",
            readout="CL2N",
            one_shot_acc=score(cl2n(xp, ref.obsm["X_pca"])),
        ),
    ]
    if "dlme" in models:
        rows += dlme_rows(ref, xp, base, score, seed)
    if "tsimcne" in models and name in Q.SCRNA:
        rows += tsimcne_rows(ref, xp, base, score, seed)
    if "vicreg" in models:
        rows += vicreg_rows(ref, xp, base, score, seed)
    if "whiten" in models:
        for alpha in (0.5, 1.0):
            emb = xp @ local_whitening(ref.obsm["X_pca"], 15, alpha, seed)
            rows.append(
                dict(
                    base,
                    variant=f"PCA whitened by the kNN-difference covariance (k=15, power {alpha:g})",
                    readout="raw",
                    one_shot_acc=score(emb),
                )
            )
    return rows


def dlme_rows(ref, xp: np.ndarray, base: dict[str, Any], score, seed: int) -> list[dict[str, Any]]:
    """Every encoder block of DLME (raw and CL2N) for each of ``VARIANTS``."""
    rows: list[dict[str, Any]] = []
    for variant, kw in VARIANTS.items():
        model, sec = H.timed(
            lambda kw=kw: mx.tl.dlme(
                ref.copy(), random_state=seed, progress=False, device="cpu", return_model=True, **kw
            )
        )
        readouts = {}
        for i in range(model.encoder_.n_blocks):
            fq = model.transform(xp, space="latent", block=i)
            readouts[f"h{i} ({fq.shape[1]}-d)"] = (
                fq,
                model.transform(ref.obsm["X_pca"], space="latent", block=i),
            )
        rows += readout_rows(base, f"DLME {variant}", readouts, score, seconds=sec)
        print(
            base["dataset"],
            seed,
            variant,
            f"{sec:.0f}s",
            [round(r["one_shot_acc"], 3) for r in rows[-6:]],
            flush=True,
        )
    return rows


def tsimcne_rows(ref, xp: np.ndarray, base: dict[str, Any], score, seed: int) -> list[dict[str, Any]]:
    """t-SimCNE's expression variant: backbone features and 2-d map (raw and CL2N)."""
    rows: list[dict[str, Any]] = []
    xr = ref.obsm["X_pca"]
    for variant, kw in TSIMCNE_VARIANTS.items():
        model = mx.models.TSimCNE(augment="default", device="cpu", random_state=seed, progress=False, **kw)
        _, sec = H.timed(lambda model=model: model.fit(xr))
        fr, fq = model.transform(xr, space="latent"), model.transform(xp, space="latent")
        readouts = {
            f"backbone features ({fq.shape[1]}-d)": (fq, fr),
            "2-d map": (model.transform(xp), model.transform(xr)),
        }
        rows += readout_rows(base, f"t-SimCNE (expression) {variant}", readouts, score, seconds=sec)
        print(base["dataset"], seed, variant, f"{sec:.0f}s", [round(r["one_shot_acc"], 3) for r in rows[-4:]])
    return rows


def vicreg_rows(ref, xp: np.ndarray, base: dict[str, Any], score, seed: int) -> list[dict[str, Any]]:
    """DLME's encoder trained by VICReg, for each of ``VICREG_VARIANTS``: z (raw and CL2N)."""
    rows: list[dict[str, Any]] = []
    xr = ref.obsm["X_pca"]
    for variant, kw in VICREG_VARIANTS.items():
        enc, sec = H.timed(lambda kw=kw: fit_vicreg(xr, seed, **kw))
        with torch.no_grad():
            fr, fq = (enc(torch.as_tensor(v, dtype=torch.float32)).numpy() for v in (xr, xp))
        rows += readout_rows(base, f"VICReg encoder, {variant}", {"z (80-d)": (fq, fr)}, score, seconds=sec)
        print(base["dataset"], seed, variant, f"{sec:.0f}s", [round(r["one_shot_acc"], 3) for r in rows[-2:]])
    return rows


def write(rows: list[dict[str, Any]], out: str) -> None:
    df = pd.DataFrame(rows)
    models = sorted({v.split(" ")[0] for v in df["variant"] if not v.startswith("PCA")}) or ["PCA"]
    df.to_csv(out.replace(".md", ".csv"), index=False)
    df["layer"] = df.get("layer", pd.Series(index=df.index, dtype=object)).fillna("input")
    g = df.groupby(["dataset", "variant", "layer", "readout"], sort=False)["one_shot_acc"]
    t = g.agg(["mean", "std", "count"]).reset_index()
    t["one_shot_acc"] = [f"{m:.3f} ± {0 if np.isnan(s) else s:.3f}" for m, s in zip(t["mean"], t["std"])]
    t = t.rename(columns={"count": "n_seeds"})
    wide = t.pivot_table(
        index=["dataset", "variant", "layer"],
        columns="readout",
        values="one_shot_acc",
        aggfunc="first",
        sort=False,
    ).reset_index()
    seeds = t.groupby(["dataset", "variant", "layer"], sort=False)["n_seeds"].first().to_numpy()
    wide["n_seeds"] = seeds
    text = [
        "- split, preprocessing and episodes as in `query.md` (N-way 1-shot, 15 queries per class, "
        "nearest prototype, 200 episodes per seed); values: mean ± sd over seeds of the mean over episodes",
        "- readouts: DLME, the activations of each encoder block (`h2` is the latent z); t-SimCNE, the "
        "backbone features and the 2-d map; CL2N = centred on the reference's mean, then L2-normalised",
        "",
        wide.to_markdown(index=False),
        "",
    ]
    H.write_report(
        out, f"One-shot readouts of {' and '.join(models)} on held-out classes", text, "; one torch thread"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["pbmc3k", "paul15", "usps"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n-episodes", type=int, default=200)
    p.add_argument("--models", nargs="+", default=["dlme"], choices=["dlme", "tsimcne", "whiten", "vicreg"])
    p.add_argument("--out", default=str(H.RESULTS / "oneshot_variants.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sc.settings.verbosity = 0
    rows: list[dict[str, Any]] = []
    for name in args.datasets:
        for seed in args.seeds:
            rows += run(name, seed, args.n_episodes, tuple(args.models))
            write(rows, args.out)
    print(open(args.out).read())


if __name__ == "__main__":
    main()
