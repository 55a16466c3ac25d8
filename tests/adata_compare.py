"""A deep comparison of AnnData objects, to check that a failing call changed nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def state(adata: AnnData) -> dict[str, Any]:
    """A deep copy of everything an AnnData holds (works for views and backed objects)."""
    return {
        "shape": adata.shape,
        "obs_names": adata.obs_names.copy(),
        "var_names": adata.var_names.copy(),
        "X": None if adata.isbacked else _copy(adata.X),
        "obs": adata.obs.copy(deep=True),
        "var": adata.var.copy(deep=True),
        "obsm": {k: _copy(v) for k, v in adata.obsm.items()},
        "varm": {k: _copy(v) for k, v in adata.varm.items()},
        "obsp": {k: _copy(v) for k, v in adata.obsp.items()},
        "layers": {k: _copy(v) for k, v in adata.layers.items()},
        "uns": _copy(dict(adata.uns)),
    }


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if sp.issparse(v):
        return v.copy()
    if isinstance(v, pd.DataFrame | pd.Series):
        return v.copy(deep=True)
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _equal(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict) or isinstance(b, dict):
        assert isinstance(a, dict) and isinstance(b, dict), f"{where}: type changed"
        assert list(a) == list(b), f"{where}: keys {list(b)} -> {list(a)}"
        for k in a:
            _equal(a[k], b[k], f"{where}[{k!r}]")
        return
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, obj=where)
        return
    if isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, obj=where)
        return
    if sp.issparse(a) or sp.issparse(b):
        assert sp.issparse(a) and sp.issparse(b), f"{where}: sparsity changed"
        assert a.shape == b.shape and (a != b).nnz == 0, f"{where}: values changed"
        return
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: shape/dtype changed"
        if a.dtype.kind in "fc":
            np.testing.assert_array_equal(a, b, err_msg=where)
        else:
            assert (a == b).all(), f"{where}: values changed"
        return
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: list changed"
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
        return
    assert type(a) is type(b) and (a == b or (a != a and b != b)), f"{where}: {b!r} -> {a!r}"


def assert_unchanged(adata: AnnData, before: dict[str, Any]) -> None:
    """``adata`` holds exactly what ``before = state(adata)`` recorded."""
    now = state(adata)
    for k in before:
        _equal(now[k], before[k], k)
