"""One-shot accuracy on held-out classes: which DLME layer, training length and augmentation.

    python -m benchmarks.bench_oneshot_variants [--datasets pbmc3k paul15 usps] [--seeds 0 1 2]

The query benchmark (:mod:`benchmarks.bench_query`) finds DLME's latent ``z`` below the
reference's 50 PCs in one-shot accuracy on classes the reference never saw. This probe asks
whether another readout of the same kind of model closes the gap: the activations of each
encoder block (``h0`` = 500-d, ``h1`` = 300-d, ``h2`` = ``z``, 80-d), raw or CL2N (centred on
the reference's mean activation, then L2-normalised, the usual few-shot normalisation), for
DLME trained with different step budgets and augmentation presets. The split (held-out classes
per seed), the reference preprocessing and the episodes are those of ``bench_query`` (N-way
1-shot, 15 queries per class, 200 episodes, nearest prototype), so the PCA row matches it.

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
from manifex.models.dlme import _apply_scale

from . import bench_query as Q
from . import harness as H

VARIANTS: dict[str, dict[str, Any]] = {
    "600 steps, knn_mix (bench_query's)": {"n_steps": 600},
    "150 steps, knn_mix": {"n_steps": 150},
    "default budget, knn_mix": {"n_steps": None},
    "600 steps, augment='default'": {"n_steps": 600, "augment": "default"},
    "600 steps, augment='strong'": {"n_steps": 600, "augment": "strong"},
}


def block_activations(model: mx.models.DLME, x: np.ndarray) -> dict[str, np.ndarray]:
    """Output of every encoder block (Linear + BatchNorm + LeakyReLU) for inputs ``x``."""
    h = torch.as_tensor(_apply_scale(np.asarray(x, dtype=np.float32), model.scale_))
    out = {}
    model.encoder_.eval()
    with torch.no_grad():
        for i, block in enumerate(model.encoder_):
            h = block(h)
            out[f"h{i}"] = h.numpy().copy()
    return out


def cl2n(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    x = x - ref.mean(0)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def run(name: str, seed: int, n_episodes: int) -> list[dict[str, Any]]:
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
    for variant, kw in VARIANTS.items():
        model, sec = H.timed(
            lambda kw=kw: mx.tl.dlme(
                ref.copy(), random_state=seed, progress=False, device="cpu", return_model=True, **kw
            )
        )
        fr, fq = block_activations(model, ref.obsm["X_pca"]), block_activations(model, xp)
        for layer in fr:
            for readout, emb in (("raw", fq[layer]), ("CL2N", cl2n(fq[layer], fr[layer]))):
                rows.append(
                    dict(
                        base,
                        variant=f"DLME {variant}",
                        layer=f"{layer} ({fq[layer].shape[1]}-d)",
                        readout=readout,
                        one_shot_acc=score(emb),
                        seconds=sec,
                    )
                )
        print(
            name, seed, variant, f"{sec:.0f}s", [round(r["one_shot_acc"], 3) for r in rows[-6:]], flush=True
        )
    return rows


def write(rows: list[dict[str, Any]], out: str) -> None:
    df = pd.DataFrame(rows)
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
        *H.report_header("One-shot readouts of DLME on held-out classes", "; one torch thread"),
        "- split, preprocessing and episodes as in `query.md` (N-way 1-shot, 15 queries per class, "
        "nearest prototype, 200 episodes per seed); values: mean ± sd over seeds of the mean over episodes",
        "- readouts: activations of each encoder block (`h2` is the latent z); CL2N = centred on the "
        "reference's mean activation, then L2-normalised",
        "",
        wide.to_markdown(index=False),
        "",
    ]
    with open(out, "w") as fh:
        fh.write("\n".join(text))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["pbmc3k", "paul15", "usps"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n-episodes", type=int, default=200)
    p.add_argument("--out", default=str(H.RESULTS / "oneshot_variants.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sc.settings.verbosity = 0
    rows: list[dict[str, Any]] = []
    for name in args.datasets:
        for seed in args.seeds:
            rows += run(name, seed, args.n_episodes)
            write(rows, args.out)
    print(open(args.out).read())


if __name__ == "__main__":
    main()
