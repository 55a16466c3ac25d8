"""AnnData helpers shared by :mod:`manifex.tl` and :mod:`manifex.pl`: checks and lookups.

* :func:`check_adata` -- an AnnData with cells and features (and not in an unusable state);
* :func:`get_basis` / :func:`resolve_basis` (the one lookup of an embedding by scanpy's ``basis`` convention);
* :func:`obsm_coords`, :func:`obs_labels` -- coordinates and labels, validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._utils import as_2d_float

__all__ = [
    "basis_name",
    "check_adata",
    "get_basis",
    "obs_labels",
    "obsm_coords",
    "resolve_basis",
]

#: Embeddings the ``mx.tl`` methods write by default (tried when no ``basis`` is given).
METHOD_BASES = ("X_dlme", "X_tsimcne", "X_n2d")


def check_adata(adata: Any, *, min_cells: int = 1, name: str = "adata", need_vars: bool = True) -> AnnData:
    """``adata`` if it is an AnnData with at least ``min_cells`` cells and (unless ``need_vars`` is
    false, e.g. for images in ``obsm``) one feature.

    Examples
    --------
    >>> from anndata import AnnData
    >>> from manifex._anndata import check_adata
    >>> check_adata(AnnData(np.zeros((0, 3))))
    Traceback (most recent call last):
    ...
    ValueError: `adata` is empty (shape (0, 3)).
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"`{name}` must be an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0 or (need_vars and adata.n_vars == 0):
        raise ValueError(f"`{name}` is empty (shape {adata.shape}).")
    if adata.n_obs < min_cells:
        raise ValueError(f"`{name}` has {adata.n_obs} cells; at least {min_cells} are needed.")
    if adata.isbacked and adata.file.is_open is False:
        raise ValueError(f"`{name}` is backed by a file that is closed ({adata.filename}); reopen it first.")
    return adata


def copy_of(adata: AnnData) -> AnnData:
    """An in-memory copy of ``adata`` (a backed AnnData is read into memory: it cannot be copied
    otherwise without a new file)."""
    return adata.to_memory() if adata.isbacked else adata.copy()


def get_basis(
    adatas: dict[str, AnnData] | Sequence[tuple[str, AnnData]], basis: Any, *, min_dims: int = 1
) -> str:
    """The ``obsm`` key of ``basis`` as :func:`scanpy.pl.embedding` finds it (``obsm[basis]``,
    else ``obsm["X_" + basis]``), present in every named AnnData as a 2-d array with at least
    ``min_dims`` columns.

    ``adatas`` maps the names used in error messages (``"query"``, ``"reference"``) to AnnData.

    Examples
    --------
    >>> import scanpy as sc
    >>> from manifex._anndata import get_basis
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> get_basis({"adata": adata}, "umap"), get_basis({"adata": adata}, "X_pca")
    ('X_umap', 'X_pca')
    """
    if not isinstance(basis, str):
        raise TypeError(
            f"`basis` must be a string (an obsm key such as 'dlme' or 'X_dlme'), got {type(basis).__name__}."
        )
    if not basis:
        raise ValueError("`basis` must name an embedding, got ''.")
    items = list(adatas.items() if isinstance(adatas, dict) else adatas)
    for name, a in items:
        if not isinstance(a, AnnData):
            raise TypeError(f"`{name}` must be an AnnData, got {type(a).__name__}.")
    cands = [basis] if basis.startswith("X_") else [basis, f"X_{basis}"]
    found = [k for k in cands if all(k in a.obsm for _, a in items)]
    if not found:
        for name, a in items:
            if not any(k in a.obsm for k in cands):
                raise KeyError(
                    f"{name}.obsm has no {' or '.join(map(repr, cands))} (keys: {list(a.obsm.keys())})."
                )
        raise KeyError(f"No one of {cands} is in the obsm of all of {[n for n, _ in items]}.")
    key = found[0]
    for name, a in items:
        shape = np.shape(a.obsm[key])
        if len(shape) != 2 or shape[1] < min_dims:
            raise ValueError(
                f"{name}.obsm[{key!r}] must be 2-dimensional with at least {min_dims} column(s), "
                f"got shape {shape}."
            )
    return key


def basis_name(key: str) -> str:
    """The basis name of an ``obsm`` key, as recorded in ``uns`` (``"X_dlme"`` → ``"dlme"``)."""
    return key[2:] if key.startswith("X_") else key


def resolve_basis(query: AnnData, others: Sequence[tuple[str, AnnData]], basis: Any) -> str:
    """The embedding shared by ``query`` and ``others`` (named pairs, for the messages).

    ``basis`` if given (:func:`get_basis`); else the one embedding the query received from
    :func:`manifex.tl.embed` (recorded in ``uns``) that all of them hold, else the one method
    embedding (``X_dlme``, ``X_tsimcne``, ``X_n2d``) they share.
    """
    holders = [("query", query), *others]
    if basis is not None:
        return get_basis(holders, basis)
    embedded = [
        k
        for k in query.obsm
        if isinstance(query.uns.get(basis_name(k)), dict) and "space" in query.uns[basis_name(k)]
    ]
    q_cands = embedded or [k for k in query.obsm if k in METHOD_BASES]
    cands = [k for k in q_cands if all(k in a.obsm for _, a in others)]
    if len(cands) == 1:
        return cands[0]
    if not cands and len(q_cands) == 1:
        return get_basis(holders, q_cands[0])  # names the AnnData that lacks it
    shown = cands or q_cands or list(query.obsm.keys())
    raise ValueError(f"Cannot tell which embedding to use (candidates: {shown}); pass `basis=`.")


def obsm_coords(adata: AnnData, key: str, name: str) -> np.ndarray:
    """``adata.obsm[key]`` as a finite float64 array of shape ``(n_obs, d)``."""

    rep = adata.obsm[key]
    if isinstance(rep, pd.DataFrame):
        rep = rep.to_numpy()
    x = as_2d_float(rep, name=f"{name}.obsm[{key!r}]")
    return x.toarray().astype(np.float64) if sp.issparse(x) else np.asarray(x, dtype=np.float64)


def obs_labels(adata: AnnData, label_key: Any, name: str, *, arg: str = "label_key") -> pd.Series:
    """``adata.obs[label_key]`` as objects, missing labels (NaN, None, pd.NA) as ``None``."""
    if not isinstance(label_key, str):
        raise TypeError(f"`{arg}` must be a string (an obs column), got {type(label_key).__name__}.")
    if label_key not in adata.obs:
        raise KeyError(f"{name}.obs has no column {label_key!r} (columns: {list(adata.obs.columns)}).")
    s = adata.obs[label_key]
    return s.astype(object).where(s.notna(), None)
