"""Torch building blocks shared by the models."""

from .mlp import MLP, mlp_block
from .resnet import ResNet18, SmallResNet, make_backbone, projection_head

__all__ = ["MLP", "ResNet18", "SmallResNet", "make_backbone", "mlp_block", "projection_head"]
