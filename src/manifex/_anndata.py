"""AnnData helpers shared by :mod:`manifex.tl` and :mod:`manifex.pl`: checks, lookups, records.

* :func:`check_adata` -- an AnnData with cells and features (and not in an unusable state);
  :func:`check_flags` -- boolean switches;
* :func:`check_key_added` -- the key a result is written under, checked before any work;
  :func:`plain` -- values ``write_h5ad`` can store;
* :func:`get_basis` / :func:`resolve_basis` (the one lookup of an embedding by scanpy's ``basis`` convention);
* :func:`obsm_coords`, :func:`obs_labels` -- coordinates and labels, validated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from ._utils import as_2d_float

__all__ = [
    "RESERVED_KEYS",
    "basis_name",
    "check_adata",
    "check_flags",
    "check_key_added",
    "get_basis",
    "obs_labels",
    "obsm_coords",
    "plain",
    "resolve_basis",
]

#: Embeddings the ``mx.tl`` methods write by default (tried when no ``basis`` is given).
METHOD_BASES = ("X_dlme", "X_tsimcne", "X_n2d")


Slot = tuple[str, str]


def check_flags(**flags: Any) -> None:
    """Each keyword is ``True`` or ``False`` (``copy="yes"`` is a mistake, not a truthy value)."""
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            raise TypeError(f"`{name}` must be True or False, got {value!r}.")


def plain(obj: Any) -> Any:
    """Convert values to types that ``AnnData.write_h5ad`` stores (no None, no tuples of mixed types)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        if all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in obj):
            return np.asarray(obj)
        if all(isinstance(v, str) for v in obj):
            return np.asarray(obj, dtype=object)
        return {str(i): plain(v) for i, v in enumerate(obj)}
    if isinstance(obj, np.ndarray | np.generic | int | float | str | bool):
        return obj
    return repr(obj)


#: scanpy's own results: other steps read them (``sc.pp.neighbors`` uses ``X_pca`` by default,
#: ``sc.tl.umap`` / ``leiden`` the neighbour graph), so a result is never written under these keys.
RESERVED_KEYS = {
    "pca": (("obsm", "X_pca"), ("uns", "pca"), ("varm", "PCs")),
    "neighbors": (("uns", "neighbors"), ("obsp", "distances"), ("obsp", "connectivities")),
}


def _exists(adata: AnnData, slot: str, name: str) -> bool:
    return name in getattr(adata, slot).keys() if slot != "obs" else name in adata.obs.columns


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


def check_key_added(
    adata: AnnData,
    key_added: Any,
    *,
    default: str,
    writes: Callable[[str], Iterable[Slot]],
    inputs: Mapping[Slot, str] | Iterable[Slot] = (),
    function: str,
) -> str:
    """The key a ``tl`` function writes its results under, checked before any work.

    ``key_added`` (or ``default`` when it is ``None``) must be a non-empty string without ``"/"``
    (an ``.h5ad`` cannot store such a key). ``writes(key)`` lists the ``(slot, name)`` entries
    the call would write (``("obsm", "X_dlme")``, ``("uns", "dlme")``, ``("obs", "n2d")``);
    ``inputs`` the entries it reads or must keep (a mapping may say what each one is, for the
    message). Then

    * writing over one of the call's inputs, or under a scanpy key whose contents other steps read
      (:data:`RESERVED_KEYS`: ``"pca"``, ``"neighbors"``), raises ``ValueError``;
    * writing over an existing ``obs`` column that is not a result recorded under the same key
      (``uns[key]``) raises ``ValueError``: it holds the user's annotation (e.g. cell-type labels);
    * any other existing entry is replaced, with a logged warning naming it.

    Returns the key.
    """
    key = default if key_added is None else key_added
    if not isinstance(key, str) or not key:
        raise ValueError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    if "/" in key:
        raise ValueError(
            f"`key_added`={key!r} contains '/', which an .h5ad file cannot store in a key; use e.g. "
            f"{key.replace('/', '_')!r}."
        )
    if key in RESERVED_KEYS:
        raise ValueError(
            f"`key_added`={key!r} is reserved: scanpy keeps its own results under it "
            f"({', '.join(f'{s}[{n!r}]' for s, n in RESERVED_KEYS[key])}), which other steps read. "
            "Choose another key."
        )
    what = dict(inputs) if isinstance(inputs, Mapping) else dict.fromkeys(inputs, "an input of this call")
    planned = list(dict.fromkeys(writes(key)))
    reserved = {slot for slots in RESERVED_KEYS.values() for slot in slots}
    ours = isinstance(adata.uns.get(key), Mapping)
    replaced = []
    for slot, name in planned:
        where = f"{slot}[{name!r}]"
        if (slot, name) in what:
            raise ValueError(
                f"`key_added`={key!r} would write {where}, which is {what[(slot, name)]}; choose another key."
            )
        if (slot, name) in reserved:
            raise ValueError(
                f"`key_added`={key!r} would write {where}, scanpy's own result; choose another key."
            )
        if not _exists(adata, slot, name):
            continue
        if slot == "obs" and not ours:
            raise ValueError(
                f"`key_added`={key!r} would replace the column obs[{name!r}], which is not an earlier "
                f"result of this key (no uns[{key!r}]): it holds your own annotation. Choose another "
                "key, or delete the column first."
            )
        replaced.append(where)
    if replaced:
        logg.warning(f"{function}: replacing the existing {', '.join(replaced)} (key_added={key!r})")
    return key
