"""Input checks shared by the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _emb(embedding: Any) -> np.ndarray:
    e = np.asarray(embedding, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"`embedding` must be 2-d with at least 2 rows, got shape {e.shape}.")
    if not np.isfinite(e).all():
        raise ValueError("`embedding` contains NaN or infinite values.")
    return e


def _check_n_neighbors(
    n_neighbors: Any, n: int | None = None, *, upper: str | None = None, name: str = "n_neighbors"
) -> int:
    """``n_neighbors`` as an int after checking it is a positive integer (below ``n`` when given).

    ``name`` is the argument's name in the messages.
    """
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {n_neighbors!r}.")
    if n is not None and n_neighbors >= n:
        raise ValueError(f"`{name}`={n_neighbors} must be smaller than {upper or f'n ({n})'}.")
    return int(n_neighbors)


def _categories(values: Any, name: str) -> pd.Categorical:
    """``values`` as a categorical of the categories present, refusing missing entries.

    Missing values (``None``, NaN, ``pd.NA``) are looked for before any conversion to strings,
    so that they are never counted as a class called ``"nan"``.
    """
    if isinstance(values, pd.Series | pd.Index):
        values = values.array
    if isinstance(values, pd.Categorical):
        cat = values.remove_unused_categories()
    else:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(f"`{name}` must be 1-d, got shape {arr.shape}.")
        try:
            cat = pd.Categorical(arr)
        except TypeError:  # values of mixed types that do not sort: compare them as strings
            missing = pd.isna(arr)
            cat = pd.Categorical(np.where(missing, None, arr.astype(str)))
    n_missing = int((cat.codes < 0).sum())
    if n_missing:
        raise ValueError(
            f"`{name}` has {n_missing} missing values (None / NaN) of {len(cat)}; "
            "drop those cells first, e.g. adata[adata.obs[column].notna()]."
        )
    return cat
