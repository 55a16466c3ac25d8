"""Data larger than memory: matrices that stay on disk (AnnData's backed modes).

An AnnData opened with ``anndata.read_h5ad(path, backed="r")`` (or a zarr store) hands out its
``X`` and layers as on-disk datasets: an h5py / zarr array when dense, an
:class:`anndata.abc.CSRDataset` / ``CSCDataset`` when sparse. :class:`BackedMatrix` wraps such a
dataset; the models then

* compute the per-feature statistics and the data fingerprint in one pass over row chunks;
* build the kNN graph of the augmentations on an out-of-core PCA of the rows
  (:func:`incremental_pca`, scikit-learn's IncrementalPCA over chunks) when the matrix is wide;
* read each minibatch (and the neighbours an augmentation mixes in) from disk
  (:class:`StreamData`), so memory stays O(batch + n × representation) and the dense
  cells × genes matrix never exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA, IncrementalPCA

__all__ = [
    "BackedMatrix",
    "DeviceData",
    "StreamData",
    "fit_incremental_pca",
    "incremental_pca",
    "is_backed",
    "principal_components",
    "read_rows",
]

#: rows read at a time by the passes over the whole matrix
CHUNK_ROWS = 10_000
#: rows per IncrementalPCA step (its SVD holds a few float64 copies of the chunk)
PCA_CHUNK_ROWS = 2_000


class DeviceData:
    """A data matrix kept on the training device, sliced into dense minibatches.

    Dense input is copied to the device once. Sparse input stays sparse there and only the rows
    of a minibatch are densified, so memory is never O(cells × genes) dense.
    """

    def __init__(self, x: np.ndarray | sp.spmatrix, device: torch.device):
        self.shape = x.shape
        self.device = device
        self.sparse = sp.issparse(x)
        if self.sparse:
            coo = sp.coo_matrix(x, dtype=np.float32)
            idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
            self.data = torch.sparse_coo_tensor(
                idx, torch.from_numpy(coo.data), size=x.shape, device=device, check_invariants=False
            ).coalesce()
        else:
            self.data = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.sparse:
            return torch.index_select(self.data, 0, idx).to_dense()
        return self.data[idx]

    def batches(self, batch_size: int) -> Iterable[torch.Tensor]:
        """Consecutive dense minibatches in the original order (for inference)."""
        n = self.shape[0]
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(n, start + batch_size), device=self.device)
            yield self[idx]


def read_rows(source: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` (sorted, unique) of an on-disk array: one slice when they are a contiguous
    run, else one fancy-indexed read (h5py and zarr both take sorted integer arrays)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and rows.size == rows[-1] - rows[0] + 1:
        return source[int(rows[0]) : int(rows[-1]) + 1]
    return source[rows]


def is_backed(x: Any) -> bool:
    """Whether ``x`` is an on-disk matrix of a backed AnnData (or already a :class:`BackedMatrix`)."""
    if isinstance(x, BackedMatrix):
        return True
    try:
        from anndata.abc import CSCDataset, CSRDataset

        if isinstance(x, CSRDataset | CSCDataset):
            return True
    except ImportError:  # pragma: no cover - old anndata
        pass
    mod = type(x).__module__
    return mod.startswith("h5py") or mod.startswith("zarr")


class BackedMatrix:
    """A cells × features matrix on disk, read by rows.

    Parameters
    ----------
    source
        An h5py / zarr 2-d dataset or an anndata ``CSRDataset`` (a ``CSCDataset`` is read too,
        but each row read then touches every column: store backed data as CSR).
    name
        Used in error messages.
    """

    def __init__(self, source: Any, *, name: str = "X"):
        if isinstance(source, BackedMatrix):
            source = source.source
        self.source = source
        self.name = name
        shape = tuple(int(s) for s in source.shape)
        if len(shape) != 2:
            raise ValueError(f"`{name}` must be 2-dimensional (cells × features), got shape {shape}.")
        self.shape = shape
        dtype = np.dtype(source.dtype)
        if dtype.kind not in "biuf":
            raise TypeError(f"`{name}` must hold numbers, got dtype {dtype}.")
        self.dtype = dtype
        self.sparse = not hasattr(source, "ndim") or _is_sparse_dataset(source)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, rows: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """Rows ``rows`` (sorted, unique) as float32 (CSR when the data is sparse)."""
        block = read_rows(self.source, rows)
        if sp.issparse(block):
            return sp.csr_matrix(block, dtype=np.float32)
        return np.asarray(block, dtype=np.float32)

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray | sp.csr_matrix]]:
        """``(start, block)`` over consecutive row blocks (of :data:`CHUNK_ROWS` by default)."""
        n = self.shape[0]
        rows = CHUNK_ROWS if rows is None else int(rows)
        for s in range(0, n, rows):
            yield s, self.read(np.arange(s, min(n, s + rows)))

    def stats(self) -> tuple[np.ndarray, np.ndarray, str]:
        """Per-feature mean and variance (float32) and a fingerprint, in one pass; refuses
        non-finite values."""
        n, d = self.shape
        total = np.zeros(d)
        sq = np.zeros(d)
        h = hashlib.sha256(f"backed:{self.shape}:{self.dtype}".encode())
        for s, block in self.chunks():
            data = block.data if sp.issparse(block) else block
            if not np.isfinite(data).all():
                raise ValueError(
                    f"`{self.name}` contains NaN or infinite values (rows {s}–{s + block.shape[0] - 1})."
                )
            if sp.issparse(block):
                total += np.asarray(block.sum(0)).ravel()
                sq += np.asarray(block.multiply(block).sum(0)).ravel()
                h.update(np.asarray(block[:: max(1, block.shape[0] // 8)].toarray()).tobytes())
            else:
                total += block.sum(0, dtype=np.float64)
                sq += np.square(block, dtype=np.float64).sum(0)
                h.update(np.ascontiguousarray(block[:: max(1, block.shape[0] // 8)]).tobytes())
        mean = total / n
        var = np.maximum(sq / n - mean**2, 0.0)
        h.update(np.round(total, 3).tobytes())
        return mean.astype(np.float32), var.astype(np.float32), h.hexdigest()


def _is_sparse_dataset(x: Any) -> bool:
    try:
        from anndata.abc import CSCDataset, CSRDataset

        return isinstance(x, CSRDataset | CSCDataset)
    except ImportError:  # pragma: no cover
        return False


class StreamData:
    """Minibatches read from disk onto the training device, like
    :class:`manifex.train._data.DeviceData`: ``data[idx]`` returns the rows ``idx`` (a tensor, any
    order, repeats allowed) on ``device``, optionally multiplied by ``scale``.

    ``matrix`` is a :class:`BackedMatrix` (rows come as dense float32) or any reader with a
    ``shape`` and a ``read(sorted_unique_rows)`` that returns a numpy array, such as
    :class:`manifex.models._images.BackedImages` (rows come as ``(k, C, H, W)`` uint8).
    """

    def __init__(self, matrix: Any, device: torch.device, *, scale: np.ndarray | None = None):
        self.matrix = matrix
        self.shape = tuple(matrix.shape)
        self.device = device
        self.sparse = bool(getattr(matrix, "sparse", False))
        self.scale = torch.as_tensor(scale, device=device) if scale is not None else None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        rows = idx.detach().cpu().numpy().astype(np.int64).ravel()
        uniq, inverse = np.unique(rows, return_inverse=True)
        block = self.matrix.read(uniq)
        dense = block.toarray() if sp.issparse(block) else block
        out = torch.from_numpy(np.ascontiguousarray(dense[inverse])).to(self.device)
        return out * self.scale if self.scale is not None else out

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Consecutive dense minibatches in the original order (for inference), of at most
        :data:`CHUNK_ROWS` rows."""
        n = self.shape[0]
        batch_size = min(int(batch_size), CHUNK_ROWS)
        for start in range(0, n, batch_size):
            yield self[torch.arange(start, min(n, start + batch_size))]


