"""Pieces of :class:`~manifex.models.TSimCNE`: the network, its augmentation, the two views of
a minibatch and a step profiler."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils import check_random_state, make_generator
from ..augment.expression import AugmentContext, expression_preset
from ..augment.image import IMAGE_PRESETS, image_preset
from ..losses.infonce import cauchy_infonce
from ..neighbors import knn_indices
from ..nn.mlp import MLP
from ..nn.resnet import make_backbone
from ._checks import as_tuple, check_common, check_dims, check_fraction, check_int, check_positive

__all__ = [
    "Net",
    "augmentation_for",
    "embed_rows",
    "feature_dim",
    "make_backbone_for",
    "make_views",
    "profile_steps",
    "validate_params",
]


class Net(nn.Module):
    """Backbone followed by the projection head."""

    def __init__(self, backbone: nn.Module, head: nn.Sequential):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def make_backbone_for(self: Any) -> nn.Module:
    """The backbone the model's parameters ask for."""
    if isinstance(self.backbone, nn.Module):
        return copy.deepcopy(self.backbone)
    if self.kind_ == "expression":
        if self.backbone not in ("auto", "mlp"):
            raise ValueError(f"Expression data needs backbone='mlp' (or 'auto'), got {self.backbone!r}.")
        return MLP(self.n_features_in_, tuple(self.mlp_dims))
    if self.backbone == "mlp":
        raise ValueError("backbone='mlp' is for expression data; images need a convolutional backbone.")
    h, w, c = self.image_shape_
    return make_backbone(self.backbone, c, min(h, w))


def feature_dim(self: Any, backbone: nn.Module) -> int:
    """Width of the backbone's output."""
    if getattr(backbone, "out_dim", None) is not None and not isinstance(backbone, MLP):
        return int(backbone.out_dim)
    if isinstance(backbone, MLP):
        return int(backbone.d_out)
    shape = (2, self.image_shape_[2], self.image_shape_[0], self.image_shape_[1])
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(shape))
    backbone.train(was)
    if out.ndim != 2:
        raise ValueError(f"A custom backbone must return (B, d) features, got shape {tuple(out.shape)}.")
    return int(out.shape[1])


def augmentation_for(self: Any) -> Callable:
    """The augmentation the model's ``augment`` names (by data kind)."""
    aug = self.augment
    if callable(aug):
        return aug
    if self.kind_ == "expression":
        name = "default" if aug == "auto" else aug
        if name in IMAGE_PRESETS and name != "none":
            raise ValueError(f"augment={aug!r} is an image preset; expression data needs an expression one.")
        return expression_preset(name)
    c = self.image_shape_[2]
    name = ("natural" if c == 3 else "digits") if aug == "auto" else aug
    if name not in IMAGE_PRESETS:
        raise ValueError(f"Unknown image augmentation preset {aug!r}; choose one of {list(IMAGE_PRESETS)}.")
    return image_preset(name)


