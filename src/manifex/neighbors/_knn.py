"""kNN graphs and query neighbours behind one option: exact on a torch device, faiss, pynndescent.

The options and the choice of ``method="auto"`` are in ``_options.py``, the recall check on a
sample in ``_recall.py``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._utils import as_2d_float, torch_threads_kept
from ._exact import Database, exact_search
from ._faiss import faiss_knn, faiss_query
from ._options import (
    EXACT_MAX_CELLS,
    QUERY_METHODS,
    check_k,
    check_method,
    resolve_method,
    search_options,
)
from ._recall import knn_recall, query_recall

__all__ = ["knn_graph", "knn_indices", "knn_query", "pynndescent_degree"]


def pynndescent_degree(k: int, n: int) -> int:
    """Neighbours of the graph pynndescent builds for K = ``k``: ``k + 1 + max(8, k // 2)``, at most n.

    A wider graph than the K + 1 needed: at 100k × 50 (30 clusters, K = 15) recall rose from
    0.87 with 16 to 0.96 with 24 (and 0.98 with 30) for 1.5× (2.2×) the time.
    """
    return int(min(n, k + 1 + max(8, k // 2)))


def _pynndescent(x: np.ndarray | sp.csr_matrix, k: int, random_state: int, n_threads: int) -> np.ndarray:
    from pynndescent import NNDescent

    with torch_threads_kept():  # numba's OpenMP layer may share torch's runtime
        index = NNDescent(
            x,
            n_neighbors=pynndescent_degree(k, x.shape[0]),
            metric="euclidean",
            random_state=random_state,
            n_jobs=n_threads,
        )
    return _drop_self(index.neighbor_graph[0], k)


def _drop_self(ind: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index (duplicates may put it anywhere) and keep k columns."""
    n = ind.shape[0]
    is_self = ind == np.arange(n)[:, None]
    # rows where self is absent (exact duplicates): drop the last column instead
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    out = ind[~is_self].reshape(n, -1)[:, :k]
    return np.ascontiguousarray(out, dtype=np.int64)


def knn_graph(
    x: Any,
    n_neighbors: int,
    *,
    method: str = "auto",
    device: str | torch.device = "auto",
    random_state: int = 0,
    n_jobs: int | None = None,
    measure_recall: bool | int = True,
    target_recall: float = 0.95,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Each row's ``n_neighbors`` nearest other rows (Euclidean), and how they were found.

    Parameters
    ----------
    x
        Data ``(n, d)``, dense (any real dtype; searched in float32) or scipy sparse.
    n_neighbors
        Neighbours per row, K; the row itself is never one of them, even beside a duplicate.
    method
        ``"exact"``: all pairs on ``device``, in tiles of the distance matrix (matrix products
        and ``torch.topk``; memory O(tile) beyond one float32 copy of ``x``); ties go to the
        lower row index. ``"faiss"``: faiss's k-means splits the rows into ``4·√n`` lists and
        each list's rows are compared, by matrix products on ``device``, with the rows of its
        ``nprobe`` nearest lists; ``nprobe`` is tuned on a sample until the recall reaches
        ``target_recall`` (k-means runs on the GPU when the faiss build has GPU support and
        ``device`` is CUDA); two float32 copies of ``x``; dense input only. ``"pynndescent"``:
        nearest-neighbour descent on a graph of ``K + 1 + max(8, K / 2)`` neighbours, of which
        the K nearest are kept (accepts sparse input). ``"auto"``: exact up to
        :data:`EXACT_MAX_CELLS` rows for the device (20,000 on the CPU, 1,000,000 on CUDA), else
        faiss when importable and the input is dense, else pynndescent.
    device
        Where exact search and faiss's list join run: ``"auto"``, ``"cpu"``, ``"cuda"``, a
        :class:`torch.device` (pynndescent always runs on the CPU).
    random_state
        Seed of faiss's k-means and its training and calibration samples, of pynndescent, and of
        the recall sample.
        Same seed, data, device and thread count give the same graph.
    n_jobs
        Threads for faiss and pynndescent; ``None`` or -1 uses ``torch.get_num_threads()``.
        Exact search uses torch's threads.
    measure_recall
        For approximate methods, measure the recall (:func:`knn_recall`) on a seeded sample:
        ``True`` for 1,000 rows, an int for that many, ``False`` or 0 to skip.
    target_recall
        Recall faiss is tuned for (between 0 and 1).

    Returns
    -------
    indices
        ``(n, n_neighbors)`` int64, nearest first.
    info
        Plain types: ``method`` (resolved backend), ``n_neighbors``, ``seconds`` (the search),
        ``recall`` (``None`` for exact search or when not measured), ``recall_sample`` (rows
        checked, or ``None``), ``device``, and ``params`` (backend details: faiss's index,
        ``nlist``, ``nprobe``, calibration recall).

    Examples
    --------
    >>> import numpy as np
    >>> import manifex as mx
    >>> x = np.random.default_rng(0).normal(size=(500, 10))
    >>> ind, info = mx.neighbors.knn_graph(x, 15, device="cpu")
    >>> ind.shape, info["method"], info["recall"]
    ((500, 15), 'exact', None)
    >>> ind, info = mx.neighbors.knn_graph(x, 15, method="faiss", device="cpu")
    >>> info["recall"] >= 0.95
    True
    """
    method = check_method(method)
    x = as_2d_float(x, name="x")
    n = x.shape[0]
    k = check_k(n_neighbors, n)
    seed, n_sample, threads, dev = search_options(random_state, measure_recall, target_recall, n_jobs, device)
    sparse = sp.issparse(x)
    resolved = resolve_method(method, n, sparse=sparse, device=dev)
    if resolved == "faiss" and sparse:
        raise ValueError(
            "method='faiss' needs dense input and `x` is sparse; use method='exact' or 'pynndescent', "
            "or reduce it first (e.g. PCA)."
        )

    params: dict[str, Any] = {}
    t0 = time.perf_counter()
    if resolved == "exact":
        ind, _ = exact_search(Database(x, dev), np.arange(n), k)
    elif resolved == "faiss":
        ind, params = faiss_knn(
            x, k, random_state=seed, n_threads=threads, device=dev, target_recall=float(target_recall)
        )
    else:
        ind = _pynndescent(x, k, seed, threads)
        params = {"n_threads": threads, "graph_degree": pynndescent_degree(k, n)}
    seconds = time.perf_counter() - t0

    recall, sample = None, None
    if resolved != "exact" and n_sample > 0:
        sample = min(n_sample, n)
        recall = knn_recall(x, ind, n_sample=sample, random_state=seed, device=dev)
    info = {
        "method": resolved,
        "n_neighbors": k,
        "seconds": round(seconds, 3),
        "recall": recall,
        "recall_sample": sample,
        "device": "cpu" if resolved == "pynndescent" else str(params.pop("device", dev)),
        "params": params,
    }
    return np.ascontiguousarray(ind, dtype=np.int64), info


def knn_indices(
    x: Any,
    n_neighbors: int,
    *,
    method: str = "auto",
    random_state: int = 0,
    n_jobs: int | None = None,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Indices of each row's ``n_neighbors`` nearest other rows (Euclidean).

    :func:`knn_graph` without the recall check and the info.

    Parameters
    ----------
    x
        Data ``(n, d)``, dense or scipy sparse.
    n_neighbors
        Neighbours per row, K (the row itself excluded).
    method
        ``"auto"``, ``"exact"``, ``"faiss"`` or ``"pynndescent"`` (see :func:`knn_graph`).
    random_state
        Seed of the approximate methods.
    n_jobs
        Threads for faiss and pynndescent; ``None`` uses ``torch.get_num_threads()``.
    device
        Device of exact search and of faiss's list join.

    Returns
    -------
    Integer array ``(n, n_neighbors)``.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.neighbors import knn_indices
    >>> knn_indices(np.array([[0.0], [1.0], [3.0], [7.0]]), 1, device="cpu").ravel().tolist()
    [1, 0, 1, 2]
    """
    ind, _ = knn_graph(
        x,
        n_neighbors,
        method=method,
        device=device,
        random_state=random_state,
        n_jobs=n_jobs,
        measure_recall=False,
    )
    return ind


def knn_query(
    reference: Any,
    queries: Any,
    n_neighbors: int,
    *,
    method: str = "auto",
    device: str | torch.device = "auto",
    random_state: int = 0,
    n_jobs: int | None = None,
    measure_recall: bool | int = True,
    target_recall: float = 0.95,
    return_info: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The ``n_neighbors`` nearest ``reference`` rows of each ``queries`` row (Euclidean).

    Parameters
    ----------
    reference
        Dense data ``(n, d)`` searched.
    queries
        Dense data ``(m, d)`` whose neighbours are wanted (a query row equal to a reference row
        finds it at distance 0).
    n_neighbors
        Neighbours per query, K ≤ n.
    method
        ``"exact"``: tiled matrix products and ``torch.topk`` on ``device``, as in
        :func:`knn_graph` (memory: one float32 copy of ``reference`` plus O(tile); cost
        O(m × n × d); ties go to the lower reference row). ``"faiss"``: a faiss IVF-Flat index
        of ``4·√n`` k-means lists on the reference, ``nprobe`` tuned on a seeded sample of the
        queries until the recall reaches ``target_recall`` (CPU). ``"auto"``: exact while
        ``m × n`` is at most the square of :data:`EXACT_MAX_CELLS` for the device (the pairs
        an exact graph searches there), else faiss when importable, else exact.
        ``"pynndescent"`` is not offered: at K = 1 its queries found 0.40 of the exact
        neighbours (20k × 10 Gaussian reference, 30k queries) in 95 s, against faiss's 0.97 in
        1.2 s and exact search's 5 s.
    device
        Where exact search runs: ``"auto"``, ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
    random_state
        Seed of the index (faiss's k-means and samples, pynndescent) and of the recall sample.
    n_jobs
        Threads for faiss and pynndescent; ``None`` or -1 uses ``torch.get_num_threads()``.
    measure_recall
        For approximate methods, the recall against exact search on a seeded sample of queries:
        ``True`` for 1,000 rows, an int for that many, ``False`` or 0 to skip.
    target_recall
        Recall faiss is tuned for (between 0 and 1).
    return_info
        Also return how the neighbours were found.

    Returns
    -------
    indices
        ``(m, K)`` int64 reference rows, nearest first.
    distances
        ``(m, K)`` float32 Euclidean distances.
    info
        With ``return_info``: ``method``, ``n_neighbors``, ``seconds``, ``recall`` (``None``
        for exact search or when not measured; a listed row no farther than the exact K-th
        neighbour counts as found), ``recall_sample`` and ``params`` (backend details).

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.neighbors import knn_query
    >>> ind, dist = knn_query(np.array([[0.0], [1.0], [3.0]]), np.array([[0.9], [2.5]]), 2, device="cpu")
    >>> ind.tolist(), np.round(dist, 2).tolist()
    ([[1, 0], [2, 1]], [[0.1, 0.9], [0.5, 1.5]])
    >>> rng = np.random.default_rng(0)
    >>> ref, q = rng.normal(size=(5000, 8)), rng.normal(size=(2000, 8))
    >>> ind, dist, info = knn_query(ref, q, 5, method="faiss", return_info=True)
    >>> info["method"], info["recall"] >= 0.95
    ('faiss', True)
    """
    if method not in QUERY_METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(repr(m) for m in QUERY_METHODS)}; got {method!r}."
        )
    ref = as_2d_float(reference, name="reference")
    q = as_2d_float(queries, name="queries")
    if sp.issparse(ref) or sp.issparse(q):
        raise TypeError("`reference` and `queries` must be dense arrays.")
    if q.shape[1] != ref.shape[1]:
        raise ValueError(f"`queries` must have the {ref.shape[1]} columns of `reference`, got {q.shape[1]}.")
    k = check_k(n_neighbors, ref.shape[0], self_excluded=False)
    seed, n_sample, threads, dev = search_options(random_state, measure_recall, target_recall, n_jobs, device)
    n, m = ref.shape[0], q.shape[0]
    resolved = method
    if method == "auto":
        limit = EXACT_MAX_CELLS.get(dev.type, EXACT_MAX_CELLS["cpu"])
        resolved = (
            "exact"
            if n * m <= limit * limit
            else resolve_method("auto", 2 * limit + 1, sparse=False, device=dev)
        )

    params: dict[str, Any] = {}
    t0 = time.perf_counter()
    if resolved == "exact":
        ind, sq = exact_search(Database(ref, dev), None, k, queries=q)
    else:
        ind, sq, params = faiss_query(
            ref, q, k, random_state=seed, n_threads=threads, target_recall=float(target_recall)
        )
    seconds = time.perf_counter() - t0
    dist = np.sqrt(sq, dtype=np.float32)
    if not return_info:
        return ind, dist
    recall, sample = None, None
    if resolved != "exact" and n_sample > 0:
        sample = min(n_sample, m)
        recall = query_recall(ref, q, ind, sample, seed, dev)
    info = {
        "method": resolved,
        "n_neighbors": k,
        "seconds": round(seconds, 3),
        "recall": recall,
        "recall_sample": sample,
        "device": str(dev) if resolved == "exact" else "cpu",
        "params": params,
    }
    return ind, dist, info
