from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData

from .._anndata import check_adata
from ..metrics import matched_confusion
from ._checks import check_ax, check_str
from ._embedding import embedding


def n2d(adata: AnnData, *, basis: str = "n2d", color: str | list[str] | None = None, **kwargs: Any):
    """Scatter plot of the N2D map (``obsm["X_<basis>"]``), coloured by the N2D clusters by default.

    Parameters
    ----------
    adata
        AnnData after :func:`manifex.tl.n2d`.
    basis
        The ``key_added`` of that call (map in ``obsm["X_<basis>"]``, clusters in ``obs[basis]``).
    color
        What to colour by (``obs`` columns or genes); default the clusters ``obs[basis]``.
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` (``ax``, ``show``, ``legend_loc``, ...).

    Returns
    -------
    What :func:`scanpy.pl.embedding` returns (the axes with ``show=False``).

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.n2d(adata, n_clusters=5, n_steps=20, progress=False)
    >>> ax = mx.pl.n2d(adata, show=False)
    >>> ax.get_title()
    'n2d'
    """
    check_adata(adata, need_vars=False)
    check_str(basis, "basis")
    if color is None and basis in adata.obs:
        color = basis
    return embedding(adata, basis, color=color, **kwargs)


def cluster_confusion(
    adata: AnnData,
    *,
    clusters: str = "n2d",
    labels: str = "label",
    normalize: bool = True,
    annotate: bool | None = None,
    cmap: str = "Blues",
    ax: Any = None,
    show: bool | None = None,
):
    """Heat map of clusters against reference labels after Hungarian matching.

    Rows are the clusters of ``obs[clusters]`` reordered so that each sits opposite the label
    it is matched to (so a perfect clustering is a diagonal); the title gives the matched
    accuracy (ACC, :func:`manifex.metrics.clustering_accuracy`). Works for any clustering in
    ``obs`` (N2D, Leiden, ...). Cells without a cluster or a label (missing values) are refused:
    subset them away first.

    Parameters
    ----------
    adata
        AnnData with both columns in ``obs``.
    clusters
        Column holding the clusters (default: N2D's).
    labels
        Column holding the reference labels.
    normalize
        Show the fraction of each cluster per label (rows sum to 1) instead of counts.
    annotate
        Write the values into the cells; default when there are at most 20 × 20 cells.
    cmap
        Matplotlib colour map.
    ax
        Matplotlib axes to draw into.
    show
        Show the figure.

    Returns
    -------
    The matplotlib axes.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> ax = mx.pl.cluster_confusion(adata, clusters="louvain", labels="bulk_labels", show=False)
    >>> ax.get_title()
    'louvain vs bulk_labels (ACC 0.5...)'
    """
    import matplotlib.pyplot as plt

    check_adata(adata, need_vars=False)
    check_ax(ax)
    for col, what in ((clusters, "clusters"), (labels, "labels")):
        check_str(col, what)
        if col not in adata.obs:
            raise KeyError(f"`{what}`={col!r} is not a column of adata.obs.")
    try:
        table, acc = matched_confusion(adata.obs[labels], adata.obs[clusters])
    except ValueError as e:  # name the obs columns, not the arguments of the metric
        msg = (
            str(e).replace("`labels_true`", f"obs[{labels!r}]").replace("`labels_pred`", f"obs[{clusters!r}]")
        )
        raise ValueError(msg) from None
    values = table.to_numpy().astype(float)
    if normalize:
        values = values / np.maximum(values.sum(1, keepdims=True), 1)
    if ax is None:
        w = max(4.0, 0.45 * table.shape[1] + 2.0)
        h = max(3.0, 0.4 * table.shape[0] + 1.5)
        _, ax = plt.subplots(figsize=(w, h))
    im = ax.imshow(values, cmap=cmap, aspect="auto", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(table.shape[1]), [str(v) for v in table.columns], rotation=90)
    ax.set_yticks(range(table.shape[0]), [str(v) for v in table.index])
    ax.set_xlabel(labels)
    ax.set_ylabel(clusters)
    ax.set_title(f"{clusters} vs {labels} (ACC {acc:.3f})")
    if annotate is None:
        annotate = table.shape[0] <= 20 and table.shape[1] <= 20
    if annotate:
        hi = np.nanmax(values) if values.size else 0
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                if v > 0:
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}" if normalize else f"{int(v)}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if v > 0.6 * hi else "black",
                    )
    ax.figure.colorbar(
        im, ax=ax, fraction=0.046, pad=0.04, label="fraction of cluster" if normalize else "cells"
    )
    if show:
        plt.show()
    return ax
