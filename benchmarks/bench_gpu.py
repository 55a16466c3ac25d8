"""Timings and quality on a CUDA device: DLME, t-SimCNE, N2D, mixed precision on and off.

    python -m benchmarks.bench_gpu [--parts dlme tsimcne n2d scale atlas] [--budget-s 480]
                                   [--tsimcne-preset default] [--seeds 0]

Parts (each skipped when less than its estimate of ``--budget-s`` is left):

``dlme``
    pbmc3k and paul15 after the standard preprocessing, DLME's default budget, with
    ``amp=True`` (bfloat16 autocast) and ``amp=False`` (float32); scored by the harness protocol.
``tsimcne``
    t-SimCNE on the one-shot split of ``bench_query`` (MNIST: 6,000 training images of the kept
    digits; query: 300 test images per held-out digit) with a GPU preset; one-shot accuracy of
    its backbone features and 2-d map against the reference's PCA (50-d), as in ``query.md``.
``n2d``
    N2D on MNIST test (10,000 images), default budget; ACC / NMI and the time of each stage.
``scale``
    DLME on 100,000 synthetic cells (50-d): ms per step and transform time, as ``scale.md``.
``atlas``
    DLME end to end with defaults on 1,000,000 synthetic cells × 50 dims (30 clusters, the data
    of ``bench_atlas scale``): wall time split into kNN graph, training and embedding, the kNN
    backend and its recall, peak GPU memory and the map's 2-d kNN accuracy (the Atlas scale
    bar: 1M cells end to end in two minutes on one GPU).

Writes ``gpu.md`` and ``gpu.csv`` into ``--out-dir`` (default ``benchmarks/results``) after
every part, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scanpy as sc
import torch

import manifex as mx

from . import harness as H

#: set by --smoke: tiny budgets on the CPU, to check the script before a device run
SMOKE: dict[str, Any] = {}
DEVICE = "cuda"

#: rough seconds each part needs on one H200 (decides what fits into --budget-s)
ESTIMATE = {"dlme": 60, "tsimcne": 150, "n2d": 170, "scale": 60, "atlas": 300}


def part_dlme(seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for name in ("pbmc3k", "paul15"):
        adata = mx.datasets.preprocess_scrna(mx.datasets.load_scrna(name, H.data_dir()))
        labels = adata.obs["cell_type"].astype(str).to_numpy()
        for seed in seeds:
            for amp in (True, False):
                a = adata.copy()
                model, sec = H.timed(
                    lambda a=a, amp=amp, seed=seed: mx.tl.dlme(
                        a,
                        device=DEVICE,
                        amp=amp,
                        n_steps=SMOKE.get("dlme_steps"),
                        random_state=seed,
                        progress=False,
                        return_model=True,
                    )
                )
                steps = int(model.history_["n_steps"])
                rows.append(
                    {
                        "part": "dlme",
                        "dataset": name,
                        "method": f"DLME default budget, {'bf16 autocast' if amp else 'float32'}",
                        "seed": seed,
                        "n": a.n_obs,
                        "steps": steps,
                        "seconds": sec,
                        "train_s": model.timings_["train_s"],
                        "knn_graph_s": model.timings_["knn_s"],
                        "ms_per_step": 1000 * model.timings_["train_s"] / steps,
                        **H.score(a.obsm["X_dlme"], labels, adata.obsm["X_pca"]),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def part_tsimcne(seeds: list[int], preset: str) -> list[dict[str, Any]]:
    from . import bench_query as Q

    rows = []
    for seed in seeds:
        ref_pool, q_pool, held = Q.oneshot_split("mnist", seed)
        ref = Q.prep_reference(ref_pool, "mnist", seed)
        q = Q.prep_query(q_pool, ref, "mnist")
        ql = q.obs["label"].astype(str).to_numpy()
        model = mx.models.TSimCNE(
            preset=preset,
            augment="digits",
            device=DEVICE,
            random_state=seed,
            progress=False,
            n_epochs=SMOKE.get("tsimcne_epochs"),
        )
        _, sec = H.timed(lambda model=model, ref_pool=ref_pool: model.fit(ref_pool.obsm["image"]))
        h = model.history_
        maps, feats = (
            model.transform(q_pool.obsm["image"]),
            model.transform(q_pool.obsm["image"], space="latent"),
        )
        spaces = {
            f"t-SimCNE backbone features ({feats.shape[1]}-d)": feats,
            "t-SimCNE 2-d map": maps,
            "PCA of reference, 50-d": Q.pca_of_query(q, ref, "mnist"),
        }
        for method, emb in spaces.items():
            res = mx.metrics.one_shot_accuracy(
                emb, ql, k_shot=1, n_query=15, n_episodes=200, random_state=seed
            )
            rows.append(
                {
                    "part": "tsimcne",
                    "dataset": "mnist one-shot split",
                    "method": method,
                    "seed": seed,
                    "n": ref_pool.n_obs,
                    "steps": h["n_steps"] if method.startswith("t-SimCNE") else np.nan,
                    "seconds": sec if method.startswith("t-SimCNE") else np.nan,
                    "images_per_s_stage1": h["pretrain"]["images_per_second"]
                    if method.startswith("t-SimCNE")
                    else np.nan,
                    "one_shot_acc": res["mean"],
                    "held_out": "|".join(held),
                    "preset": preset,
                }
            )
            print(rows[-1], flush=True)
    return rows


def part_n2d(seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    a0 = mx.datasets.load_images("mnist", H.data_dir(), split="test")
    labels = a0.obs["label"].astype(str).to_numpy()
    for seed in seeds:
        for amp in (True, False):
            a = a0.copy()
            _, sec = H.timed(
                lambda a=a, seed=seed, amp=amp: mx.tl.n2d(
                    a,
                    n_clusters=10,
                    use_rep="X",
                    device=DEVICE,
                    amp=amp,
                    random_state=seed,
                    progress=False,
                    **({"n_steps": SMOKE["n2d_steps"]} if SMOKE else {}),
                )
            )
            sc_ = mx.metrics.cluster_scores(None, labels, labels_pred=a.obs["n2d"].astype(str).to_numpy())
            rows.append(
                {
                    "part": "n2d",
                    "dataset": "mnist test",
                    "method": f"N2D default budget, {'bf16 autocast' if amp else 'float32'}",
                    "seed": seed,
                    "n": a.n_obs,
                    "seconds": sec,
                    **{k: float(v) for k, v in a.uns["n2d"]["timings"].items()},
                    "acc": sc_["acc"],
                    "nmi": sc_["nmi"],
                }
            )
            print(rows[-1], flush=True)
    return rows


def part_scale() -> list[dict[str, Any]]:
    from .studies.scale import one

    r = one(SMOKE.get("scale_n", 100_000), SMOKE.get("scale_steps", 300))
    r.update(
        {"part": "scale", "dataset": "synthetic 50-d", "method": "DLME, 300 steps", "n": r.pop("n_cells")}
    )
    print(r, flush=True)
    return [r]


def part_atlas() -> list[dict[str, Any]]:
    from .bench_atlas import child_scale

    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    r = child_scale("dlme", SMOKE.get("atlas_n", 1_000_000), device=DEVICE)
    r.update(
        {
            "part": "atlas",
            "dataset": "synthetic 30 clusters × 50-d",
            "method": "DLME defaults, end to end",
            "n": r.pop("n_cells"),
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else np.nan,
        }
    )
    print(r, flush=True)
    return [r]


def write(rows: list[dict[str, Any]], out_dir: Path, note: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out_dir / "gpu.csv", index=False)
    lines = [""]
    for part, d in df.groupby("part", sort=False):
        d = d.dropna(axis=1, how="all").drop(columns=["part"])
        lines += [f"## {part}", "", d.to_markdown(index=False, floatfmt=".3f"), ""]
    H.write_report(out_dir / "gpu.md", "manifex on a CUDA device", lines, note)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["dlme", "tsimcne", "n2d", "scale", "atlas"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--tsimcne-preset", default="default")
    p.add_argument("--budget-s", type=float, default=480)
    p.add_argument("--out-dir", default=str(H.RESULTS))
    p.add_argument("--machine-note", default="")
    p.add_argument("--smoke", action="store_true", help="tiny budgets on the CPU (checks the script only)")
    args = p.parse_args(argv)
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        SMOKE.update(
            dlme_steps=20, tsimcne_epochs=(1, 1, 1), n2d_steps=20, scale_n=5000, scale_steps=5, atlas_n=3000
        )
    elif not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA device.")
    sc.settings.verbosity = 0
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    run = {
        "dlme": lambda: part_dlme(args.seeds),
        "tsimcne": lambda: part_tsimcne(args.seeds, args.tsimcne_preset),
        "n2d": lambda: part_n2d(args.seeds),
        "scale": part_scale,
        "atlas": part_atlas,
    }
    for part in args.parts:
        left = args.budget_s - (time.perf_counter() - t0)
        if left < ESTIMATE[part] * len(args.seeds if part not in ("scale", "atlas") else [0]):
            print(f"skipping {part}: {left:.0f}s left", flush=True)
            continue
        t1 = time.perf_counter()
        rows += run[part]()
        print(f"== {part} done in {time.perf_counter() - t1:.0f}s", flush=True)
        write(rows, Path(args.out_dir), args.machine_note)
    print((Path(args.out_dir) / "gpu.md").read_text())


if __name__ == "__main__":
    main()
