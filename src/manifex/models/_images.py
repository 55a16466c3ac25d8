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

Images larger than memory stay on disk: an h5py dataset or zarr array of shape (n, H, W[, C])
(for instance ``h5py.File("atlas.h5ad")["obsm/image"]``) is wrapped in :class:`BackedImages`,
which checks it and infers its range in one pass over chunks and then reads the rows each
minibatch needs (:class:`manifex.train._data.StreamData`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from scanpy import logging as logg

from ..train._data import StreamData, is_backed, read_rows
from ._inputs import as_matrix

__all__ = [
    "MIN_IMAGE_SIZE",
    "BackedImages",
    "ImagesOrMatrix",
    "check_image_shape",
    "check_images",
    "images_to_uint8",
    "infer_pixel_range",
    "is_backed_images",
    "on_disk",
    "prepare_images",
]

MIN_IMAGE_SIZE = 8
#: bytes of images read at a time by the pass over on-disk images
CHUNK_BYTES = 64 * 2**20


def check_image_shape(shape: tuple[int, ...], dtype: Any, *, name: str = "images") -> None:
    """The shape and dtype rules of :func:`check_images`, without reading a pixel."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "buif":
        raise TypeError(f"`{name}` must hold numbers, got dtype {dtype}.")
    if len(shape) not in (3, 4):
        raise ValueError(
            f"`{name}` must have shape (n, H, W) or (n, H, W, C), got {len(shape)} dimensions {shape}."
        )
    if shape[0] < 1:
        raise ValueError(f"`{name}` holds no images.")
    if min(shape[1], shape[2]) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"`{name}` are {shape[1]}×{shape[2]} px; t-SimCNE needs at least "
            f"{MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} px."
        )
    if len(shape) == 4 and not 1 <= shape[3] <= 4:
        raise ValueError(
            f"`{name}` has {shape[3]} channels in its last axis; expected (n, H, W, C) with C ≤ 4."
        )


def _check_finite_pixels(x: np.ndarray, name: str, where: str = "") -> None:
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"`{name}` contains {bad} NaN or infinite pixel value(s){where}.")


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
    check_image_shape(x.shape, x.dtype, name=name)
    _check_finite_pixels(x, name)
    return x


def _range_of(dtype: np.dtype, lo: float, hi: float) -> tuple[tuple[float, float], bool]:
    """The pixel range of images of ``dtype`` whose values span [lo, hi] (module docstring)."""
    if dtype == np.uint8:
        return (0.0, 255.0), True
    if dtype == np.bool_:
        return (0.0, 1.0), True
    if lo >= 0.0 and hi <= 1.0:
        return (0.0, 1.0), True
    if lo >= 0.0 and hi <= 255.0:
        return (0.0, 255.0), True
    return (lo, hi if hi > lo else lo + 1.0), False


def infer_pixel_range(x: np.ndarray) -> tuple[tuple[float, float], bool]:
    """The pixel range of ``x`` by the rules of this module, and whether it is a standard one
    (0–1 or 0–255) rather than the array's own (min, max)."""
    if x.dtype in (np.uint8, np.bool_):
        return _range_of(x.dtype, 0.0, 0.0)
    return _range_of(x.dtype, float(x.min()), float(x.max()))


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


def on_disk(x: Any) -> bool:
    """Whether ``x`` is an array left on disk: h5py / zarr (:func:`manifex.train._data.is_backed`)
    or a numpy memmap."""
    return is_backed(x) or isinstance(x, np.memmap)


def is_backed_images(x: Any) -> bool:
    """Whether ``x`` is an on-disk image array (:func:`on_disk`, 3 or 4 dimensions) or a
    :class:`BackedImages`."""
    if isinstance(x, BackedImages):
        return True
    return on_disk(x) and len(getattr(x, "shape", ())) in (3, 4)


class BackedImages:
    """Images on disk, read by rows as ``(k, C, H, W)`` uint8.

    Construction makes one pass over the images in chunks of about 64 MB: it checks that the
    pixels are finite, finds their range (unless ``pixel_range`` / ``reference_range`` fix it,
    with the rules of :func:`prepare_images`) and computes the data fingerprint. Memory stays
    O(chunk); the images are then read per minibatch.

    Parameters
    ----------
    source
        An h5py dataset, zarr array or numpy memmap of shape ``(n, H, W)`` or ``(n, H, W, C)``.
    name
        Used in error messages.
    pixel_range, reference_range
        As for :func:`prepare_images`.

    Examples
    --------
    >>> import h5py, numpy as np, tempfile, os
    >>> from manifex.models._images import BackedImages, prepare_images
    >>> imgs = np.random.default_rng(0).random((10, 8, 8)).astype("float32")
    >>> path = os.path.join(tempfile.mkdtemp(), "images.h5")
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("image", data=imgs)
    >>> f = h5py.File(path, "r")
    >>> b = BackedImages(f["image"])
    >>> b.shape, b.pixel_range, bool((b.read(np.arange(3, 6)) == prepare_images(imgs)[0][3:6]).all())
    ((10, 1, 8, 8), (0.0, 1.0), True)
    >>> f.close()
    """

    def __init__(
        self,
        source: Any,
        *,
        name: str = "images",
        pixel_range: tuple[float, float] | None = None,
        reference_range: tuple[float, float] | None = None,
    ):
        if isinstance(source, BackedImages):
            source = source.source
        raw = tuple(int(s) for s in source.shape)
        dtype = np.dtype(source.dtype)
        check_image_shape(raw, dtype, name=name)
        self.source = source
        self.name = name
        self.dtype = dtype
        n, h, w = raw[:3]
        self.shape = (n, raw[3] if len(raw) == 4 else 1, h, w)
        per_row = int(np.prod(raw[1:])) * dtype.itemsize
        self.chunk_rows = max(1, CHUNK_BYTES // per_row)
        lo, hi, self.fingerprint = self._scan()
        self.max_value = hi
        if pixel_range is not None:
            rng = pixel_range
        elif reference_range is not None:
            rng = reference_range
        else:
            rng, _ = _range_of(dtype, lo, hi)
        self.pixel_range = (float(rng[0]), float(rng[1]))

    def __len__(self) -> int:
        return self.shape[0]

    def _scan(self) -> tuple[float, float, str]:
        n = self.shape[0]
        lo, hi = np.inf, -np.inf
        h = hashlib.sha256(f"backed-images:{self.shape}:{self.dtype}".encode())
        for s in range(0, n, self.chunk_rows):
            block = np.asarray(self.source[s : min(n, s + self.chunk_rows)])
            _check_finite_pixels(block, self.name, f" (images {s}–{s + block.shape[0] - 1})")
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
            h.update(np.ascontiguousarray(block[:: max(1, block.shape[0] // 8)]).tobytes())
            h.update(np.float64(block.sum(dtype=np.float64)).tobytes())
        return lo, hi, h.hexdigest()

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Images ``rows`` (sorted, unique) as ``(k, C, H, W)`` uint8."""
        return images_to_uint8(np.asarray(read_rows(self.source, rows)), self.pixel_range)


class ImagesOrMatrix:
    """The input methods of a model that takes images as well as cells × features matrices
    (:class:`~manifex.models.TSimCNE`): validation of the training data and of queries, the
    ``"input"`` space, the rows on the device."""

    def _prepare_fit_input(self, X: Any) -> Any:
        """Images (``(n, H, W[, C])``, in memory or on disk: ``kind_ = "image"``, kept as uint8
        ``(n, C, H, W)``) or a cells × features matrix (``kind_ = "expression"``)."""
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        ndim = getattr(X, "ndim", None)
        if ndim is None and hasattr(X, "shape"):  # e.g. a backed sparse dataset
            ndim = len(X.shape)
        if ndim is None:
            X = np.asarray(X)
            ndim = X.ndim
        if ndim == 2:
            self.kind_ = "expression"
            self.image_shape_ = None
            self.pixel_range_ = None
            x = as_matrix(X, name="X")
            self._check_n_rows(x.shape[0])
            return x
        if is_backed_images(X):  # on disk: checked in one pass, then read per minibatch
            u8 = X
            if not isinstance(X, BackedImages) or (
                self.pixel_range is not None and X.pixel_range != tuple(float(v) for v in self.pixel_range)
            ):
                u8 = BackedImages(X, name="X", pixel_range=self.pixel_range)
            rng, dtype, peak = u8.pixel_range, u8.dtype, u8.max_value
        else:
            u8, rng = prepare_images(X, name="X", pixel_range=self.pixel_range)
            dtype, peak = np.asarray(X).dtype, int(u8.max())
        if self.pixel_range is None and dtype == np.uint8 and peak <= 1:
            logg.warning(
                "t-SimCNE: uint8 images whose values are all 0 or 1 are read as 0–255, i.e. nearly "
                "black; for masks pass `pixel_range=(0, 1)` (or bool images)."
            )
        if u8.shape[0] < 2:
            raise ValueError("t-SimCNE needs at least 2 images.")
        self.kind_ = "image"
        _, c, h, w = u8.shape
        self.image_shape_ = (int(h), int(w), int(c))
        self.pixel_range_ = tuple(float(v) for v in rng)
        return u8

    def _prepare_query(self, X: Any, feature_names: Any = None) -> Any:
        if self.kind_ == "expression":
            return super()._prepare_query(X, feature_names)
        if feature_names is not None:
            raise ValueError("`feature_names` apply to expression data, not to images.")
        standard = tuple(self.pixel_range_) in ((0.0, 1.0), (0.0, 255.0))
        reference = None if standard else self.pixel_range_
        if is_backed_images(X):
            u8 = BackedImages(X, name="X", pixel_range=self.pixel_range, reference_range=reference)
        else:
            u8, _ = prepare_images(X, name="X", pixel_range=self.pixel_range, reference_range=reference)
        if u8.shape[1:] != (self.image_shape_[2], self.image_shape_[0], self.image_shape_[1]):
            h, w, c = self.image_shape_
            raise ValueError(
                f"The model was trained on {h}×{w} images with {c} channel(s), got "
                f"{u8.shape[2]}×{u8.shape[3]} with {u8.shape[1]}."
            )
        return u8

    def _input_space(self, x: Any) -> np.ndarray:
        if isinstance(x, BackedImages):
            raise ValueError("space='input' would load on-disk images whole; read them in chunks.")
        if self.kind_ == "image":
            return x.reshape(x.shape[0], -1).astype(np.float32) / np.float32(255.0)
        return super()._input_space(x)

    def _device_data(self, x: Any, device: torch.device) -> Any:
        """The rows on ``device``: images as one uint8 tensor (or read from disk per minibatch)."""
        if isinstance(x, BackedImages):  # read from disk per minibatch
            return StreamData(x, device)
        return torch.from_numpy(x).to(device) if self.kind_ == "image" else self._rows_on_device(x, device)
