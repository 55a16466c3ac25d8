"""The two augmented views of a minibatch that t-SimCNE is trained on, and the augmentation its
``augment`` parameter names for the data kind."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..augment.expression import AugmentContext, expression_preset
from ..augment.image import IMAGE_PRESETS, image_preset

__all__ = ["augmentation_for", "make_views"]


def augmentation_for(augment: str | Callable, *, kind: str, channels: int | None) -> Callable:
    """The augmentation ``augment`` names for data of ``kind`` (images of ``channels`` channels)."""
    if callable(augment):
        return augment
    if kind == "expression":
        name = "default" if augment == "auto" else augment
        if name in IMAGE_PRESETS and name != "none":
            raise ValueError(
                f"augment={augment!r} is an image preset; expression data needs an expression one."
            )
        return expression_preset(name)
    name = ("natural" if channels == 3 else "digits") if augment == "auto" else augment
    if name not in IMAGE_PRESETS:
        raise ValueError(
            f"Unknown image augmentation preset {augment!r}; choose one of {list(IMAGE_PRESETS)}."
        )
    return image_preset(name)


def make_views(
    kind: str,
    data: Any,
    augment: Callable,
    *,
    knn: np.ndarray | None,
    feature_std: np.ndarray | None,
    generator: torch.Generator,
    device: torch.device,
) -> Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """``views(idx, generator)``: two augmented views of the rows ``idx`` of ``data``, made on the
    device (images: uint8 rows scaled to [0, 1]; expression: with the kNN graph ``knn``)."""
    if kind == "image":

        def views(idx: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            xb = data[idx].float().div_(255.0)
            return augment(xb, g), augment(xb, g)

        return views
    ctx = AugmentContext(
        data=data,
        knn=torch.as_tensor(knn, device=device),
        feature_std=torch.as_tensor(feature_std, device=device) if feature_std is not None else None,
        generator=generator,
    )

    def views(idx: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        c = ctx if g is generator else dataclasses.replace(ctx, generator=g)
        xb = data[idx]
        return augment(xb, idx, c), augment(xb, idx, c)

    return views
