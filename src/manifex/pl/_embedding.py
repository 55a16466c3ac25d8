from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from anndata import AnnData

from .._anndata import check_adata, get_basis
from ._checks import check_ax, check_color, check_str


def embedding(adata: AnnData, basis: str, **kwargs: Any):
    """Plot an embedding with :func:`scanpy.pl.embedding`, after checking the arguments.

    The basis is found as scanpy finds it (``obsm[basis]``, else ``obsm["X_" + basis]``), so
    ``mx.pl.embedding(adata, "dlme")`` draws what ``sc.pl.embedding(adata, basis="dlme")``
    draws. A missing basis or ``color`` key raises before scanpy is called (scanpy would first
    convert string columns of ``obs`` to categoricals).

    Parameters
    ----------
    adata
        The AnnData holding the embedding.
    basis
        Embedding key, with or without the ``X_`` prefix (``"dlme"``, ``"tsimcne"``,
        ``"n2d"``, ...).
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` (``color``, ``ax``, ``show``, ``save``, ...).

    Returns
    -------
    What :func:`scanpy.pl.embedding` returns (the axes with ``show=False``).

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.dlme(adata, n_steps=20, progress=False)
    >>> ax = mx.pl.embedding(adata, "dlme", color="bulk_labels", show=False)
    """
    import scanpy as sc

    check_adata(adata, need_vars=False)
    if "key" in kwargs:
        raise TypeError("mx.pl takes the embedding as `basis=` (scanpy's name); `key=` was renamed.")
    key = get_basis({"adata": adata}, basis, min_dims=2)
    check_color(adata, kwargs.get("color"), kwargs)
    check_ax(kwargs.get("ax"))
    return sc.pl.embedding(adata, basis=key, **kwargs)


def dlme(adata: AnnData, *, basis: str = "dlme", **kwargs: Any):
    """Scatter plot of a DLME embedding (``obsm["X_<basis>"]``); see :func:`embedding`.

    Parameters
    ----------
    adata
        AnnData after :func:`manifex.tl.dlme`.
    basis
        The ``key_added`` of that call.
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``color``, ``ax``, ``show``, ...).

    Returns
    -------
    What :func:`scanpy.pl.embedding` returns (the axes with ``show=False``).

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.dlme(adata, n_steps=20, progress=False)
    >>> ax = mx.pl.dlme(adata, color="bulk_labels", show=False)
    """
    return embedding(adata, basis, **kwargs)


def loss_curve(
    adata: AnnData, basis: str = "dlme", *, ax: Any = None, log: bool = True, show: bool | None = None
):
    """Training loss per epoch from ``adata.uns[basis]["loss"]`` (or its ``loss_<stage>`` entries).

    Parameters
    ----------
    adata
        AnnData after an ``mx.tl`` call.
    basis
        The ``key_added`` of that call (its results are in ``obsm["X_<basis>"]`` and
        ``uns[basis]``).
    ax
        Matplotlib axes to draw into.
    log
        Logarithmic y axis.
    show
        Show the figure (default: when no ``ax`` is given and matplotlib is interactive).

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.dlme(adata, n_steps=20, progress=False)
    >>> ax = mx.pl.loss_curve(adata, "dlme", show=False)
    >>> ax.get_xlabel(), ax.get_ylabel()
    ('epoch', 'loss')
    """
    import matplotlib.pyplot as plt

    if not isinstance(adata, AnnData):  # an AnnData without cells may still hold a loss history
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    check_ax(ax)
    key = check_str(basis, "basis")
    if key.startswith("X_") and key not in adata.uns:
        key = key[2:]
    if key not in adata.uns:
        raise KeyError(
            f"`basis`={basis!r}: adata.uns has no {key!r} (keys: {list(adata.uns.keys())}); "
            "run the matching mx.tl function first."
        )
    uns = adata.uns[key]
    if not isinstance(uns, Mapping):
        raise TypeError(f"adata.uns[{key!r}] is a {type(uns).__name__}, not the dict an mx.tl call writes.")
    curves = (
        {k[5:]: v for k, v in uns.items() if k.startswith("loss_")}
        if "loss" not in uns
        else {"": uns["loss"]}
    )
    if not curves or all(np.size(v) == 0 for v in curves.values()):
        raise KeyError(f"adata.uns[{key!r}] holds no loss history ('loss' or 'loss_<stage>').")
    try:
        curves = {name: np.asarray(v, dtype=float).ravel() for name, v in curves.items()}
    except (TypeError, ValueError):
        raise TypeError(f"adata.uns[{key!r}]: the loss history is not numeric.") from None
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    offset = 0
    for name, loss in curves.items():
        ax.plot(np.arange(offset, offset + loss.size) + 1, loss, label=name or None)
        offset += loss.size
    if log and all(np.all(np.asarray(v) > 0) for v in curves.values()):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(key)
    if len(curves) > 1:
        ax.legend(frameon=False)
    if show:
        plt.show()
    return ax
