"""Image input for t-SimCNE: validation and the meaning of pixel values.

The network reads every image as floats in [0, 1]. What 0 and 1 mean is decided from the values
and the dtype together, the same way for training images and for queries:

* ``uint8``: 0–255 (the usual 8-bit images);
* ``bool``, or integers / floats whose values all lie in [0, 1]: 0–1 (probabilities, masks,
  images already scaled to [0, 1]);
* other integers or floats within [0, 255]: 0–255 (8-bit values stored in another dtype);
* anything else (negative values, 16-bit images, z-scores): the array's own (min, max) for the
  training images; every query of such a model is then mapped with the *training* range so that
  the same value means the same intensity.

Pass ``pixel_range=(lo, hi)`` to :class:`~manifex.models.TSimCNE` to fix the range yourself
(for instance 16-bit microscopy whose darkest image is not 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["MIN_IMAGE_SIZE", "check_images", "images_to_uint8", "infer_pixel_range", "prepare_images"]

MIN_IMAGE_SIZE = 8


def check_images(images: Any, *, name: str = "images") -> np.ndarray:
    """Validate an image array of shape ``(n, H, W)`` or ``(n, H, W, C)``; return it as numpy.

    Raises
    ------
    TypeError
        Non-numeric images.
    ValueError
        Wrong number of dimensions, no images, images smaller than 8 px, more than 4 channels,
        or non-finite pixels.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.dtype.kind not in "buif":
        raise TypeError(f"`{name}` must hold numbers, got dtype {x.dtype}.")
    if x.ndim not in (3, 4):
        raise ValueError(
            f"`{name}` must have shape (n, H, W) or (n, H, W, C), got {x.ndim} dimensions {x.shape}."
        )
    if x.shape[0] < 1:
        raise ValueError(f"`{name}` holds no images.")
    if min(x.shape[1], x.shape[2]) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"`{name}` are {x.shape[1]}×{x.shape[2]} px; t-SimCNE needs at least "
            f"{MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} px."
        )
    if x.ndim == 4 and not 1 <= x.shape[3] <= 4:
        raise ValueError(
            f"`{name}` has {x.shape[3]} channels in its last axis; expected (n, H, W, C) with C ≤ 4."
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"`{name}` contains {bad} NaN or infinite pixel value(s).")
    return x


def infer_pixel_range(x: np.ndarray) -> tuple[tuple[float, float], bool]:
    """The pixel range of ``x`` by the rules of this module, and whether it is a standard one
    (0–1 or 0–255) rather than the array's own (min, max)."""
    if x.dtype == np.uint8:
        return (0.0, 255.0), True
    if x.dtype == np.bool_:
        return (0.0, 1.0), True
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        return (0.0, 1.0), True
    if lo >= 0.0 and hi <= 255.0:
        return (0.0, 255.0), True
    return (lo, hi if hi > lo else lo + 1.0), False


def images_to_uint8(x: np.ndarray, pixel_range: tuple[float, float]) -> np.ndarray:
    """Map images of shape (n, H, W[, C]) with the given pixel range to ``(n, C, H, W)`` uint8."""
    if x.ndim == 3:
        x = x[:, :, :, None]
    if x.dtype != np.uint8 or tuple(pixel_range) != (0.0, 255.0):
        lo, hi = (float(v) for v in pixel_range)
        x = np.clip(np.rint((x.astype(np.float32) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def prepare_images(
    images: Any,
    *,
    name: str = "images",
    pixel_range: tuple[float, float] | None = None,
    reference_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Validate images and return them as ``(n, C, H, W)`` uint8 plus the pixel range used.

    Parameters
    ----------
    images
        ``(n, H, W)`` or ``(n, H, W, C)`` numbers (numpy, torch, or array-like).
    name
        Name used in error messages.
    pixel_range
        Fixed ``(lo, hi)`` mapped to 0 and 255; ``None`` infers it (module docstring).
    reference_range
        For a query of a model whose training images had no standard range (e.g. z-scores):
        that range, used for the query whatever its own values (so that the same value means
        the same intensity). ``None`` infers the query's range by the same rules.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.models.tsimcne import prepare_images
    >>> u8 = (np.arange(2 * 8 * 8) % 256).astype(np.uint8).reshape(2, 8, 8)
    >>> a, ra = prepare_images(u8)
    >>> b, rb = prepare_images(u8 / 255.0)  # the same images as floats in [0, 1]
    >>> ra, rb, bool((a == b).all())
    ((0.0, 255.0), (0.0, 1.0), True)
    >>> prepare_images(np.eye(8, dtype=np.int64)[None])[1]  # a 0/1 integer mask
    (0.0, 1.0)
    """
    x = check_images(images, name=name)
    if pixel_range is not None:
        rng = (float(pixel_range[0]), float(pixel_range[1]))
    elif reference_range is not None:
        rng = (float(reference_range[0]), float(reference_range[1]))
    else:
        rng, _ = infer_pixel_range(x)
    return images_to_uint8(x, rng), rng
