"""Expression-data augmentations, batched on the device and seeded.

Every augmentation is a callable ``aug(x, idx, ctx) -> x_aug`` where ``x`` is the dense
minibatch (B × D) on the device, ``idx`` the rows it came from, and ``ctx`` an
:class:`AugmentContext` with the full data, its kNN table, per-feature scales and the random
generator. Users can pass any callable with that signature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "AugmentContext",
    "Compose",
    "ExpressionAugmentation",
    "FeatureDropout",
    "GaussianNoise",
    "KNNMix",
    "NeighborSwap",
    "expression_preset",
]


@dataclass
class AugmentContext:
    """What an expression augmentation may look at besides the minibatch.

    The models build it once per fit; build one yourself to try an augmentation outside a
    model.

    Parameters
    ----------
    data
        Indexable with a tensor of rows, returning dense rows on the device
        (the models' on-device data store or a plain tensor).
    knn
        ``(n, K)`` long tensor of each row's neighbours (self excluded), on the device;
        ``None`` when no augmentation needs neighbours.
    feature_std
        ``(D,)`` per-feature standard deviation of the data, on the device; ``None`` lets
        :class:`GaussianNoise` use the minibatch's.
    generator
        The random generator all augmentations draw from (seeded by the model).

    Examples
    --------
    >>> import torch
    >>> from manifex.augment import AugmentContext, KNNMix
    >>> x = torch.randn(100, 20)
    >>> knn = torch.randint(100, (100, 15))  # normally the kNN table of x
    >>> ctx = AugmentContext(x, knn, x.std(0), torch.Generator().manual_seed(0))
    >>> idx = torch.arange(32)
    >>> KNNMix()(x[idx], idx, ctx).shape
    torch.Size([32, 20])
    """

    data: object
    knn: torch.Tensor | None
    feature_std: torch.Tensor | None
    generator: torch.Generator

    def rand(self, *shape: int, device: torch.device) -> torch.Tensor:
        """Uniform [0, 1) random numbers of ``shape`` from the context's generator, on ``device``."""
        return torch.rand(*shape, generator=self.generator, device=self.generator.device).to(device)

    def neighbor_rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One uniformly drawn neighbour of each row in ``idx``: (neighbour index, its data)."""
        if self.knn is None:
            raise ValueError("This augmentation needs a kNN table, but none was built.")
        k = self.knn.shape[1]
        col = torch.randint(k, (idx.shape[0],), generator=self.generator, device=self.generator.device)
        j = self.knn[idx, col.to(idx.device)]
        return j, self.data[j]


#: Signature of an expression augmentation: ``aug(x, idx, ctx) -> x_aug`` with ``x`` the
#: ``(B, D)`` minibatch on the device, ``idx`` its row indices and ``ctx`` an
#: :class:`AugmentContext`.
ExpressionAugmentation = Callable[[torch.Tensor, torch.Tensor, AugmentContext], torch.Tensor]


class KNNMix:
    """Mix each cell toward one of its K nearest neighbours: ``(1 - r) x_i + r x_j``.

    ``r ~ U(0, strength)``; ``strength=1`` is DLME's local-flatness augmentation (the segment
    between near neighbours is assumed to lie on the manifold). ``j`` is drawn uniformly from
    the cell's neighbours in ``ctx.knn``.

    Parameters
    ----------
    strength
        Largest mixing weight, in [0, 1]; 0 leaves the cells unchanged.

    Examples
    --------
    >>> import manifex as mx
    >>> model = mx.models.DLME(augment=[mx.augment.KNNMix(0.5)])  # mix at most halfway
    """

    def __init__(self, strength: float = 1.0):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"`strength` must be in [0, 1], got {strength}.")
        self.strength = strength

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        _, xj = ctx.neighbor_rows(idx)
        r = ctx.rand(x.shape[0], 1, device=x.device) * self.strength
        return (1.0 - r) * x + r * xj.to(x.dtype)

    def __repr__(self) -> str:
        return f"KNNMix(strength={self.strength})"


class FeatureDropout:
    """Set a random fraction ``p`` of each cell's features to zero (scRNA-seq dropout).

    Parameters
    ----------
    p
        Probability that a feature is zeroed, independently per cell and feature, in [0, 1).

    Examples
    --------
    >>> import manifex as mx
    >>> aug = [mx.augment.KNNMix(), mx.augment.FeatureDropout(0.2)]
    >>> model = mx.models.DLME(augment=aug)
    """

    def __init__(self, p: float = 0.1):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"`p` must be in [0, 1), got {p}.")
        self.p = p

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        keep = ctx.rand(*x.shape, device=x.device) >= self.p
        return x * keep

    def __repr__(self) -> str:
        return f"FeatureDropout(p={self.p})"


class GaussianNoise:
    """Add Gaussian noise with standard deviation ``scale`` × each feature's standard deviation.

    The feature standard deviations are those of the whole training data (``ctx.feature_std``),
    or of the minibatch when the context has none.

    Parameters
    ----------
    scale
        Noise level relative to each feature's standard deviation (non-negative).

    Examples
    --------
    >>> import manifex as mx
    >>> aug = mx.augment.Compose([mx.augment.KNNMix(), mx.augment.GaussianNoise(0.05)])
    >>> model = mx.models.DLME(augment=aug)
    """

    def __init__(self, scale: float = 0.1):
        if scale < 0:
            raise ValueError(f"`scale` must be non-negative, got {scale}.")
        self.scale = scale

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        noise = torch.randn(*x.shape, generator=ctx.generator, device=ctx.generator.device).to(x.device)
        std = ctx.feature_std if ctx.feature_std is not None else x.std(0)
        return x + noise * (self.scale * std)

    def __repr__(self) -> str:
        return f"GaussianNoise(scale={self.scale})"


class NeighborSwap:
    """Replace a random fraction ``p`` of each cell's features by those of one of its neighbours.

    One neighbour is drawn per cell from ``ctx.knn``; each feature is taken from it with
    probability ``p``.

    Parameters
    ----------
    p
        Probability that a feature is swapped, in [0, 1].

    Examples
    --------
    >>> import manifex as mx
    >>> aug = [mx.augment.KNNMix(), mx.augment.NeighborSwap(0.2)]
    >>> model = mx.models.TSimCNE(augment=mx.augment.Compose(aug))
    """

    def __init__(self, p: float = 0.1):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"`p` must be in [0, 1], got {p}.")
        self.p = p

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        _, xj = ctx.neighbor_rows(idx)
        swap = ctx.rand(*x.shape, device=x.device) < self.p
        return torch.where(swap, xj.to(x.dtype), x)

    def __repr__(self) -> str:
        return f"NeighborSwap(p={self.p})"


class Compose:
    """Apply expression augmentations one after another.

    Parameters
    ----------
    augmentations
        Callables ``aug(x, idx, ctx)``, applied in order.

    Examples
    --------
    >>> import manifex as mx
    >>> aug = mx.augment.Compose([mx.augment.KNNMix(), mx.augment.FeatureDropout(0.1)])
    >>> aug
    Compose([KNNMix(strength=1.0), FeatureDropout(p=0.1)])
    """

    def __init__(self, augmentations: Sequence[ExpressionAugmentation]):
        self.augmentations = list(augmentations)

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        for aug in self.augmentations:
            x = aug(x, idx, ctx)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.augmentations!r})"


def expression_preset(name: str) -> Compose:
    """Named expression augmentation sets.

    ``"knn_mix"``: kNN-mix only (DLME's reference). ``"default"``: kNN-mix, then 10% feature
    dropout and Gaussian noise at 0.1 × feature std. ``"strong"``: kNN-mix, 20% neighbour swap,
    20% dropout, noise 0.2. ``"none"``: identity.

    Parameters
    ----------
    name
        ``"knn_mix"``, ``"default"``, ``"strong"`` or ``"none"``.

    Returns
    -------
    The set as a :class:`Compose`.

    Examples
    --------
    >>> from manifex.augment import expression_preset
    >>> expression_preset("default")
    Compose([KNNMix(strength=1.0), FeatureDropout(p=0.1), GaussianNoise(scale=0.1)])
    """
    presets = {
        "none": [],
        "knn_mix": [KNNMix(1.0)],
        "default": [KNNMix(1.0), FeatureDropout(0.1), GaussianNoise(0.1)],
        "strong": [KNNMix(1.0), NeighborSwap(0.2), FeatureDropout(0.2), GaussianNoise(0.2)],
    }
    if name not in presets:
        raise ValueError(f"Unknown augmentation preset {name!r}; choose one of {sorted(presets)}.")
    return Compose(presets[name])
