"""Augmentations, applied to whole minibatches on the training device.

Expression data: :class:`KNNMix`, :class:`FeatureDropout`, :class:`GaussianNoise`,
:class:`NeighborSwap`, composed with :class:`Compose`. Image augmentations live in
:mod:`manifex.augment.image`.
"""

from .expression import (
    AugmentContext,
    Compose,
    ExpressionAugmentation,
    FeatureDropout,
    GaussianNoise,
    KNNMix,
    NeighborSwap,
    expression_preset,
)
from .image import ColorJitter, ImageCompose, RandomGeometry, RandomGrayscale, image_preset

__all__ = [
    "AugmentContext",
    "ColorJitter",
    "Compose",
    "ExpressionAugmentation",
    "FeatureDropout",
    "GaussianNoise",
    "ImageCompose",
    "KNNMix",
    "NeighborSwap",
    "RandomGeometry",
    "RandomGrayscale",
    "expression_preset",
    "image_preset",
]
