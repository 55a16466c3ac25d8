"""Plots for query mapping: reference and query on one map, label-transfer confidence."""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import check_adata, get_basis
from ._checks import check_ax, check_str

__all__ = ["confidence_map", "query_map"]


def _size(n: int, s: float | None) -> float:
    if s is not None and (isinstance(s, bool) or not isinstance(s, Real) or not s > 0):
        raise ValueError(f"`size` must be a positive number or None, got {s!r}.")
    return float(s) if s is not None else float(max(1.0, min(30.0, 20000 / max(n, 1))))


def _finish(ax: Any, title: str | None, show: bool | None, created: bool) -> Any:
    import matplotlib.pyplot as plt

    if title is not None:
        ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if show or (show is None and created and plt.isinteractive()):
        plt.show()
    return ax


def _category_colors(key: str, cats: list[str], *adatas: AnnData) -> list[Any]:
    """Colours for ``cats``: scanpy's stored ``uns[f"{key}_colors"]`` (query first, then
    reference) where it covers a category; the others take scanpy's default palette, skipping
    the colours already given (a type new in the query never shares a known type's colour)."""
    from scanpy.plotting import palettes

    stored: dict[str, Any] = {}
    for a in adatas[::-1]:  # the query's palette wins over the reference's
        pal = a.uns.get(f"{key}_colors")
        col = a.obs.get(key)
        if pal is None or col is None or not isinstance(col.dtype, pd.CategoricalDtype):
            continue
        if len(pal) == len(col.cat.categories):
            stored.update(zip(col.cat.categories.astype(str), pal, strict=True))
    default = palettes.default_20 if len(cats) <= 20 else palettes.default_102
    taken = {_norm_color(stored[c]) for c in cats if c in stored}
    free = [c for c in default if _norm_color(c) not in taken] or list(default)
    out, j = [], 0
    for c in cats:
        if c in stored:
            out.append(stored[c])
        else:
            out.append(free[j % len(free)])
            j += 1
    return out


def _norm_color(c: Any) -> Any:
    from matplotlib.colors import to_hex

    try:
        return to_hex(c)
    except ValueError:
        return c


def query_map(
    reference: AnnData,
    query: AnnData,
    *,
    basis: str = "dlme",
    color: str | None = None,
    highlight: str = "#d62728",
    reference_color: str = "#d3d3d3",
    size: float | None = None,
    legend: bool = True,
    ax: Any = None,
    title: str | None = None,
    show: bool | None = None,
):
    """Reference and query cells on one map: reference greyed, query highlighted on top.

    Parameters
    ----------
    reference
        The AnnData the model was trained on (``obsm["X_<basis>"]``).
    query
        Cells embedded with :func:`manifex.tl.embed` (same ``basis``).
    basis
        Embedding key, found as :func:`scanpy.pl.embedding` finds it (``obsm[basis]``, else
        ``obsm["X_" + basis]``).
    color
        A query ``obs`` column to colour the query cells by (categorical: one colour per value,
        with a legend; numeric: a colour bar). Default: one highlight colour. For labels from
        :func:`manifex.tl.transfer_labels`, unknown cells are black and drawn on top.
    highlight
        Colour of the query cells when ``color`` is not given.
    reference_color
        Colour of the reference cells.
    size
        Marker size (default from the number of cells).
    legend
        Draw a legend.
    ax
        Matplotlib axes to draw into.
    title
        Axes title.
    show
        Show the figure (default: when a new figure was created in interactive mode).

    Returns
    -------
    The matplotlib axes.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> ref, query = adata[:500].copy(), adata[500:].copy()
    >>> model = mx.tl.dlme(ref, n_steps=30, progress=False, return_model=True)
    >>> mx.tl.embed(query, model, reference=ref)
    >>> ax = mx.pl.query_map(ref, query, color="bulk_labels", show=False)
    """
    import matplotlib.pyplot as plt

    check_adata(reference, name="reference", need_vars=False)
    check_adata(query, name="query", need_vars=False)
    check_ax(ax)
    kr = kq = get_basis({"reference": reference, "query": query}, basis, min_dims=2)
    er, eq = np.asarray(reference.obsm[kr])[:, :2], np.asarray(query.obsm[kq])[:, :2]
    if color is not None:
        check_str(color, "color")
        if color not in query.obs:
            raise KeyError(f"`color`={color!r} is not a column of query.obs.")
    s = _size(reference.n_obs + query.n_obs, size)
    created = ax is None
    numeric = False
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(er[:, 0], er[:, 1], s=s, c=reference_color, linewidths=0, rasterized=True, label="reference")
    if color is None:
        ax.scatter(eq[:, 0], eq[:, 1], s=s * 1.5, c=highlight, linewidths=0, rasterized=True, label="query")
    else:
        vals = query.obs[color]
        numeric = pd.api.types.is_numeric_dtype(vals) and not isinstance(vals.dtype, pd.CategoricalDtype)
        if numeric:
            sca = ax.scatter(
                eq[:, 0],
                eq[:, 1],
                s=s * 1.5,
                c=vals.to_numpy(),
                linewidths=0,
                rasterized=True,
                cmap="viridis",
            )
            plt.colorbar(sca, ax=ax, label=color, shrink=0.7)
        else:
            cats = pd.Categorical(vals.astype(str))
            colors = _category_colors(color, list(cats.categories), query, reference)
            # labels from transfer_labels: their unknown cells in black, drawn last (on top)
            info = query.uns.get(color)
            unknown = (
                str(info.get("unknown_label")) if isinstance(info, dict) and "unknown_label" in info else None
            )
            order = sorted(range(len(cats.categories)), key=lambda i: cats.categories[i] == unknown)
            for i in order:
                c = cats.categories[i]
                m = cats.codes == i
                ax.scatter(
                    eq[m, 0],
                    eq[m, 1],
                    s=s * 1.5,
                    color="black" if c == unknown else colors[i],
                    linewidths=0,
                    rasterized=True,
                    label=c,
                )
    if legend:
        if numeric:  # the colour bar sits to the right: the legend goes below the axes
            ax.legend(
                loc="upper center",
                bbox_to_anchor=(0.5, -0.04),
                frameon=False,
                markerscale=2,
                fontsize=8,
                ncol=2,
            )
        else:
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=2, fontsize=8)
    name = kq[2:] if kq.startswith("X_") else kq
    return _finish(ax, title if title is not None else f"query on reference ({name})", show, created)


