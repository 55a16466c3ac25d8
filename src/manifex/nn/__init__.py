"""Torch building blocks shared by the models."""

from .mlp import MLP, mlp_block

__all__ = ["MLP", "mlp_block"]
