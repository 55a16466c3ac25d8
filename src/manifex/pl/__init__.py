"""Plotting: embedding wrappers over ``sc.pl.embedding`` and training curves."""

from ._embedding import dlme, embedding, loss_curve

__all__ = ["dlme", "embedding", "loss_curve"]
