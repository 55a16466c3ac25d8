"""Argument checks shared by the plots: each runs before anything is drawn or changed.

The AnnData check and the basis lookup are those of :mod:`manifex.tl`
(:func:`manifex._anndata.check_adata`, :func:`manifex._anndata.get_basis`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from anndata import AnnData


def check_str(value: Any, name: str) -> str:
    """``value``, after checking that it is a non-empty string."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a string, got {type(value).__name__} ({value!r}).")
    if not value:
        raise ValueError(f"`{name}` must not be empty.")
    return value


def check_color(adata: AnnData, color: Any, kwargs: dict[str, Any]) -> None:
    """Check that every ``color`` key is an ``obs`` column or a gene, as scanpy will look it up.

    Done before :func:`scanpy.pl.embedding` is called, because scanpy converts string columns to
    categoricals (a change to the AnnData) before it finds that a key is missing.
    """
    if color is None:
        return
    keys: Iterable[Any] = [color] if isinstance(color, str) else color
    try:
        keys = list(keys)
    except TypeError:
        raise TypeError(
            f"`color` must be a string or a list of strings, got {type(color).__name__}."
        ) from None
    gene_symbols = kwargs.get("gene_symbols")
    use_raw = kwargs.get("use_raw")
    layer = kwargs.get("layer")
    genes = set(adata.var_names)
    if gene_symbols is not None:
        if gene_symbols not in adata.var:
            raise KeyError(f"`gene_symbols`={gene_symbols!r} is not a column of adata.var.")
        genes |= set(adata.var[gene_symbols].astype(str))
    if adata.raw is not None and use_raw is not False and layer is None:
        genes |= set(adata.raw.var_names)
        if gene_symbols is not None and gene_symbols in adata.raw.var:
            genes |= set(adata.raw.var[gene_symbols].astype(str))
    for c in keys:
        if c is None:
            continue
        if not isinstance(c, str):
            raise TypeError(f"`color` entries must be strings, got {type(c).__name__} ({c!r}).")
        if c not in adata.obs.columns and c not in genes:
            raise KeyError(f"`color`={c!r} is neither a column of adata.obs nor a gene in adata.var_names.")


def check_ax(ax: Any) -> None:
    """Check that ``ax`` is ``None`` or a matplotlib ``Axes``."""
    if ax is None:
        return
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise TypeError(f"`ax` must be a matplotlib Axes or None, got {type(ax).__name__}.")
