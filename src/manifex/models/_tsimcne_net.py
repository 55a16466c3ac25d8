"""t-SimCNE's network: a backbone followed by the projection head (:class:`Net`), the backbone
its parameters name, and the width of the backbone's features."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..nn.mlp import MLP
from ..nn.resnet import make_backbone

__all__ = ["Net", "backbone_for", "feature_width"]


class Net(nn.Module):
    """Backbone followed by the projection head."""

    def __init__(self, backbone: nn.Module, head: nn.Sequential):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


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
