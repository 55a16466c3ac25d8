"""Approximate k-nearest neighbours: faiss k-means lists joined by tiled matrix products.

The rows are split into ``nlist = 4·√n`` inverted lists by faiss's k-means (trained on a
seeded sample; on the GPU when the faiss build has GPU support). The queries of one list are
then compared, by one matrix product on the torch device, with every row of the ``nprobe``
lists whose centroids are nearest to that list's centroid, and ``torch.topk`` keeps the K
best. ``nprobe`` is the smallest value whose recall on a seeded sample of rows, against exact
search, reaches the target.

Why this design (measured with one thread on 30-cluster Gaussian data in 50 dimensions,
K = 15, recall ≥ 0.95; the 2 shared cores were loaded alike in each comparison):

* faiss's own IVF-Flat search reaches recall 0.99 at 100k rows (nprobe 32 of 1264 lists) in
  ≈ 5.5 s, against ≈ 8 s for HNSW (M = 32; M = 16 stays below 0.95 up to efSearch 128). At 1M
  rows HNSW is far worse (332 s to build, recall 0.91 at efSearch 64), and IVF-Flat needs
  nprobe 72 of 4000 lists: ≈ 630 s of search, since faiss scans the lists one vector at a time.
* The same lists searched by matrix products cost ≈ 14 ns per candidate pair instead of
  ≈ 35 ns: 337 s at 1M rows (nprobe 96, recall 0.968) and no per-query coarse search, and the
  products run on a GPU unchanged.

Everything is deterministic for a given ``random_state``, device and thread count: faiss's
k-means is seeded, and the products and the top-k selection have no random part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from .._utils import torch_threads_kept
from ._exact import Database, _tile_topk, exact_search

#: Fewest points per list: below it faiss's k-means warns and the lists are too small to probe.
MIN_POINTS_PER_LIST = 39
#: Training sample: this many points per list (faiss's own default caps at 256).
TRAIN_POINTS_PER_LIST = 32
#: k-means iterations (faiss's default is 25; 10 changed recall by < 0.005 at 100k rows).
KMEANS_ITERATIONS = 10
#: Rows whose exact neighbours calibrate ``nprobe``.
CALIBRATION_ROWS = 1000
#: Lists the calibration rows are drawn from. At 1M rows, 256 lists chose nprobe 96 for 3 seeds
#: (recall 0.965 on random rows) in 3 s, as all 4000 did in 27 s; 64 lists chose 104 once.
CALIBRATION_LISTS = 256
#: Added to the target recall on the calibration rows, for their sampling error.
CALIBRATION_MARGIN = 0.01
#: Rows assigned to their list per faiss call.
ASSIGN_CHUNK = 65_536


def import_faiss() -> Any:
    """``faiss``, or ``ImportError`` with an installation hint."""
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            "method='faiss' needs the faiss package: `pip install faiss-cpu` (or a GPU build of faiss)."
        ) from e
    return faiss


def faiss_available() -> bool:
    """Whether ``import faiss`` succeeds."""
    try:
        import_faiss()
    except ImportError:
        return False
    return True


def faiss_uses_gpu(faiss: Any, device: torch.device) -> bool:
    """A GPU build of faiss and a CUDA device to run its k-means on."""
    return device.type == "cuda" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@contextlib.contextmanager
def faiss_threads(faiss: Any, n_threads: int) -> Iterator[None]:
    """Set faiss's OpenMP thread count inside the block and restore it (and torch's) afterwards.

    faiss and torch may share one OpenMP runtime, so torch's thread count is restored too.
    """
    old = faiss.omp_get_max_threads()
    with torch_threads_kept():
        faiss.omp_set_num_threads(int(n_threads))
        try:
            yield
        finally:
            faiss.omp_set_num_threads(old)


def n_lists(n: int) -> int:
    """``min(4·√n, n / 39)``: the number of inverted lists for ``n`` rows."""
    return int(min(4 * np.sqrt(n), n // MIN_POINTS_PER_LIST))


class _Lists:
    """Rows grouped by list: a permuted copy of the database rows, list offsets, centroid distances."""

    def __init__(self, db: Database, assign: np.ndarray, centroids: np.ndarray) -> None:
        self.nlist = centroids.shape[0]
        self.order = np.argsort(assign, kind="stable")
        self.pos = np.empty_like(self.order)
        self.pos[self.order] = np.arange(self.order.shape[0])
        self.assign = assign
        self.off = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=self.nlist))])
        dev = db.device
        self.rows = db.data[torch.as_tensor(self.order, device=dev)]  # [-2b, ||b||²], grouped
        c = torch.as_tensor(centroids, device=dev)
        cd = torch.cdist(c, c)  # translation invariant: the rows' centring does not matter
        cd.fill_diagonal_(-1.0)  # a list always probes itself first
        self.cd = cd
        self.device = dev
        self.tile_entries = db.tile_entries

    def probes(self, nprobe: int) -> np.ndarray:
        return torch.topk(self.cd, nprobe, dim=1, largest=False).indices.cpu().numpy()

    def candidates(self, probe: np.ndarray) -> np.ndarray:
        """Grouped positions of all rows of the lists ``probe``, in that order."""
        starts, lengths = self.off[probe], self.off[probe + 1] - self.off[probe]
        shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return np.arange(lengths.sum()) + shift

    def search(self, nprobe: int, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours of ``rows`` (all rows when ``None``) within their list's ``nprobe`` lists.

        Returns the indices (``-1`` where fewer than ``k`` other candidates exist) and a mask
        of those short rows.
        """
        n = self.order.shape[0]
        rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.full((rows.shape[0], k), -1, dtype=np.int64)
        short = np.zeros(rows.shape[0], dtype=bool)
        probes = self.probes(nprobe)
        lists = self.assign[rows]
        by_list = np.argsort(lists, kind="stable")
        bounds = np.searchsorted(lists[by_list], np.arange(self.nlist + 1))
        for lst in range(self.nlist):
            which = by_list[bounds[lst] : bounds[lst + 1]]  # positions in `rows`
            if which.size == 0:
                continue
            cand = self.candidates(probes[lst])
            if cand.shape[0] < k + 1:
                short[which] = True
                continue
            cand_t = torch.as_tensor(cand, device=self.device)
            base = self.rows[cand_t]
            # the list's own rows come first in `cand` (it probes itself first)
            self_col = self.pos[rows[which]] - self.off[lst]
            step = max(1, self.tile_entries // cand.shape[0])
            for s in range(0, which.shape[0], step):
                w, sc = which[s : s + step], self_col[s : s + step]
                q = self.rows[torch.as_tensor(self.pos[rows[w]], device=self.device)].clone()
                q[:, :-1].mul_(-0.5)
                q[:, -1] = 1.0
                block = q @ base.T
                r = torch.arange(w.shape[0], device=self.device)
                block[r, torch.as_tensor(sc, device=self.device)] = float("inf")  # self, by index
                _, i = _tile_topk(block, k)
                out[w] = self.order[cand[i.cpu().numpy()]]
        return out, short


def _calibration_rows(lists: _Lists, rng: np.random.Generator) -> np.ndarray:
    """About ``CALIBRATION_ROWS`` seeded rows from ``CALIBRATION_LISTS`` random lists.

    Rows from few lists keep each calibration search to a few matrix products; the recall
    reported by :func:`~manifex.neighbors.knn_graph` is measured on an independent sample.
    """
    n = lists.order.shape[0]
    if n <= CALIBRATION_ROWS:
        return np.arange(n)
    chosen = rng.permutation(lists.nlist)[:CALIBRATION_LISTS]
    per = int(np.ceil(CALIBRATION_ROWS / len(chosen)))
    rows = []
    for lst in chosen:
        members = lists.order[lists.off[lst] : lists.off[lst + 1]]
        rows.append(rng.choice(members, min(per, members.size), replace=False))
    return np.sort(np.concatenate(rows))


def _ladder_search(recall: Callable[[int], float], nlist: int, goal: float) -> tuple[int, float]:
    """Smallest ``nprobe`` (doubling, then bisection to within 15 %) whose ``recall(nprobe)`` on
    the calibration rows reaches ``goal``."""
    lo, hi, p = 0, None, 1
    seen: dict[int, float] = {}
    while hi is None:
        seen[p] = recall(p)
        if seen[p] >= goal or p >= nlist:
            hi = p
        else:
            lo, p = p, min(nlist, 2 * p)
    while hi > max(lo + 1, int(lo * 1.15)):
        mid = (lo + hi) // 2
        seen[mid] = recall(mid)
        if seen[mid] >= goal:
            hi = mid
        else:
            lo = mid
    return hi, seen[hi]


def _hit_rate(got: np.ndarray, truth: np.ndarray) -> float:
    """Share of the ``truth`` rows' neighbours that ``got`` lists (rows matched by position)."""
    k = truth.shape[1]
    return float(np.mean([np.intersect1d(a, b).size for a, b in zip(got, truth)]) / k)


def _train_sample(x: np.ndarray, nlist: int, rng: np.random.Generator) -> np.ndarray:
    """``TRAIN_POINTS_PER_LIST`` seeded rows per list (all rows when there are fewer)."""
    n = x.shape[0]
    m = min(n, TRAIN_POINTS_PER_LIST * nlist)
    return x[np.sort(rng.choice(n, m, replace=False))] if m < n else x


def faiss_knn(
    x: np.ndarray,
    k: int,
    *,
    random_state: int,
    n_threads: int,
    device: torch.device,
    target_recall: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """kNN of every row of dense float32 ``x`` among the other rows, from faiss k-means lists.

    Below ``8 · 39`` rows there are too few rows for lists and the search is exact. Rows whose
    probed lists hold fewer than ``k`` other rows get their exact neighbours.

    Returns
    -------
    Indices ``(n, k)`` and plain-typed details (``index``, ``nlist``, ``nprobe``, calibration
    recall, whether faiss ran on the GPU, rows searched exactly).
    """
    faiss = import_faiss()
    n, d = x.shape
    gpu = faiss_uses_gpu(faiss, device)
    dev = device if device.type == "cuda" else torch.device("cpu")
    db = Database(x, dev)
    nlist = n_lists(n)
    if nlist < 8:
        ind, _ = exact_search(db, np.arange(n), k)
        return ind, {
            "device": str(dev),
            "gpu": False,
            "index": "exact (too few rows for lists)",
            "nlist": None,
            "nprobe": None,
        }
    with faiss_threads(faiss, n_threads):
        train = _train_sample(x, nlist, np.random.default_rng(random_state))
        # min_points_per_centroid=1: the sample is sized on purpose, no warning
        km = faiss.Kmeans(
            d,
            nlist,
            niter=KMEANS_ITERATIONS,
            seed=int(random_state),
            gpu=bool(gpu),
            min_points_per_centroid=1,
        )
        km.train(train)
        assign = np.empty(n, dtype=np.int64)
        for s in range(0, n, ASSIGN_CHUNK):
            assign[s : s + ASSIGN_CHUNK] = km.index.search(x[s : s + ASSIGN_CHUNK], 1)[1][:, 0]
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    lists = _Lists(db, assign, centroids)
    cal = _calibration_rows(lists, np.random.default_rng([random_state, 1]))
    truth, _ = exact_search(db, cal, k)
    nprobe, cal_recall = _ladder_search(
        lambda p: _hit_rate(lists.search(p, k, cal)[0], truth),
        lists.nlist,
        min(1.0, target_recall + CALIBRATION_MARGIN),
    )
    ind, short = lists.search(nprobe, k)
    if short.any():
        ind[short], _ = exact_search(db, np.where(short)[0], k)
    info = {
        "device": str(dev),
        "gpu": bool(gpu),
        "index": f"IVF{nlist} lists, matrix-product join",
        "nlist": int(nlist),
        "nprobe": int(nprobe),
        "calibration_recall": round(cal_recall, 4),
        "exact_rows": int(short.sum()),
    }
    return ind, info


def faiss_query(
    reference: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    random_state: int,
    n_threads: int,
    target_recall: float,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The ``k`` nearest ``reference`` rows of each ``queries`` row, from a faiss IVF-Flat index.

    The index's ``4·√n`` lists come from faiss's k-means on a seeded sample of the reference,
    as in :func:`faiss_knn`; ``nprobe`` is the smallest value whose recall on up to
    ``CALIBRATION_ROWS`` seeded queries, against exact search, reaches the target. faiss's own
    list scan serves here: queries are not grouped by list, so the matrix-product join of
    :func:`faiss_knn` has no blocks to share. A query whose probed lists hold fewer than ``k``
    rows gets its exact neighbours. Runs on the CPU.

    Returns
    -------
    Indices ``(m, k)`` int64, squared distances ``(m, k)`` float32, and plain-typed details.
    """
    faiss = import_faiss()
    reference = np.ascontiguousarray(reference, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n, d = reference.shape
    m = queries.shape[0]
    db = Database(reference, torch.device("cpu"))
    nlist = n_lists(n)
    if nlist < 8:
        ind, sq = exact_search(db, None, k, queries=queries)
        return ind, sq, {"index": "exact (too few rows for lists)", "nlist": None, "nprobe": None}
    rng = np.random.default_rng([random_state, 2])
    cal = np.sort(rng.choice(m, min(m, CALIBRATION_ROWS), replace=False))
    truth, _ = exact_search(db, None, k, queries=queries[cal])
    with faiss_threads(faiss, n_threads):
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
        index.cp.niter = KMEANS_ITERATIONS
        index.cp.seed = int(random_state)
        index.cp.min_points_per_centroid = 1  # the sample is sized on purpose, no warning
        index.train(_train_sample(reference, nlist, np.random.default_rng(random_state)))
        for s in range(0, n, ASSIGN_CHUNK):
            index.add(reference[s : s + ASSIGN_CHUNK])

        def search(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            sq, ind = index.search(rows, k)
            return ind.astype(np.int64), sq.astype(np.float32)

        def recall(p: int) -> float:
            index.nprobe = p
            return _hit_rate(search(queries[cal])[0], truth)

        nprobe, cal_recall = _ladder_search(recall, nlist, min(1.0, target_recall + CALIBRATION_MARGIN))
        index.nprobe = nprobe
        ind = np.empty((m, k), dtype=np.int64)
        sq = np.empty((m, k), dtype=np.float32)
        for s in range(0, m, ASSIGN_CHUNK):
            ind[s : s + ASSIGN_CHUNK], sq[s : s + ASSIGN_CHUNK] = search(queries[s : s + ASSIGN_CHUNK])
    short = (ind < 0).any(axis=1)
    if short.any():
        ind[short], sq[short] = exact_search(db, None, k, queries=queries[short])
    info = {
        "index": f"IVF{nlist},Flat (faiss)",
        "nlist": int(nlist),
        "nprobe": int(nprobe),
        "calibration_recall": round(cal_recall, 4),
        "exact_rows": int(short.sum()),
    }
    return ind, np.maximum(sq, 0.0), info