def fit_incremental_pca(
    matrix: BackedMatrix,
    n_components: int,
    *,
    chunk_rows: int | None = None,
    scale: np.ndarray | None = None,
    check_finite: bool = False,
) -> IncrementalPCA:
    """:class:`sklearn.decomposition.IncrementalPCA` fitted over the rows of a backed matrix,
    ``chunk_rows`` at a time (:data:`CHUNK_ROWS` by default; a short chunk joins the next, as
    each step needs ``n_components`` rows); ``scale`` multiplies the features first, and
    ``check_finite`` refuses NaN or infinite values. Memory O(chunk × features)."""
    ipca = IncrementalPCA(n_components=n_components)
    pending: np.ndarray | None = None
    for _, block in matrix.chunks(chunk_rows):
        b = block.toarray() if sp.issparse(block) else block
        if check_finite and not np.isfinite(b).all():
            raise ValueError(f"`{matrix.name}` contains NaN or infinite values; remove or impute them first.")
        if scale is not None:
            b = b * scale[None, :]
        if pending is not None:
            b, pending = np.vstack([pending, b]), None
        if b.shape[0] < n_components:
            pending = b
            continue
        ipca.partial_fit(b)
    if pending is not None and not hasattr(ipca, "components_"):
        ipca.partial_fit(pending)
    return ipca


def incremental_pca(
    matrix: BackedMatrix,
    n_components: int = 50,
    *,
    scale: np.ndarray | None = None,
    chunk_rows: int | None = None,
) -> np.ndarray:
    """``(n, n_components)`` PCA coordinates of a backed matrix, fitted
    (:func:`fit_incremental_pca`, :data:`PCA_CHUNK_ROWS` rows per step) and applied chunk by
    chunk; memory O(chunk × features)."""
    n, d = matrix.shape
    chunk_rows = PCA_CHUNK_ROWS if chunk_rows is None else int(chunk_rows)
    k = int(min(n_components, d, chunk_rows))
    ipca = fit_incremental_pca(matrix, k, chunk_rows=chunk_rows, scale=scale)
    out = np.empty((n, k), dtype=np.float32)
    for s, block in matrix.chunks(chunk_rows):
        b = block.toarray() if sp.issparse(block) else block
        out[s : s + block.shape[0]] = ipca.transform(b * scale[None, :] if scale is not None else b)
    return out


def principal_components(
    x: Any, n_components: int, *, scale: np.ndarray | None = None, random_state: int = 0
) -> np.ndarray:
    """``(n, k)`` coordinates of the rows of ``x`` on their ``k = min(n_components, *x.shape)``
    leading principal components: seeded randomized PCA of dense rows, ARPACK for sparse ones,
    :func:`incremental_pca` of a backed matrix; ``scale`` multiplies the features first."""
    k = min(int(n_components), *x.shape)
    if isinstance(x, BackedMatrix):
        return incremental_pca(x, k, scale=scale)
    if scale is not None:
        x = x.multiply(scale[None, :]).tocsr() if sp.issparse(x) else np.asarray(x) * scale[None, :]
    if sp.issparse(x):
        return PCA(k, svd_solver="arpack", random_state=random_state).fit_transform(x)
    return PCA(k, svd_solver="randomized", random_state=random_state).fit_transform(np.asarray(x))