def confidence_map(
    query: AnnData,
    *,
    key: str,
    basis: str | None = None,
    reference: AnnData | None = None,
    unknown_label: str | None = None,
    cmap: str = "viridis",
    size: float | None = None,
    ax: Any = None,
    title: str | None = None,
    show: bool | None = None,
):
    """Query cells coloured by the confidence of their transferred label; unknown cells marked.

    Parameters
    ----------
    query
        AnnData after :func:`manifex.tl.transfer_labels` or :func:`manifex.tl.fewshot_labels`.
    key
        The ``key_added`` of that call: labels in ``obs[key]``, confidence in
        ``obs[key + "_confidence"]``.
    basis
        Embedding key (``obsm[basis]``, else ``obsm["X_" + basis]``); default the one recorded
        in ``uns[key]``.
    reference
        Draw these cells greyed underneath.
    unknown_label
        Label of unknown cells, drawn as black crosses; default the one recorded in ``uns[key]``.
    cmap
        Colour map of the confidence.
    size
        Marker size.
    ax
        Matplotlib axes to draw into.
    title
        Axes title.
    show
        Show the figure.

    Returns
    -------
    The matplotlib axes.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> ref, query = adata[:500].copy(), adata[500:].copy()
    >>> model = mx.tl.dlme(ref, n_steps=30, progress=False, return_model=True)
    >>> mx.tl.embed(query, model, reference=ref)
    >>> mx.tl.transfer_labels(query, ref, label_key="bulk_labels", key_added="pred")
    >>> ax = mx.pl.confidence_map(query, key="pred", reference=ref, show=False)
    """
    import matplotlib.pyplot as plt

    check_adata(query, name="query", need_vars=False)
    if reference is not None:
        check_adata(reference, name="reference", need_vars=False)
    check_ax(ax)
    check_str(key, "key")
    conf_key = f"{key}_confidence"
    if key not in query.obs or conf_key not in query.obs:
        raise KeyError(
            f"`key`={key!r}: query.obs needs {key!r} and {conf_key!r}; run mx.tl.transfer_labels first."
        )
    conf = query.obs[conf_key]
    if not pd.api.types.is_numeric_dtype(conf) or isinstance(conf.dtype, pd.CategoricalDtype):
        raise TypeError(f"query.obs[{conf_key!r}] must be numeric, got dtype {conf.dtype}.")
    info = query.uns.get(key, {})
    if basis is None:
        basis = info.get("basis") if isinstance(info, dict) else None
        if basis is None:
            raise ValueError(f"Pass `basis=`; it is not recorded in query.uns[{key!r}].")
    if unknown_label is None and isinstance(info, dict):
        unknown_label = info.get("unknown_label")
    holders = {"query": query} if reference is None else {"query": query, "reference": reference}
    kq = kr = get_basis(holders, basis, min_dims=2)
    eq = np.asarray(query.obsm[kq])[:, :2]
    s = _size(query.n_obs + (reference.n_obs if reference is not None else 0), size)
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 5))
    if reference is not None:
        er = np.asarray(reference.obsm[kr])[:, :2]
        ax.scatter(er[:, 0], er[:, 1], s=s, c="#e5e5e5", linewidths=0, rasterized=True)
    unknown = (
        query.obs[key].astype(str).to_numpy() == str(unknown_label)
        if unknown_label is not None
        else np.zeros(query.n_obs, bool)
    )
    sca = ax.scatter(
        eq[~unknown, 0],
        eq[~unknown, 1],
        s=s * 1.5,
        c=conf.to_numpy(dtype=float)[~unknown],
        cmap=cmap,
        vmin=0,
        vmax=1,
        linewidths=0,
        rasterized=True,
    )
    plt.colorbar(sca, ax=ax, label="confidence", shrink=0.7)
    if unknown.any():
        ax.scatter(
            eq[unknown, 0],
            eq[unknown, 1],
            s=s * 2,
            c="black",
            marker="x",
            linewidths=0.6,
            label=unknown_label,
        )
        ax.legend(loc="lower right", frameon=False, fontsize=8)
    return _finish(ax, title if title is not None else f"{key}: confidence", show, created)
