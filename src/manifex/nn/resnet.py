"""Convolutional backbones for t-SimCNE: a CIFAR-style ResNet-18 and a small ResNet for small images.

Both map an image batch ``(B, C, H, W)`` (floats in [0, 1]) to pooled features ``(B, out_dim)``.

- :class:`ResNet18` — the network of the t-SimCNE paper: ResNet-18 with a 3×3 stride-1 first
  convolution and no max-pool (the usual change for 32 px CIFAR images), 512-d output.
- :class:`SmallResNet` — for small or grayscale images (about 8–28 px: digits, characters,
  thumbnails): a 3×3 stem with 16 channels followed by three residual stages that halve the
  resolution each (32, 64, 128 channels), 128-d output. Images of 16 px and more get a
  stride-2 stem, so a 28 px MNIST digit is processed from 14 px and a 16 px USPS digit from
  8 px on. It needs less than 1/100 of the ResNet-18's multiply-adds on a 16 px image, which
  is what makes CPU training practical (on 2 CPU cores it trains about 2.5× faster than a
  plain five-layer 32–128-channel CNN at full resolution).

:func:`make_backbone` picks between them by image size (``"auto"``: below 32 px → small).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet18", "SmallResNet", "make_backbone", "projection_head"]


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and a residual connection (ResNet-18/34 block)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self, in_channels: int, stem_channels: int, stem_stride: int, stages: Sequence[tuple]):
        super().__init__()
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        c = stem_channels
        for c_out, n_blocks, stride in stages:
            for i in range(n_blocks):
                blocks.append(BasicBlock(c, c_out, stride if i == 0 else 1))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, out_dim)`` of an image batch ``(B, C, H, W)``."""
        return self.pool(self.blocks(self.stem(x))).flatten(1)

    @property
    def n_blocks(self) -> int:
        """Number of residual blocks (the valid ``layer`` values of :meth:`forward_to`)."""
        return len(self.blocks)

    def forward_to(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Activations after residual block ``layer`` (0-based), flattened to ``(B, C·H·W)``.

        Early blocks keep the spatial layout (strokes, edges) and tend to transfer to classes
        the network never saw better than the pooled output does.
        """
        h = self.stem(x)
        for block in self.blocks[: layer + 1]:
            h = block(h)
        return h.flatten(1)


class ResNet18(_ResNet):
    """CIFAR-style ResNet-18: 3×3 stride-1 stem, no max-pool, four stages, 512-d pooled output.

    Parameters
    ----------
    in_channels
        Image channels (1 for grayscale, 3 for RGB).

    Examples
    --------
    >>> import torch
    >>> from manifex.nn import ResNet18
    >>> ResNet18(3)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 512])
    """

    def __init__(self, in_channels: int = 3):
        super().__init__(in_channels, 64, 1, [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)])


class SmallResNet(_ResNet):
    """A small residual network for small images (8–28 px), ``8·width``-d pooled output.

    Stem: 3×3 convolution to ``width`` channels (stride 2 when ``stem_stride=2``), then three
    stages of one :class:`BasicBlock` each with ``2·width``, ``4·width`` and ``8·width`` channels,
    each halving the resolution, then global average pooling.

    Parameters
    ----------
    in_channels
        Image channels.
    width
        Channels of the stem (the stages use 2×, 4× and 8× this).
    stem_stride
        1 keeps full resolution in the stem (16 px images); 2 halves it (28 px and up).
    blocks_per_stage
        Residual blocks per stage.

    Examples
    --------
    >>> import torch
    >>> from manifex.nn import SmallResNet
    >>> SmallResNet(1)(torch.rand(4, 1, 16, 16)).shape
    torch.Size([4, 128])
    """

    def __init__(
        self, in_channels: int = 1, *, width: int = 16, stem_stride: int = 1, blocks_per_stage: int = 1
    ):
        super().__init__(
            in_channels,
            width,
            stem_stride,
            [
                (2 * width, blocks_per_stage, 2),
                (4 * width, blocks_per_stage, 2),
                (8 * width, blocks_per_stage, 2),
            ],
        )


def make_backbone(name: str, in_channels: int, image_size: int) -> nn.Module:
    """Build a backbone by name: ``"resnet18"``, ``"small"`` or ``"auto"``.

    ``"auto"`` chooses :class:`SmallResNet` for images smaller than 32 px (stride-2 stem from
    16 px up) and :class:`ResNet18` from 32 px up.

    Parameters
    ----------
    name
        ``"auto"``, ``"small"`` or ``"resnet18"``.
    in_channels
        Image channels.
    image_size
        The smaller side of the images, in pixels.

    Examples
    --------
    >>> from manifex.nn import make_backbone
    >>> type(make_backbone("auto", 1, 16)).__name__, type(make_backbone("auto", 3, 32)).__name__
    ('SmallResNet', 'ResNet18')
    """
    if name == "auto":
        name = "small" if image_size < 32 else "resnet18"
    if name == "resnet18":
        return ResNet18(in_channels)
    if name == "small":
        return SmallResNet(in_channels, stem_stride=2 if image_size >= 16 else 1)
    raise ValueError(f"Unknown backbone {name!r}; use 'auto', 'small', 'resnet18' or an nn.Module.")


def projection_head(d_in: int, hidden: int = 1024, d_out: int = 128) -> nn.Sequential:
    """t-SimCNE's head: ``Linear(d_in, hidden) → ReLU → Linear(hidden, d_out)``.

    Parameters
    ----------
    d_in
        Width of the backbone features (512 for ResNet-18).
    hidden
        Width of the hidden layer.
    d_out
        Output dimension: 128 in t-SimCNE's first stage, 2 for the map.

    Examples
    --------
    >>> from manifex.nn import projection_head
    >>> projection_head(512)
    Sequential(
      (0): Linear(in_features=512, out_features=1024, bias=True)
      (1): ReLU()
      (2): Linear(in_features=1024, out_features=128, bias=True)
    )
    """
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
