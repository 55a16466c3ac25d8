"""kNN graphs behind one option: exact on a torch device, faiss, pynndescent; recall on a sample."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._utils import as_2d_float, check_random_state, resolve_device, torch_threads_kept
from ._exact import Database, exact_search
from ._faiss import faiss_available, faiss_knn, faiss_query

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


def _check_k(n_neighbors: Any, n: int, *, self_excluded: bool = True) -> int:
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


def _check_method(method: Any) -> str:
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


def _search_options(
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
    method = _check_method(method)
    if method != "auto":
        return method
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if n <= EXACT_MAX_CELLS.get(dev.type, EXACT_MAX_CELLS["cpu"]):
        return "exact"
    if not sparse and faiss_available():
        return "faiss"
    return "pynndescent"


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
    method = _check_method(method)
    x = as_2d_float(x, name="x")
    n = x.shape[0]
    k = _check_k(n_neighbors, n)
    seed, n_sample, threads, dev = _search_options(
        random_state, measure_recall, target_recall, n_jobs, device
    )
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


def _pair_sqdist(x: np.ndarray | sp.csr_matrix, rows: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Squared distances (float64) from each of ``rows`` to its ``nbrs``, in chunks of rows."""
    out = np.empty(nbrs.shape, dtype=np.float64)
    step = max(1, 2**16 // max(1, nbrs.shape[1]))
    for s in range(0, rows.shape[0], step):
        r, nb = rows[s : s + step], nbrs[s : s + step]
        if sp.issparse(x):
            a = x[r].toarray().astype(np.float64)
            b = x[nb.ravel()].toarray().astype(np.float64).reshape(*nb.shape, -1)
        else:
            a = x[r].astype(np.float64)
            b = x[nb].astype(np.float64)
        out[s : s + step] = ((b - a[:, None, :]) ** 2).sum(-1)
    return out


def knn_recall(
    x: Any,
    indices: Any,
    *,
    n_sample: int = RECALL_SAMPLE,
    random_state: int = 0,
    device: str | torch.device = "auto",
) -> float:
    """Recall of a kNN table against exact search, on a seeded sample of its rows.

    For ``n_sample`` rows drawn without replacement (all rows when there are fewer), the exact
    K nearest other rows are searched among all rows (tiled, on ``device``). A listed
    neighbour is a hit when it is not the row itself, not repeated, and no farther (in float64)
    than the exact K-th neighbour, so a tie with the K-th neighbour counts as found.

    Parameters
    ----------
    x
        The data the table was built on, ``(n, d)``, dense or sparse.
    indices
        ``(n, K)`` integer neighbour indices, e.g. from :func:`knn_graph`.
    n_sample
        Number of rows checked.
    random_state
        Seed of the sample.
    device
        Device of the exact search.

    Returns
    -------
    Hits over ``n_sample × K``: 1.0 for an exact table.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.neighbors import knn_indices, knn_recall
    >>> x = np.random.default_rng(0).normal(size=(300, 5))
    >>> ind = knn_indices(x, 10, device="cpu")
    >>> knn_recall(x, ind, device="cpu")
    1.0
    >>> ind[:, 5:] = (np.arange(300)[:, None] + 150) % 300  # corrupt half of each row
    >>> round(knn_recall(x, ind, device="cpu"), 1)
    0.5
    """
    x = as_2d_float(x, name="x")
    n = x.shape[0]
    ind = np.asarray(indices)
    if ind.ndim != 2 or ind.shape[0] != n or ind.dtype.kind not in "iu":
        raise ValueError(
            f"`indices` must be an integer array of shape (n, K) with n = {n} rows of `x`, "
            f"got dtype {ind.dtype} and shape {ind.shape}."
        )
    k = ind.shape[1]
    _check_k(k, n)
    if ind.size and (ind.min() < 0 or ind.max() >= n):
        raise ValueError(f"`indices` must lie in [0, {n}); found {ind.min()} to {ind.max()}.")
    if isinstance(n_sample, bool) or not isinstance(n_sample, int | np.integer) or n_sample < 1:
        raise ValueError(f"`n_sample` must be a positive int, got {n_sample!r}.")
    seed = check_random_state(random_state)
    dev = resolve_device(device)
    m = min(int(n_sample), n)
    rows = np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
    truth, _ = exact_search(Database(x, dev), rows, k)
    kth = _pair_sqdist(x, rows, truth[:, -1:])[:, 0]
    given = ind[rows].astype(np.int64)
    d = _pair_sqdist(x, rows, given)
    first = np.ones_like(given, dtype=bool)
    srt = np.sort(given, axis=1)
    o = np.argsort(given, axis=1, kind="stable")
    dup_sorted = np.zeros_like(given, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    np.put_along_axis(first, o, ~dup_sorted, axis=1)
    hit = first & (given != rows[:, None]) & (d <= kth[:, None] * (1 + 1e-6) + 1e-12)
    return float(hit.sum() / (m * k))


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
    k = _check_k(n_neighbors, ref.shape[0], self_excluded=False)
    seed, n_sample, threads, dev = _search_options(
        random_state, measure_recall, target_recall, n_jobs, device
    )
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
        recall = _query_recall(ref, q, ind, sample, seed, dev)
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


def _query_recall(
    ref: np.ndarray, q: np.ndarray, ind: np.ndarray, n_sample: int, seed: int, dev: torch.device
) -> float:
    """Recall of query neighbours ``ind`` against exact search on ``n_sample`` seeded queries:
    a listed row, not repeated, no farther (float64) than the exact K-th neighbour is a hit."""
    m, k = ind.shape
    rows = np.sort(np.random.default_rng([seed, 3]).choice(m, n_sample, replace=False))
    truth, _ = exact_search(Database(ref, dev), None, k, queries=q[rows])
    a = q[rows].astype(np.float64)[:, None, :]
    kth = ((ref[truth[:, -1]].astype(np.float64) - a[:, 0]) ** 2).sum(-1)
    given = ind[rows]
    d = ((ref[given].astype(np.float64) - a) ** 2).sum(-1)
    srt = np.sort(given, axis=1)
    repeated = np.zeros_like(given, dtype=bool)
    repeated[:, 1:] = srt[:, 1:] == srt[:, :-1]  # count each distinct listed row once
    hits = (d <= kth[:, None] * (1 + 1e-6) + 1e-12).sum() - repeated.sum()
    return float(hits / (n_sample * k))
