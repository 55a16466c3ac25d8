"""The options of the kNN searches, checked, and the backend ``method="auto"`` picks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._utils import check_random_state, resolve_device
from ._faiss import faiss_available

__all__ = [
    "EXACT_MAX_CELLS",
    "METHODS",
    "QUERY_METHODS",
    "RECALL_SAMPLE",
    "check_k",
    "check_method",
    "resolve_method",
    "search_options",
]

METHODS = ("auto", "exact", "faiss", "pynndescent")
#: Backends of :func:`knn_query`.
QUERY_METHODS = ("auto", "exact", "faiss")

#: ``method="auto"`` searches exactly up to this many rows on each device type, then uses faiss
#: (pynndescent when faiss is not importable or the input is sparse). On the CPU (one thread,
#: 50 dims) exact search costs ≈ 2.4 ns × n²: 1 s at 20k rows, 6 s at 50k, against 0.5 s and
#: 1.5 s for the faiss index at recall ≥ 0.95; 20k keeps exact results where they cost about a
#: second. On a GPU the products run ~1000× faster, so exact search stays below ~20 s up to 1M.
EXACT_MAX_CELLS = {"cpu": 20_000, "mps": 100_000, "cuda": 1_000_000}
#: Query rows of the recall check (``measure_recall=True``).
RECALL_SAMPLE = 1000


def check_k(n_neighbors: Any, n: int, *, self_excluded: bool = True) -> int:
    """``n_neighbors`` as an int between 1 and ``n - 1`` (``n`` when rows are not their own
    candidates, as queries against a reference)."""
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer):
        raise TypeError(f"`n_neighbors` must be an int, got {type(n_neighbors).__name__}.")
    if n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be at least 1, got {n_neighbors}.")
    if self_excluded and n_neighbors >= n:
        raise ValueError(
            f"`n_neighbors`={n_neighbors} must be smaller than the number of cells ({n}): "
            "each cell's own row is excluded."
        )
    if n_neighbors > n:
        raise ValueError(f"`n_neighbors`={n_neighbors} must be at most the number of reference rows ({n}).")
    return int(n_neighbors)


def check_method(method: Any) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"`method` must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}.")
    return method


def _check_recall_sample(measure_recall: Any) -> int:
    """Rows of the recall check that ``measure_recall`` asks for (0: none)."""
    if isinstance(measure_recall, bool):
        return RECALL_SAMPLE if measure_recall else 0
    if isinstance(measure_recall, int | np.integer) and measure_recall >= 0:
        return int(measure_recall)
    raise ValueError(f"`measure_recall` must be a bool or a non-negative int, got {measure_recall!r}.")


def _n_threads(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs == -1:
        return torch.get_num_threads()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or n_jobs < 1:
        raise ValueError(f"`n_jobs` must be a positive int, -1 or None, got {n_jobs!r}.")
    return int(n_jobs)


def search_options(
    random_state: Any, measure_recall: Any, target_recall: Any, n_jobs: Any, device: Any
) -> tuple[int, int, int, torch.device]:
    """The options :func:`knn_graph` and :func:`knn_query` share, checked:
    ``(seed, recall sample rows, threads, device)``."""
    seed = check_random_state(random_state)
    n_sample = _check_recall_sample(measure_recall)
    if not 0.0 < float(target_recall) <= 1.0:
        raise ValueError(f"`target_recall` must be in (0, 1], got {target_recall!r}.")
    return seed, n_sample, _n_threads(n_jobs), resolve_device(device)


def resolve_method(method: str, n: int, *, sparse: bool, device: str | torch.device) -> str:
    """The backend ``method`` means for ``n`` rows on ``device`` (``"auto"`` resolved).

    Parameters
    ----------
    method
        One of ``"auto"``, ``"exact"``, ``"faiss"``, ``"pynndescent"``.
    n
        Number of rows.
    sparse
        Whether the input is a scipy sparse matrix (faiss needs dense input).
    device
        The device exact search would run on (a string is resolved as in :func:`knn_graph`).

    Returns
    -------
    ``"exact"``, ``"faiss"`` or ``"pynndescent"``.

    Examples
    --------
    >>> import torch
    >>> from manifex.neighbors import resolve_method
    >>> resolve_method("auto", 5_000, sparse=False, device=torch.device("cpu"))
    'exact'
    """
    method = check_method(method)
    if method != "auto":
        return method
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if n <= EXACT_MAX_CELLS.get(dev.type, EXACT_MAX_CELLS["cpu"]):
        return "exact"
    if not sparse and faiss_available():
        return "faiss"
    return "pynndescent"
