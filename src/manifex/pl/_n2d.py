from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._embedding import embedding


def n2d(adata: AnnData, *, key: str = "n2d", color: str | list[str] | None = None, **kwargs: Any):
    """Scatter plot of the N2D map (``obsm["X_<key>"]``), coloured by the N2D clusters by default.

    Parameters
    ----------
    adata
        AnnData after :func:`manifex.tl.n2d`.
    key
        The ``key_added`` of that call.
    color
        What to colour by (``obs`` columns or genes); default the clusters ``obs[key]``.
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` (``ax``, ``show``, ``legend_loc``, ...).

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.n2d(adata, n_clusters=5, n_steps=50, progress=False)
    >>> ax = mx.pl.n2d(adata, show=False)
    """
    if color is None and key in adata.obs:
        color = key
    return embedding(adata, key, color=color, **kwargs)


def matched_confusion(clusters: Any, labels: Any) -> tuple[pd.DataFrame, float]:
    """Cluster × label counts with clusters reordered to their Hungarian-matched labels.

    Returns the table (rows: clusters, each placed at the label it is matched to, unmatched
    clusters last; columns: labels) and the accuracy of the matching.

    Examples
    --------
    >>> from manifex.pl._n2d import matched_confusion
    >>> table, acc = matched_confusion(["b", "b", "a", "a"], ["x", "x", "y", "y"])
    >>> list(table.index), acc
    (['b', 'a'], 1.0)
    """
    from scipy.optimize import linear_sum_assignment

    c = pd.Categorical(
        np.asarray(clusters).astype(str) if not isinstance(clusters, pd.Categorical) else clusters
    )
    y = pd.Categorical(np.asarray(labels).astype(str) if not isinstance(labels, pd.Categorical) else labels)
    if len(c) != len(y):
        raise ValueError(f"`clusters` has {len(c)} entries but `labels` has {len(y)}.")
    if (c.codes < 0).any() or (y.codes < 0).any():
        raise ValueError("`clusters` and `labels` must not contain missing values.")
    counts = pd.crosstab(pd.Series(c, name="cluster"), pd.Series(y, name="label"), dropna=False).astype(
        np.int64
    )
    rows, cols = linear_sum_assignment(-counts.to_numpy())
    acc = float(counts.to_numpy()[rows, cols].sum() / max(1, len(c)))
    order = [counts.index[r] for r, _ in sorted(zip(rows, cols), key=lambda rc: rc[1])]
    order += [i for i in counts.index if i not in order]
    return counts.loc[order], acc


def cluster_confusion(
    adata: AnnData,
    *,
    key: str = "n2d",
    labels: str = "label",
    normalize: bool = True,
    annotate: bool | None = None,
    cmap: str = "Blues",
    ax: Any = None,
    show: bool | None = None,
):
    """Heat map of clusters against reference labels after Hungarian matching.

    Rows are the clusters of ``obs[key]`` reordered so that each sits opposite the label it is
    matched to (so a perfect clustering is a diagonal); the title gives the matched accuracy
    (ACC). Works for any clustering in ``obs`` (N2D, Leiden, ...).

    Parameters
    ----------
    adata
        AnnData with both columns in ``obs``.
    key
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
    >>> mx.tl.n2d(adata, n_clusters=5, n_steps=50, progress=False)
    >>> ax = mx.pl.cluster_confusion(adata, labels="bulk_labels", show=False)
    """
    import matplotlib.pyplot as plt

    for col, what in ((key, "key"), (labels, "labels")):
        if col not in adata.obs:
            raise KeyError(f"`{what}`={col!r} is not a column of adata.obs.")
    table, acc = matched_confusion(adata.obs[key].to_numpy(), adata.obs[labels].to_numpy())
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
    ax.set_ylabel(key)
    ax.set_title(f"{key} vs {labels} (ACC {acc:.3f})")
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
