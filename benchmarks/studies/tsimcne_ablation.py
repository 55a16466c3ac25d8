"""Which t-SimCNE choices buy how much on USPS: backbone, augmentations, schedule.

    python -m benchmarks.studies.tsimcne_ablation [--epochs 30,5,10] [--variants cnn5-natural ...]

The reference point is a plain CNN (five 3×3 convolutions, 32–128 channels, batch norm, ReLU,
global average pooling) trained with the paper's loss and augmentations (which include
horizontal flips). Each variant changes one choice from the previous row, all at the same
short budget (default 30/5/10 epochs, batch 256), on all 9,298 USPS digits:

- ``cnn5-natural``: the reference CNN, the paper's natural-image augmentations (flips);
- ``cnn5-digits``: the same CNN, the digits preset (no flips: a flipped 2 or 5 is another digit);
- ``small-digits``: manifex's small ResNet (the ``"auto"`` backbone below 32 px), digits preset;
- ``small-digits-s3lr``: the same, with stage 3 at the full learning rate instead of the
  paper's lr/1000 (as the ``"cpu"`` preset does).

The first three rows run stage 3 at lr/1000. The effect of the longer ``"cpu"`` schedule
(60/5/60, stage 3 at the full lr) is read off ``results/tsimcne.md`` (the USPS row there uses
``small-digits`` at that budget). Writes
``results/tsimcne_ablation.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from .. import harness

OUT = harness.RESULTS


def cnn5(in_channels: int = 1) -> nn.Module:
    """The reference CNN: five 3×3 conv layers (32, 64, 64, 128, 128), two 2×2 poolings."""
    chans = [in_channels, 32, 64, 64, 128, 128]
    layers: list[nn.Module] = []
    for i in range(5):
        layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False), nn.BatchNorm2d(chans[i + 1])]
        layers.append(nn.ReLU(inplace=True))
        if i in (1, 3):
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    net = nn.Sequential(*layers)
    net.out_dim = 128  # read by the projection head builder
    return net


VARIANTS = {
    "cnn5-natural": {"backbone": "cnn5", "augment": "natural"},
    "cnn5-digits": {"backbone": "cnn5", "augment": "digits"},
    "small-digits": {"backbone": "auto", "augment": "digits"},
    "small-digits-s3lr": {"backbone": "auto", "augment": "digits", "finetune_lr_factor": 1.0},
}


def main(argv: list[str] | None = None) -> None:
    import manifex as mx

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", default="30,5,10")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(OUT / "tsimcne_ablation.md"))
    p.add_argument("--merge", nargs="+", metavar="CSV", help="only merge earlier runs' CSVs into --out")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = tuple(int(e) for e in args.epochs.split(","))
    if args.merge:
        import pandas as pd

        rows = pd.concat([pd.read_csv(f) for f in args.merge]).to_dict("records")
        order = {v: i for i, v in enumerate(VARIANTS)}
        _write(sorted(rows, key=lambda r: order.get(r["variant"], 99)), args.out, epochs)
        return
    adata = mx.datasets.load_images("usps", harness.data_dir())
    images = adata.obsm["image"]
    labels = adata.obs["label"].to_numpy()
    pixels = np.asarray(adata.X, dtype=np.float32)
    rows = []
    for name in args.variants:
        cfg = VARIANTS[name]
        torch.manual_seed(args.seed)  # the reference CNN is built here, outside the model's seeding
        backbone = cnn5(1) if cfg["backbone"] == "cnn5" else cfg["backbone"]
        model = mx.models.TSimCNE(
            backbone=backbone,
            augment=cfg["augment"],
            n_epochs=epochs,
            batch_size=256,
            finetune_lr_factor=cfg.get("finetune_lr_factor", 1e-3),
            device="cpu",
            random_state=args.seed,
            progress=False,
        )
        t0, c0 = time.perf_counter(), time.process_time()
        emb = model.fit_transform(images)
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
        m = harness.score(emb, labels, X=pixels)
        rows.append(
            {
                "variant": name,
                "backbone": "5-conv CNN" if cfg["backbone"] == "cnn5" else "small ResNet",
                "augment": cfg["augment"],
                "epochs": "/".join(map(str, epochs)),
                "stage3_lr": f"lr × {cfg.get('finetune_lr_factor', 1e-3):g}",
                "seconds": sec,
                "cpu_seconds": cpu,
                "n_params": sum(p.numel() for p in model.net_.parameters()),
                **m,
            }
        )
        print(rows[-1], flush=True)
        _write(rows, args.out, epochs)


def _write(rows: list[dict], out: str, epochs: tuple[int, ...]) -> None:
    harness.write_markdown(
        rows,
        out,
        title=f"t-SimCNE ablation on USPS (9,298 digits, {'/'.join(map(str, epochs))} epochs, batch 256)",
        notes=(
            "Each row changes one choice from the row above, at the same budget and seed: the CNN's "
            "augmentations (natural, with flips -> digits), the backbone (5-conv CNN -> small ResNet), "
            "the stage-3 learning rate (the paper's lr x 0.001 in the first three rows -> lr). "
            "kNN accuracy: k=15, 5-fold CV on the 2-d map. Seconds are wall time on the "
            "machine above (variants may run in parallel processes, one thread each; compare cpu_seconds)."
        ),
        by=("variant",),
    )


if __name__ == "__main__":
    main()