def make_views(
    model: Any,
    data: Any,
    augment: Callable,
    knn: np.ndarray | None,
    gen: torch.Generator,
    device: torch.device,
) -> Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """``views(idx, generator)``: two augmented views of the rows ``idx``, made on the device."""
    if model.kind_ == "image":

        def views(idx: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            xb = data[idx].float().div_(255.0)
            return augment(xb, g), augment(xb, g)

        return views
    std = model.feature_std_
    ctx = AugmentContext(
        data=data,
        knn=torch.as_tensor(knn, device=device),
        feature_std=torch.as_tensor(std, device=device) if std is not None else None,
        generator=gen,
    )

    def views(idx: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        c = ctx if g is gen else dataclasses.replace(ctx, generator=g)
        xb = data[idx]
        return augment(xb, idx, c), augment(xb, idx, c)

    return views


def profile_steps(model: Any, x: Any, *, n_steps: int = 5) -> dict[str, float]:
    """The body of :meth:`TSimCNE.profile` on a prepared input ``x``."""
    device = model.device_
    net = copy.deepcopy(model.net_).to(device).train()
    gen = make_generator(check_random_state(model.random_state), device)
    batch = min(model.effective_batch_size, x.shape[0])
    opt = torch.optim.SGD(net.parameters(), lr=1e-6, momentum=model.momentum)
    data = model._device_data(x, device)
    knn = None
    if model.kind_ == "expression":
        knn = knn_indices(x, min(model.n_neighbors, x.shape[0] - 1), random_state=0)
    views = make_views(model, data, model._augmentation(), knn, gen, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t_aug = t_step = 0.0
    for i in range(n_steps + 1):
        idx = torch.randint(x.shape[0], (batch,), generator=gen, device=gen.device).to(device)
        sync()
        t0 = time.perf_counter()
        a, b = views(idx, gen)
        sync()
        t1 = time.perf_counter()
        opt.zero_grad()
        za, zb = net(torch.cat([a, b])).float().chunk(2)
        cauchy_infonce(za, zb).backward()
        opt.step()
        sync()
        t2 = time.perf_counter()
        if i > 0:  # the first step warms up
            t_aug += t1 - t0
            t_step += t2 - t0
    t_aug, t_step = t_aug / n_steps, t_step / n_steps
    return {
        "augment_s": t_aug,
        "step_s": t_step,
        "augment_fraction": t_aug / t_step,
        "images_per_s": batch / t_step,
    }


def validate_params(self: Any, presets: dict[str, Any]) -> None:
    """Check :class:`TSimCNE`'s parameters (before any work)."""
    for name in (
        "n_components",
        "pretrain_dim",
        "head_hidden",
        "n_neighbors",
        "checkpoint_every",
        "patience",
    ):
        check_int(self, name, 1)
    check_int(self, "batch_size", 2, allow_none=True)
    check_int(self, "warmup_epochs", 0)
    check_dims(self, "mlp_dims")
    if self.preset not in presets:
        raise ValueError(f"`preset` must be one of {sorted(presets)}, got {self.preset!r}.")
    if self.n_epochs is not None:
        epochs = as_tuple(self.n_epochs)
        ok = (
            epochs is not None
            and len(epochs) == 3
            and all(not isinstance(e, bool) and isinstance(e, int | np.integer) and e >= 0 for e in epochs)
        )
        if not ok:
            raise ValueError(
                f"`n_epochs` must be three integers ≥ 0 (stage 1, stage 2, stage 3), got {self.n_epochs!r}."
            )
        if epochs[0] < 1 or epochs[1] + epochs[2] < 1:
            raise ValueError(
                "`n_epochs` must train stage 1 (≥ 1 epoch) and the 2-d output (stage 2 + stage 3 ≥ 1 "
                f"epoch); got {self.n_epochs!r}, which would return an untrained map."
            )
    check_positive(self, "lr", allow_none=True)
    check_positive(self, "weight_decay", allow_zero=True)
    check_positive(self, "finetune_lr_factor", allow_none=True)
    check_positive(self, "grad_clip_value", allow_none=True)
    check_fraction(self, "momentum")
    check_fraction(self, "validation_fraction")
    if self.pixel_range is not None:
        pr = self.pixel_range
        if (
            not isinstance(pr, tuple | list)
            or len(pr) != 2
            or not all(isinstance(v, int | float | np.integer | np.floating) for v in pr)
            or not pr[1] > pr[0]
        ):
            raise ValueError(f"`pixel_range` must be (lo, hi) with hi > lo, or None; got {pr!r}.")
    if not isinstance(self.backbone, nn.Module) and self.backbone not in {
        "auto",
        "small",
        "resnet18",
        "mlp",
    }:
        raise ValueError(
            f"`backbone` must be 'auto', 'small', 'resnet18', 'mlp' or an nn.Module, got {self.backbone!r}."
        )
    if not (callable(self.augment) or isinstance(self.augment, str)):
        raise TypeError("`augment` must be a preset name or a callable.")
    check_common(self)


@torch.no_grad()
def embed_rows(
    model: Any,
    data: Any,
    *,
    latent: bool = False,
    both: bool = False,
    block: int | None = None,
    batch_size: int = 1024,
) -> Any:
    """The map (or backbone features with ``latent``, both with ``both``, or the flattened output
    of backbone block ``block``) of every row of ``data``, in batches, without augmentation."""
    net = model.net_.eval()
    maps, feats = [], []
    n = data.shape[0]
    for s in range(0, n, batch_size):
        idx = torch.arange(s, min(n, s + batch_size), device=model.device_)
        xb = data[idx].float().div_(255.0) if model.kind_ == "image" else data[idx]
        if block is not None:
            feats.append(net.backbone.forward_to(xb, block).float().cpu())
            continue
        f = net.backbone(xb)
        if both or latent:
            feats.append(f.float().cpu())
        if both or not latent:
            maps.append(net.head(f).float().cpu())
    if both:
        return torch.cat(maps).numpy(), torch.cat(feats).numpy()
    return torch.cat(feats if latent or block is not None else maps).numpy()
