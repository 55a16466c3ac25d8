"""Small shared helpers: device selection, seeding and array validation.

Nothing here knows about AnnData; :mod:`manifex.tl` does the AnnData side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["as_2d_float", "check_random_state", "resolve_device", "seeded"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device specification into a :class:`torch.device`.

    Parameters
    ----------
    device
        ``"auto"`` picks CUDA, then Apple MPS, then the CPU. Anything :class:`torch.device`
        understands is accepted as well (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Returns
    -------
    The resolved device. Asking for a device that is not available raises :class:`ValueError`.
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        if device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", torch.cuda.current_device())
            if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise ValueError(
                f"`device` must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps', got {device!r}."
            ) from e
    else:
        raise TypeError(f"`device` must be a string or torch.device, got {type(device).__name__}.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`device`={str(dev)!r} was requested but CUDA is not available.")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"`device`={str(dev)!r}: only {torch.cuda.device_count()} CUDA device(s) are visible."
            )
        return torch.device("cuda", index)
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError("`device`='mps' was requested but MPS is not available.")
    if dev.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"`device` type {dev.type!r} is not supported; use 'cpu', 'cuda' or 'mps'.")
    return dev


def check_random_state(random_state: Any) -> int:
    """Validate a seed and return it as a plain ``int``."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        raise TypeError(f"`random_state` must be an int, got {type(random_state).__name__}.")
    if random_state < 0:
        raise ValueError(f"`random_state` must be non-negative, got {random_state}.")
    return int(random_state)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch's global generators inside the block and restore them afterwards.

    Used around weight initialisation so that a fixed ``random_state`` gives the same network
    without clobbering the caller's global random state.
    """
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count after the block.

    numba (umap-learn, pynndescent) and faiss may load the same OpenMP runtime as torch; umap-learn
    sets numba's thread count for a fit and sets it back to numba's default (all cores), which
    resets torch's count too. Without this, a user who ran ``torch.set_num_threads(1)`` would get
    all cores back after an N2D fit (and results of threaded code that sums in a different order).
    """
    old = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A :class:`torch.Generator` living on ``device`` (CPU generator for MPS)."""
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    g = torch.Generator(device=gen_device)
    g.manual_seed(seed)
    return g


def as_2d_float(x: Any, *, name: str = "X", min_rows: int = 1) -> np.ndarray | sp.csr_matrix:
    """Validate a data matrix and return it as float32 (dense array or CSR).

    An object array is read as numbers when every entry is one (as :func:`sklearn.utils.check_array`
    does). The messages for an empty, complex or 1-d ``x`` use scikit-learn's wording
    ("0 feature(s) (shape=...)", "Complex data not supported", "Reshape your data").

    Raises
    ------
    TypeError
        If ``x`` is not numeric.
    ValueError
        If ``x`` is complex, not 2-d, has too few rows, no columns, or non-finite values.
    """
    if sp.issparse(x):
        _check_dtype(x.dtype, name)
        x = sp.csr_matrix(x, dtype=np.float32)
        data = x.data
    else:
        if hasattr(x, "to_numpy"):
            x = x.to_numpy()
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        if x.dtype.kind == "O":
            try:
                x = x.astype(np.float64)
            except (TypeError, ValueError) as err:
                raise TypeError(f"`{name}` must hold numbers, got dtype object ({err}).") from None
        _check_dtype(x.dtype, name)
        if x.ndim != 2:
            hint = (
                " Reshape your data: x.reshape(-1, 1) if it has a single feature, x.reshape(1, -1) if it "
                "is a single cell."
                if x.ndim == 1
                else ""
            )
            raise ValueError(f"`{name}` must be 2-dimensional (cells × features), got shape {x.shape}.{hint}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        data = x
    if x.shape[0] < min_rows:
        raise ValueError(f"`{name}` has {x.shape[0]} sample(s) (rows); at least {min_rows} are needed.")
    if x.shape[1] < 1:
        raise ValueError(f"`{name}` has 0 feature(s) (shape={x.shape}) while a minimum of 1 is required.")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise ValueError(f"`{name}` contains {bad} NaN or infinite value(s); remove or impute them first.")
    return x


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind == "c":
        raise ValueError(f"Complex data not supported: `{name}` has dtype {dtype}; pass real numbers.")
    if dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold numbers, got dtype {dtype}.")
