from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData


def embedding(adata: AnnData, basis: str, **kwargs: Any):
    """Plot ``obsm["X_<basis>"]`` with :func:`scanpy.pl.embedding`.

    Parameters
    ----------
    adata
        The AnnData holding the embedding.
    basis
        Embedding key without the ``X_`` prefix (``"dlme"``, ``"tsimcne"``, ``"n2d"``, ...).
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` (``color``, ``ax``, ``show``, ``save``, ...).

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.dlme(adata, n_steps=20, progress=False)
    >>> ax = mx.pl.embedding(adata, "dlme", color="bulk_labels", show=False)
    """
    import scanpy as sc

    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    key = basis if basis.startswith("X_") else f"X_{basis}"
    if key not in adata.obsm:
        raise KeyError(f"adata.obsm has no {key!r}; run the matching mx.tl function first.")
    return sc.pl.embedding(adata, basis=key, **kwargs)


def dlme(adata: AnnData, *, key: str = "dlme", **kwargs: Any):
    """Scatter plot of a DLME embedding (``obsm["X_<key>"]``); see :func:`embedding`.

    Parameters
    ----------
    adata
        AnnData after :func:`manifex.tl.dlme`.
    key
        The ``key_added`` of that call.
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``color``, ``ax``, ``show``, ...).

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.dlme(adata, n_steps=20, progress=False)
    >>> ax = mx.pl.dlme(adata, color="bulk_labels", show=False)
    """
    return embedding(adata, key, **kwargs)


def loss_curve(
    adata: AnnData, key: str = "dlme", *, ax: Any = None, log: bool = True, show: bool | None = None
):
    """Training loss per epoch from ``adata.uns[key]["loss"]``.

    Parameters
    ----------
    adata
        AnnData after an ``mx.tl`` call.
    key
        The ``uns`` key of that call (its ``key_added``).
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
    """
    import matplotlib.pyplot as plt

    if key not in adata.uns:
        raise KeyError(f"adata.uns has no {key!r}; run the matching mx.tl function first.")
    uns = adata.uns[key]
    curves = (
        {k[5:]: v for k, v in uns.items() if k.startswith("loss_")}
        if "loss" not in uns
        else {"": uns["loss"]}
    )
    if not curves or all(np.size(v) == 0 for v in curves.values()):
        raise KeyError(f"adata.uns[{key!r}] holds no loss history.")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    offset = 0
    for name, loss in curves.items():
        loss = np.asarray(loss, dtype=float)
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
