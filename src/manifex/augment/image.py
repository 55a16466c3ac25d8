"""Image augmentations for contrastive learning, batched on the training device (pure torch).

Every augmentation is a callable ``aug(x, generator) -> x_aug`` on a float batch
``x`` of shape ``(B, C, H, W)`` with values in [0, 1]; each image gets its own random parameters,
drawn from ``generator`` (a :class:`torch.Generator`), so a fixed seed gives the same views.
Users can pass any callable with that signature to :class:`manifex.models.TSimCNE`.

The geometric part (random resized crop, flips, 90° rotations) is one affine map per image,
applied to the whole batch with a single :func:`torch.nn.functional.grid_sample`. Colour jitter
works on 3-channel images; on other channel counts brightness and contrast act and saturation,
hue and grayscale are identities.

Presets (:func:`image_preset`):

``"natural"``
    The t-SimCNE / SimCLR set: crop scale 0.2–1, horizontal flip p=0.5, colour jitter
    (brightness, contrast, saturation 0.4, hue 0.1) with p=0.8, grayscale p=0.2.
``"digits"``
    Digits and characters: no flips or rotations (a flipped 2 is no 2), a milder crop
    (scale 0.4–1, aspect ratio 0.8–1.25), brightness/contrast jitter 0.4 with p=0.8.
``"microscopy"``
    Cell crops: crop scale 0.2–1, horizontal and vertical flips, random 90° rotations,
    brightness/contrast/saturation jitter 0.4 with p=0.8 but no hue shift (stains carry
    meaning), grayscale p=0.2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "ColorJitter",
    "ImageAugmentation",
    "ImageCompose",
    "RandomGeometry",
    "RandomGrayscale",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "image_preset",
    "rgb_to_grayscale",
]

#: Signature of an image augmentation: ``aug(x, generator) -> x_aug`` on a float batch
#: ``(B, C, H, W)`` with values in [0, 1].
ImageAugmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

#: ITU-R BT.601 luma weights (those of PIL and torchvision).
LUMA = (0.299, 0.587, 0.114)


def _rand(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * _rand(n, generator, device)


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"Image augmentations take a (B, C, H, W) batch, got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"Image augmentations take floats in [0, 1], got dtype {x.dtype}.")


# ---- functional colour operations (per-image factors of shape (B,)) ---------------------------
def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luminance ``0.299 R + 0.587 G + 0.114 B`` of a ``(B, 3, H, W)`` batch, shape ``(B, 1, H, W)``.

    Parameters
    ----------
    x
        RGB images, floats in [0, 1].

    Examples
    --------
    >>> import torch
    >>> from manifex.augment.image import rgb_to_grayscale
    >>> rgb_to_grayscale(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).item()
    0.29899999499320984
    """
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_grayscale needs 3 channels, got {x.shape[1]}.")
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return rgb_to_grayscale(x) if x.shape[1] == 3 else x.mean(1, keepdim=True)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply each image by its factor and clip to [0, 1].

    Parameters
    ----------
    x
        ``(B, C, H, W)`` images, floats in [0, 1].
    factor
        ``(B,)`` factors; 1 leaves an image unchanged.

    Examples
    --------
    >>> import torch
    >>> from manifex.augment.image import adjust_brightness
    >>> adjust_brightness(torch.full((2, 1, 4, 4), 0.5), torch.tensor([0.5, 4.0]))[:, 0, 0, 0]
    tensor([0.2500, 1.0000])
    """
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean gray level: ``f·x + (1 − f)·mean`` (clipped to [0, 1]).

    Parameters
    ----------
    x
        ``(B, C, H, W)`` images, floats in [0, 1].
    factor
        ``(B,)`` factors; 1 leaves an image unchanged, 0 makes it uniformly gray.

    Examples
    --------
    >>> import torch
    >>> from manifex.augment.image import adjust_contrast
    >>> x = torch.rand(3, 3, 8, 8)
    >>> adjust_contrast(x, torch.zeros(3)).std(dim=(1, 2, 3)).max().item() < 1e-6
    True
    """
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each RGB image with its grayscale version (identity for non-RGB images).

    Parameters
    ----------
    x
        ``(B, C, H, W)`` images, floats in [0, 1].
    factor
        ``(B,)`` factors; 1 leaves an image unchanged, 0 turns it gray.

    Examples
    --------
    >>> import torch
    >>> from manifex.augment.image import adjust_saturation
    >>> gray = adjust_saturation(torch.rand(2, 3, 8, 8), torch.zeros(2))
    >>> (gray[:, 0] - gray[:, 1]).abs().max().item() < 1e-6
    True
    """
    if x.shape[1] != 3:
        return x
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * rgb_to_grayscale(x)).clamp_(0.0, 1.0)


# RGB <-> YIQ (NTSC); a hue shift is a rotation of the (I, Q) chroma plane.
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each RGB image by ``shift`` turns (in [-0.5, 0.5]); identity if not RGB.

    Implemented as a rotation of the chroma plane in YIQ space, which keeps the luma ``Y``
    unchanged and needs no HSV conversion.

    Parameters
    ----------
    x
        ``(B, C, H, W)`` images, floats in [0, 1].
    shift
        ``(B,)`` hue rotations in turns; 0 leaves an image unchanged.

    Examples
    --------
    >>> import torch
    >>> from manifex.augment.image import adjust_hue
    >>> x = torch.rand(4, 3, 8, 8)
    >>> torch.allclose(adjust_hue(x, torch.zeros(4)), x, atol=1e-5)
    True
    """
    if x.shape[1] != 3:
        return x
    fwd = _RGB2YIQ.to(device=x.device, dtype=x.dtype)
    inv = torch.linalg.inv(fwd)
    theta = shift.to(x.dtype) * (2.0 * math.pi)
    c, s = torch.cos(theta), torch.sin(theta)
    b = x.shape[0]
    rot = torch.zeros(b, 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = c, -s
    rot[:, 2, 1], rot[:, 2, 2] = s, c
    m = inv.unsqueeze(0) @ rot @ fwd.unsqueeze(0)  # (B, 3, 3), RGB -> RGB
    out = torch.einsum("bij,bjhw->bihw", m, x)
    return out.clamp_(0.0, 1.0)


# ---- augmentation classes ---------------------------------------------------------------------
class RandomGeometry:
    """Random resized crop, flips and 90° rotations in one batched resampling.

    Each image gets a crop covering a fraction ``scale`` of its area (uniform in the given range)
    with aspect ratio log-uniform in ``ratio`` (limited so the crop fits), placed uniformly
    inside the image and resized back to the input size with bilinear interpolation; then a
    horizontal flip with probability ``hflip``, a vertical flip with probability ``vflip`` and,
    if ``rot90``, a rotation by a random multiple of 90°.

    Parameters
    ----------
    scale
        Range of the crop's area as a fraction of the image (``(1, 1)``: no crop).
    ratio
        Range of the crop's aspect ratio (width / height).
    hflip, vflip
        Flip probabilities.
    rot90
        Rotate by 0°, 90°, 180° or 270°, uniformly (square images only).

    Examples
    --------
    >>> import torch
    >>> from manifex.augment.image import RandomGeometry
    >>> aug = RandomGeometry(scale=(0.2, 1.0), hflip=0.5)
    >>> aug(torch.rand(8, 3, 32, 32), torch.Generator().manual_seed(0)).shape
    torch.Size([8, 3, 32, 32])
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        vflip: float = 0.0,
        rot90: bool = False,
    ):
        if not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"`scale` must satisfy 0 < low ≤ high ≤ 1, got {scale}.")
        if not (0.0 < ratio[0] <= 1.0 <= ratio[1]):
            raise ValueError(f"`ratio` must satisfy 0 < low ≤ 1 ≤ high, got {ratio}.")
        for name, p in (("hflip", hflip), ("vflip", vflip)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"`{name}` must be a probability, got {p}.")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.hflip = float(hflip)
        self.vflip = float(vflip)
        self.rot90 = bool(rot90)

    def sample_theta(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Affine matrices ``(n, 2, 3)`` in :func:`~torch.nn.functional.affine_grid` convention.

        The crop's area fraction is ``|det(theta[:, :, :2])|``.
        """
        s = _uniform(n, self.scale[0], self.scale[1], generator, device)
        # aspect ratio r = w / h with w = sqrt(s r) ≤ 1 and h = sqrt(s / r) ≤ 1  <=>  s ≤ r ≤ 1/s
        lo = torch.clamp(s, min=self.ratio[0]).log()
        hi = torch.clamp(1.0 / s, max=self.ratio[1]).log()
        r = torch.exp(lo + (hi - lo) * _rand(n, generator, device))
        w = torch.sqrt(s * r).clamp(max=1.0)
        h = torch.sqrt(s / r).clamp(max=1.0)
        cx = (1.0 - w) * (2.0 * _rand(n, generator, device) - 1.0)
        cy = (1.0 - h) * (2.0 * _rand(n, generator, device) - 1.0)
        a = torch.zeros(n, 2, 2, device=device)
        a[:, 0, 0] = w
        a[:, 1, 1] = h
        if self.hflip > 0:
            fx = torch.where(_rand(n, generator, device) < self.hflip, -1.0, 1.0)
            a[:, :, 0] = a[:, :, 0] * fx[:, None]
        if self.vflip > 0:
            fy = torch.where(_rand(n, generator, device) < self.vflip, -1.0, 1.0)
            a[:, :, 1] = a[:, :, 1] * fy[:, None]
        if self.rot90:
            k = torch.floor(_rand(n, generator, device) * 4.0).clamp(max=3.0)
            ang = k * (math.pi / 2)
            c, si = torch.cos(ang).round(), torch.sin(ang).round()
            rot = torch.stack([torch.stack([c, -si], -1), torch.stack([si, c], -1)], -2)
            a = a @ rot
        return torch.cat([a, torch.stack([cx, cy], -1).unsqueeze(-1)], dim=2)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_batch(x)
        if self.rot90 and x.shape[-1] != x.shape[-2]:
            raise ValueError(f"90° rotations need square images, got {tuple(x.shape[-2:])}.")
        theta = self.sample_theta(x.shape[0], generator, x.device).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def __repr__(self) -> str:
        return (
            f"RandomGeometry(scale={self.scale}, ratio={tuple(round(v, 4) for v in self.ratio)}, "
            f"hflip={self.hflip}, vflip={self.vflip}, rot90={self.rot90})"
        )


class ColorJitter:
    """Random brightness, contrast, saturation and hue, applied to each image with probability ``p``.

    Factors are drawn per image: brightness, contrast and saturation uniformly in
    ``[1 − v, 1 + v]``, the hue shift uniformly in ``[−hue, hue]`` turns. They are applied in
    that fixed order; images not selected (probability ``1 − p``) pass unchanged. Saturation
    and hue act on RGB images only.

    Parameters
    ----------
    brightness, contrast, saturation
        Strength ``v`` in [0, 1] of each jitter; 0 turns it off.
    hue
        Largest hue shift in turns, in [0, 0.5].
    p
        Probability that an image is jittered.

    Examples
    --------
    >>> import torch
    >>> from manifex.augment.image import ColorJitter
    >>> ColorJitter(0.4, 0.4, 0.4, 0.1)(torch.rand(4, 3, 8, 8), torch.Generator().manual_seed(0)).shape
    torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        p: float = 0.8,
    ):
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {v}.")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"`hue` must be in [0, 0.5], got {hue}.")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"`p` must be a probability, got {p}.")
        self.brightness, self.contrast, self.saturation, self.hue, self.p = (
            float(brightness),
            float(contrast),
            float(saturation),
            float(hue),
            float(p),
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_batch(x)
        n, dev = x.shape[0], x.device
        on = (_rand(n, generator, dev) < self.p).to(x.dtype)

        def factor(v: float) -> torch.Tensor:
            f = _uniform(n, 1.0 - v, 1.0 + v, generator, dev).to(x.dtype)
            return on * f + (1.0 - on)

        if self.brightness > 0:
            x = adjust_brightness(x, factor(self.brightness))
        if self.contrast > 0:
            x = adjust_contrast(x, factor(self.contrast))
        if x.shape[1] == 3:
            if self.saturation > 0:
                x = adjust_saturation(x, factor(self.saturation))
            if self.hue > 0:
                x = adjust_hue(x, on * _uniform(n, -self.hue, self.hue, generator, dev).to(x.dtype))
        return x

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, p={self.p})"
        )


class RandomGrayscale:
    """Replace an RGB image by its luminance (in all three channels) with probability ``p``.

    Identity for images that are not RGB.

    Parameters
    ----------
    p
        Probability that an image is turned gray.

    Examples
    --------
    >>> import torch
    >>> from manifex.augment.image import RandomGrayscale
    >>> RandomGrayscale(1.0)(torch.rand(2, 3, 8, 8), torch.Generator()).std(1).max().item() < 1e-6
    True
    """

    def __init__(self, p: float = 0.2):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"`p` must be a probability, got {p}.")
        self.p = float(p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_batch(x)
        on = _rand(x.shape[0], generator, x.device) < self.p
        if x.shape[1] != 3:
            return x
        return torch.where(on.view(-1, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)

    def __repr__(self) -> str:
        return f"RandomGrayscale(p={self.p})"


class ImageCompose:
    """Apply image augmentations one after another.

    Parameters
    ----------
    augmentations
        Callables ``aug(x, generator)``, applied in order.

    Examples
    --------
    >>> import torch
    >>> from manifex.augment.image import ImageCompose, RandomGeometry, RandomGrayscale
    >>> aug = ImageCompose([RandomGeometry(), RandomGrayscale(0.2)])
    >>> aug(torch.rand(4, 3, 16, 16), torch.Generator().manual_seed(1)).shape
    torch.Size([4, 3, 16, 16])
    """

    def __init__(self, augmentations: Sequence[ImageAugmentation]):
        self.augmentations = list(augmentations)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for aug in self.augmentations:
            x = aug(x, generator)
        return x

    def __repr__(self) -> str:
        return f"ImageCompose({self.augmentations!r})"


IMAGE_PRESETS = ("natural", "digits", "microscopy", "none")


def image_preset(name: str) -> ImageCompose:
    """Named image augmentation sets: ``"natural"``, ``"digits"``, ``"microscopy"``, ``"none"``.

    ``"natural"``: the t-SimCNE / SimCLR set (crop scale 0.2–1, horizontal flip, colour
    jitter 0.4/0.4/0.4/0.1 with p=0.8, grayscale p=0.2). ``"digits"``: no flips, a milder crop
    (scale 0.4–1), brightness/contrast jitter. ``"microscopy"``: crops, horizontal and vertical
    flips, 90° rotations, jitter without hue shift, grayscale p=0.2. ``"none"``: identity.

    Parameters
    ----------
    name
        ``"natural"``, ``"digits"``, ``"microscopy"`` or ``"none"``.

    Returns
    -------
    The set as an :class:`ImageCompose`.

    Examples
    --------
    >>> from manifex.augment.image import image_preset
    >>> image_preset("digits")
    ImageCompose([RandomGeometry(scale=(0.4, 1.0), ratio=(0.8, 1.25), hflip=0.0, vflip=0.0, rot90=False), ColorJitter(brightness=0.4, contrast=0.4, saturation=0.0, hue=0.0, p=0.8)])
    """
    if name == "natural":
        augs: list[ImageAugmentation] = [
            RandomGeometry((0.2, 1.0), (3 / 4, 4 / 3), hflip=0.5),
            ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            RandomGrayscale(0.2),
        ]
    elif name == "digits":
        augs = [
            RandomGeometry((0.4, 1.0), (0.8, 1.25), hflip=0.0),
            ColorJitter(0.4, 0.4, 0.0, 0.0, p=0.8),
        ]
    elif name == "microscopy":
        augs = [
            RandomGeometry((0.2, 1.0), (3 / 4, 4 / 3), hflip=0.5, vflip=0.5, rot90=True),
            ColorJitter(0.4, 0.4, 0.4, 0.0, p=0.8),
            RandomGrayscale(0.2),
        ]
    elif name == "none":
        augs = []
    else:
        raise ValueError(f"Unknown image augmentation preset {name!r}; choose one of {list(IMAGE_PRESETS)}.")
    return ImageCompose(augs)
