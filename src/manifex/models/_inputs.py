"""The models' input matrices: validated in memory or wrapped on disk, their per-feature
statistics, and their columns scaled."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._utils import as_2d_float
from ..train._data import BackedMatrix, is_backed

__all__ = ["apply_scale", "as_matrix", "col_mean_var"]


def apply_scale(x: np.ndarray | sp.csr_matrix, scale: np.ndarray | None) -> np.ndarray | sp.csr_matrix:
    """``x`` with each column multiplied by ``scale`` (float32; sparse stays CSR); ``x`` itself
    when ``scale`` is ``None``."""
    if scale is None:
        return x
    if sp.issparse(x):
        return sp.csr_matrix(x.multiply(scale[None, :]), dtype=np.float32)
    return (x * scale[None, :]).astype(np.float32)


def as_matrix(x: Any, *, name: str = "X", min_rows: int = 1) -> Any:
    """:func:`~manifex._utils.as_2d_float`, or a :class:`~manifex.train._data.BackedMatrix` for an
    on-disk matrix (validated by shape and dtype here, by value in its one pass of statistics)."""
    if is_backed(x):
        m = BackedMatrix(x, name=name)
        if m.shape[0] < min_rows:
            raise ValueError(f"`{name}` has {m.shape[0]} sample(s) (rows); at least {min_rows} are needed.")
        if m.shape[1] < 1:
            raise ValueError(f"`{name}` has 0 feature(s) (shape={m.shape}) while a minimum of 1 is required.")
        return m
    return as_2d_float(x, name=name, min_rows=min_rows)


def col_mean_var(x: np.ndarray | sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and variance of an in-memory matrix, as float32."""
    if sp.issparse(x):
        mean = np.asarray(x.mean(0)).ravel()
        sq = np.asarray(x.multiply(x).mean(0)).ravel()
        var = np.maximum(sq - mean**2, 0.0)
    else:
        mean = x.mean(0, dtype=np.float64)
        var = x.var(0, dtype=np.float64)
    return mean.astype(np.float32), var.astype(np.float32)
