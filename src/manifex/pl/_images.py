from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from anndata import AnnData

from .._anndata import check_adata, get_basis
from ._checks import check_ax, check_str
from ._embedding import embedding


def tsimcne(adata: AnnData, *, basis: str = "tsimcne", **kwargs: Any):
    """Scatter plot of a t-SimCNE map (``obsm["X_<basis>"]``); see :func:`manifex.pl.embedding`.

    Parameters
    ----------
    adata
        AnnData after :func:`manifex.tl.tsimcne`.
    basis
        The ``key_added`` of that call.
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``color``, ``ax``, ``show``, ...).

    Returns
    -------
    What :func:`scanpy.pl.embedding` returns (the axes with ``show=False``).

    Examples
    --------
    >>> import manifex as mx
    >>> from sklearn.datasets import load_digits
    >>> d = load_digits()
    >>> adata = mx.datasets.image_anndata((d.images * 255 / 16).astype("uint8"), labels=d.target)
    >>> mx.tl.tsimcne(adata, image_key="image", n_epochs=(2, 1, 1), progress=False)
    >>> ax = mx.pl.tsimcne(adata, color="label", show=False)
    """
    return embedding(adata, basis, **kwargs)


def _to_display(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    img = img.astype(np.float32)
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    img = np.clip(img, 0.0, 1.0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] not in (3, 4):
        img = img.mean(-1)
    return img


def image_map(
    adata: AnnData,
    basis: str = "tsimcne",
    *,
    image_key: str = "image",
    n: int = 500,
    zoom: float | None = None,
    color: str | None = None,
    cmap: str = "gray_r",
    min_distance: float | None = 0.02,
    ax: Any = None,
    random_state: int = 0,
    show: bool | None = None,
):
    """Image thumbnails drawn at their positions in a 2-d embedding.

    Draws all points as a faint scatter and ``n`` images as thumbnails on top, chosen at random
    but skipping images closer than ``min_distance`` (as a fraction of the plot's extent) to one
    already drawn, so thumbnails do not pile up. Works for any image AnnData and any embedding.

    Parameters
    ----------
    adata
        AnnData with images in ``obsm[image_key]`` (``(n_obs, H, W)`` or ``(n_obs, H, W, C)``)
        and a 2-d embedding in ``obsm["X_<basis>"]``.
    basis
        Embedding key, found as :func:`scanpy.pl.embedding` finds it (``obsm[basis]``, else
        ``obsm["X_" + basis]``): ``"tsimcne"``, ``"umap"``, ...
    image_key
        ``obsm`` key of the images.
    n
        Most thumbnails to draw.
    zoom
        Thumbnail scale (default: about 1/40 of the figure per thumbnail).
    color
        ``obs`` column used to colour the background scatter (categorical or numeric).
    cmap
        Colormap of single-channel thumbnails (``"gray_r"``: dark ink on white, for digits).
    min_distance
        Minimum distance between drawn thumbnails, as a fraction of the larger axis extent;
        ``None`` or 0 draws the first ``n`` of a random order regardless of overlap.
    ax
        Matplotlib axes to draw into.
    random_state
        Seed of the thumbnail selection.
    show
        Show the figure.

    Returns
    -------
    The matplotlib axes.

    Examples
    --------
    >>> import manifex as mx
    >>> from sklearn.datasets import load_digits
    >>> d = load_digits()
    >>> adata = mx.datasets.image_anndata((d.images * 255 / 16).astype("uint8"), labels=d.target)
    >>> mx.tl.tsimcne(adata, image_key="image", n_epochs=(2, 1, 1), progress=False)
    >>> ax = mx.pl.image_map(adata, "tsimcne", n=200, show=False)
    >>> ax.get_title()
    'tsimcne: ... images'
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    check_adata(adata, need_vars=False)
    check_ax(ax)
    key = get_basis({"adata": adata}, basis, min_dims=2)
    check_str(image_key, "image_key")
    if image_key not in adata.obsm:
        raise KeyError(f"`image_key`={image_key!r} is not in adata.obsm (keys: {list(adata.obsm.keys())}).")
    emb = np.asarray(adata.obsm[key], dtype=np.float64)[:, :2]
    if not np.isfinite(emb).all():
        raise ValueError(f"adata.obsm[{key!r}] contains NaN or infinite values.")
    images = np.asarray(adata.obsm[image_key])
    if images.ndim not in (3, 4):
        raise ValueError(
            f"adata.obsm[{image_key!r}] must be (n_obs, H, W) or (n_obs, H, W, C), got shape {images.shape}."
        )
    if images.dtype.kind not in "uifb":
        raise TypeError(f"adata.obsm[{image_key!r}] must hold numeric images, got dtype {images.dtype}.")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"`n` must be a non-negative integer, got {n!r}.")
    if zoom is not None and not (isinstance(zoom, Real) and zoom > 0):
        raise ValueError(f"`zoom` must be a positive number or None, got {zoom!r}.")
    if min_distance is not None and not (isinstance(min_distance, Real) and min_distance >= 0):
        raise ValueError(f"`min_distance` must be a non-negative number or None, got {min_distance!r}.")
    c: Any = "lightgray"
    if color is not None:
        check_str(color, "color")
        if color not in adata.obs:
            raise KeyError(f"`color`={color!r} is not a column of adata.obs.")
        col = adata.obs[color]
        c = (
            pd.Categorical(col).codes
            if not pd.api.types.is_numeric_dtype(col) or isinstance(col.dtype, pd.CategoricalDtype)
            else col.to_numpy()
        )

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 8))
    ax.scatter(
        emb[:, 0], emb[:, 1], s=2, c=c, cmap="tab10" if color is not None else None, alpha=0.4, linewidths=0
    )

    lo, hi = (
        (0.0, 255.0) if images.dtype == np.uint8 else (float(np.nanmin(images)), float(np.nanmax(images)))
    )
    span = np.ptp(emb, axis=0).max() or 1.0
    order = np.random.default_rng(random_state).permutation(emb.shape[0])
    chosen: list[int] = []
    min_d = (min_distance or 0.0) * span
    for i in order:
        if len(chosen) >= n:
            break
        if min_d > 0 and chosen:
            d = np.sqrt(((emb[chosen] - emb[i]) ** 2).sum(1)).min()
            if d < min_d:
                continue
        chosen.append(int(i))
    h = images.shape[1]
    z = zoom if zoom is not None else 20.0 / h
    for i in chosen:
        img = _to_display(images[i], lo, hi)
        box = OffsetImage(img, zoom=z, cmap=cmap if img.ndim == 2 else None)
        ax.add_artist(AnnotationBbox(box, tuple(emb[i]), frameon=False, pad=0.0))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{basis}: {len(chosen)} images")
    ax.set_aspect("equal", adjustable="datalim")
    if show:
        plt.show()
    return ax
