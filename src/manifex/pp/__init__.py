"""Preprocessing: inputs for :mod:`manifex.tl` (a batch-corrected latent from scvi-tools)."""

from ._scvi import scvi_latent

__all__ = ["scvi_latent"]
