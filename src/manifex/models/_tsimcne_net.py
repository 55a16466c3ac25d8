"""t-SimCNE's network: a backbone followed by the projection head (:class:`Net`), the backbone
its parameters name, the width of the backbone's features, and the timing of its training steps
(:meth:`~manifex.models.TSimCNE.profile`)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..losses.infonce import cauchy_infonce
from ..nn.mlp import MLP
from ..nn.resnet import make_backbone

__all__ = ["Net", "backbone_for", "feature_width", "time_steps"]


class Net(nn.Module):
    """Backbone followed by the projection head."""

    def __init__(self, backbone: nn.Module, head: nn.Sequential):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    @torch.no_grad()
    def embed(
        self,
        data: Any,
        *,
        images: bool,
        device: torch.device,
        latent: bool = False,
        both: bool = False,
        block: int | None = None,
        batch_size: int = 1024,
    ) -> Any:
        """The map (or backbone features with ``latent``, both with ``both``, or the flattened
        output of backbone block ``block``) of every row of ``data``, in batches, in evaluation
        mode; uint8 ``images`` are scaled to [0, 1] first."""
        self.eval()
        maps, feats = [], []
        n = data.shape[0]
        for s in range(0, n, batch_size):
            idx = torch.arange(s, min(n, s + batch_size), device=device)
            xb = data[idx].float().div_(255.0) if images else data[idx]
            if block is not None:
                feats.append(self.backbone.forward_to(xb, block).float().cpu())
                continue
            f = self.backbone(xb)
            if both or latent:
                feats.append(f.float().cpu())
            if both or not latent:
                maps.append(self.head(f).float().cpu())
        if both:
            return torch.cat(maps).numpy(), torch.cat(feats).numpy()
        return torch.cat(feats if latent or block is not None else maps).numpy()


def backbone_for(
    backbone: str | nn.Module,
    *,
    kind: str,
    n_features: int,
    mlp_dims: tuple[int, ...],
    image_shape: tuple[int, int, int] | None,
) -> nn.Module:
    """The backbone ``backbone`` names for data of ``kind`` (``"expression"``: ``n_features``
    columns, an MLP of ``mlp_dims``; ``"image"``: ``image_shape`` = (H, W, C)); a module is copied."""
    if isinstance(backbone, nn.Module):
        return copy.deepcopy(backbone)
    if kind == "expression":
        if backbone not in ("auto", "mlp"):
            raise ValueError(f"Expression data needs backbone='mlp' (or 'auto'), got {backbone!r}.")
        return MLP(n_features, mlp_dims)
    if backbone == "mlp":
        raise ValueError("backbone='mlp' is for expression data; images need a convolutional backbone.")
    h, w, c = image_shape
    return make_backbone(backbone, c, min(h, w))


def feature_width(backbone: nn.Module, image_shape: tuple[int, int, int] | None) -> int:
    """Width of the backbone's output (a custom backbone is run once on zeros of ``image_shape``)."""
    if getattr(backbone, "out_dim", None) is not None and not isinstance(backbone, MLP):
        return int(backbone.out_dim)
    if isinstance(backbone, MLP):
        return int(backbone.d_out)
    shape = (2, image_shape[2], image_shape[0], image_shape[1])
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(shape))
    backbone.train(was)
    if out.ndim != 2:
        raise ValueError(f"A custom backbone must return (B, d) features, got shape {tuple(out.shape)}.")
    return int(out.shape[1])


def time_steps(
    net: nn.Module,
    views: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    *,
    n_rows: int,
    batch_size: int,
    momentum: float,
    generator: torch.Generator,
    n_steps: int = 5,
) -> dict[str, float]:
    """Mean seconds of the augmentation and of a whole stage-1 step (two ``views`` of a random
    minibatch of ``n_rows``, forward, loss, backward, SGD step) of ``net``, over ``n_steps``
    steps after one warm-up step."""
    device = next(net.parameters()).device
    opt = torch.optim.SGD(net.parameters(), lr=1e-6, momentum=momentum)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t_aug = t_step = 0.0
    for i in range(n_steps + 1):
        idx = torch.randint(n_rows, (batch_size,), generator=generator, device=generator.device).to(device)
        sync()
        t0 = time.perf_counter()
        a, b = views(idx, generator)
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
        "images_per_s": batch_size / t_step,
    }
