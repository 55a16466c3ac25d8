"""Fully connected networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "mlp_block"]


def mlp_block(
    d_in: int, d_out: int, *, batchnorm: bool = True, activation: str = "leaky_relu"
) -> nn.Sequential:
    """Linear (+ BatchNorm) + activation.

    Parameters
    ----------
    d_in, d_out
        Input and output widths.
    batchnorm
        Add ``BatchNorm1d`` after the linear layer.
    activation
        ``"leaky_relu"`` (slope 0.1, DLME's), ``"relu"`` or ``"none"``.

    Examples
    --------
    >>> from manifex.nn import mlp_block
    >>> mlp_block(50, 500)
    Sequential(
      (0): Linear(in_features=50, out_features=500, bias=True)
      (1): BatchNorm1d(500, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
      (2): LeakyReLU(negative_slope=0.1)
    )
    """
    layers: list[nn.Module] = [nn.Linear(d_in, d_out)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(d_out))
    if activation == "leaky_relu":
        layers.append(nn.LeakyReLU(0.1))
    elif activation == "relu":
        layers.append(nn.ReLU())
    elif activation != "none":
        raise ValueError(f"Unknown activation {activation!r}.")
    return nn.Sequential(*layers)


class MLP(nn.Sequential):
    """A stack of :func:`mlp_block` layers, optionally ending in a plain linear layer.

    Parameters
    ----------
    d_in
        Input width.
    hidden
        Widths of the blocks (Linear + BatchNorm + activation each).
    d_out
        If given, a final plain ``Linear(hidden[-1], d_out)`` without normalisation or activation.
    batchnorm, activation
        Passed to every block.

    Examples
    --------
    >>> import torch
    >>> from manifex.nn import MLP
    >>> encoder = MLP(50, [500, 300, 80])  # DLME's encoder for 50 PCs
    >>> projector = MLP(80, [500, 80], d_out=2)
    >>> projector(encoder(torch.randn(16, 50))).shape
    torch.Size([16, 2])
    """

    def __init__(
        self,
        d_in: int,
        hidden: Sequence[int],
        d_out: int | None = None,
        *,
        batchnorm: bool = True,
        activation: str = "leaky_relu",
    ):
        layers: list[nn.Module] = []
        d = d_in
        for h in hidden:
            layers.append(mlp_block(d, h, batchnorm=batchnorm, activation=activation))
            d = h
        if d_out is not None:
            layers.append(nn.Linear(d, d_out))
        super().__init__(*layers)
        self.d_in = d_in
        self.d_out = d_out if d_out is not None else d
        #: number of hidden blocks (the valid ``layer`` values of :meth:`forward_to`)
        self.n_blocks = len(hidden)

    def forward_to(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Output of hidden block ``layer`` (0-based)."""
        for block in list(self)[: layer + 1]:  # slicing would rebuild an MLP from modules
            x = block(x)
        return x
