"""kNN backends (exact on a torch device, faiss, pynndescent) against scikit-learn and hand-built cases."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import requires_gpu
from sklearn.neighbors import NearestNeighbors

from manifex import neighbors as nb
from manifex.neighbors import _exact, knn_graph, knn_indices, knn_recall, resolve_method

CPU = torch.device("cpu")


def clustered(n: int = 2000, d: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=5.0, size=(30, d))
    return (centers[rng.integers(0, 30, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = clustered()
    # 17 = self + K = 15 + the next one, whose gap to the 15th decides ties at the boundary
    d, i = NearestNeighbors(n_neighbors=17).fit(x.astype(np.float64)).kneighbors(x.astype(np.float64))
    return x, i[:, 1:16], d[:, 1:16] ** 2, d


def set_recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.intersect1d(r, s).size for r, s in zip(a, b)]) / a.shape[1])


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 96 database rows × 3 query rows: many tiles and chunks on small data."""
    monkeypatch.setitem(_exact.TILE_COLS, "cpu", 96)
    monkeypatch.setitem(_exact.TILE_ENTRIES, "cpu", 96 * 3)


# ------------------------------------------------------------------ exact search
@pytest.mark.parametrize("tiled", [False, True])
def test_exact_matches_sklearn_up_to_ties(data, request, tiled):
    if tiled:
        request.getfixturevalue("small_tiles")
    x, ref, ref_d2, d_all = data
    ind, info = knn_graph(x, 15, method="exact", device="cpu")
    assert ind.shape == (2000, 15) and ind.dtype == np.int64
    assert info["method"] == "exact" and info["recall"] is None and info["device"] == "cpu"
    # rows whose 16 nearest other distances are separated by > 1e-4 relative have no ties
    # that float32 could reorder: there the indices must be identical, order included
    gaps = np.diff(d_all**2, axis=1) / np.maximum(d_all[:, 1:] ** 2, 1e-12)
    clean = (gaps[:, 1:] > 1e-4).all(axis=1)
    assert clean.mean() > 0.9
    assert np.array_equal(ind[clean], ref[clean])
    # elsewhere the distances agree
    got = ((x[ind].astype(np.float64) - x[:, None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(got, ref_d2, rtol=1e-4)


@pytest.mark.parametrize("tiled", [False, True])
def test_exact_ties_go_to_lower_index(request, tiled):
    if tiled:
        request.getfixturevalue("small_tiles")
    # a 12 × 12 integer grid: every point has 4 neighbours at distance 1 and 4 at √2; with K = 6
    # the last two places are tied among the diagonal ones
    g = np.stack(np.meshgrid(np.arange(12), np.arange(12), indexing="ij"), -1).reshape(-1, 2).astype(float)
    d2 = ((g[:, None] - g[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    cols = np.arange(len(g))
    expected = np.stack([np.lexsort((cols, row))[:6] for row in d2])
    assert np.array_equal(knn_indices(g, 6, method="exact", device="cpu"), expected)


def test_exact_is_deterministic_and_leaves_input_unchanged(data):
    x = data[0].copy()
    a = knn_indices(x, 10, method="exact", device="cpu")
    assert np.array_equal(x, data[0])
    assert np.array_equal(a, knn_indices(x, 10, method="exact", device="cpu"))


# ------------------------------------------------------------------ approximate backends
@pytest.mark.parametrize("method", ["faiss", "pynndescent"])
def test_approximate_backends_agree_with_sklearn(data, method):
    x, ref, _, _ = data
    ind, info = knn_graph(x, 15, method=method, random_state=0)
    assert ind.shape == (2000, 15) and ind.dtype == np.int64
    assert not (ind == np.arange(2000)[:, None]).any()
    full = set_recall(ind, ref)
    assert full >= 0.95
    assert info["method"] == method and info["recall_sample"] == 1000
    assert abs(info["recall"] - full) < 0.03  # the sampled recall estimates the full one


def test_pynndescent_with_every_other_row_as_neighbour():
    x = clustered(12, 3)
    ind = knn_indices(x, 11, method="pynndescent")
    assert all(set(r) == set(range(12)) - {i} for i, r in enumerate(ind))


def test_faiss_is_deterministic_and_tuned(data):
    x = data[0]
    a, info = knn_graph(x, 15, method="faiss", random_state=3, measure_recall=False)
    b, _ = knn_graph(x, 15, method="faiss", random_state=3, measure_recall=False)
    assert np.array_equal(a, b)
    p = info["params"]
    assert p["index"].startswith("IVF") and 1 <= p["nprobe"] <= p["nlist"]
    assert p["calibration_recall"] >= 0.96
    assert info["recall"] is None and info["recall_sample"] is None


def test_faiss_rows_with_short_lists_get_exact_neighbours():
    x = clustered(400, 10)
    # a target reached at nprobe = 1: many rows' single list holds fewer than 61 points
    ind, info = knn_graph(x, 60, method="faiss", target_recall=0.01, measure_recall=False)
    assert info["params"]["exact_rows"] > 0
    assert ind.min() >= 0 and not (ind == np.arange(400)[:, None]).any()
    assert all(len(set(r)) == 60 for r in ind)


def test_faiss_keeps_torch_thread_count(data):
    before = torch.get_num_threads()
    knn_graph(data[0][:500], 5, method="faiss", n_jobs=2, measure_recall=False)
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------ self, duplicates, k
@pytest.mark.parametrize("method", ["exact", "faiss"])
def test_self_excluded_with_duplicates(method):
    base = clustered(300, 8)
    x = np.repeat(base, 3, axis=0)  # rows 3i, 3i+1, 3i+2 are identical
    ind = knn_indices(x, 5, method=method)
    rows = np.arange(len(x))
    assert not (ind == rows[:, None]).any()
    twins = 3 * (rows // 3)[:, None] + np.arange(3)
    for r in range(len(x)):
        assert set(ind[r, :2]) == set(twins[r]) - {r}


@pytest.mark.parametrize("k", [0, 50, 60])
def test_k_out_of_range_names_n_neighbors(k):
    x = clustered(50, 4)
    with pytest.raises(ValueError, match="n_neighbors"):
        knn_indices(x, k)
    with pytest.raises(ValueError, match="n_neighbors"):
        knn_graph(x, k, method="faiss")


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match=r"'auto', 'exact', 'faiss', 'pynndescent'"):
        knn_graph(clustered(50, 4), 5, method="annoy")


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"device": "tpu"}, ValueError, "device"),
        ({"measure_recall": -1}, ValueError, "measure_recall"),
        ({"target_recall": 1.5}, ValueError, "target_recall"),
        ({"n_jobs": 0}, ValueError, "n_jobs"),
        ({"random_state": "a"}, TypeError, "random_state"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        knn_graph(clustered(50, 4), 5, **kwargs)


def test_bad_input():
    with pytest.raises(TypeError, match="x"):
        knn_indices(np.array([["a", "b"], ["c", "d"]]), 1)
    with pytest.raises(ValueError, match="NaN"):
        knn_indices(np.array([[0.0], [np.nan], [1.0]]), 1)


# ------------------------------------------------------------------ input types
def test_sparse_input(small_tiles):
    rng = np.random.default_rng(0)
    dense = clustered(400, 30) * (rng.random((400, 30)) < 0.3)
    x = sp.csr_matrix(dense)
    ref = NearestNeighbors(n_neighbors=6).fit(dense.astype(np.float64)).kneighbors(return_distance=False)
    ind = knn_indices(x, 6, method="exact", device="cpu")
    assert set_recall(ind, ref) == 1.0
    assert np.array_equal(ind, knn_indices(dense, 6, method="exact", device="cpu"))
    assert knn_recall(x, ind, device="cpu") == 1.0
    with pytest.raises(ValueError, match="dense"):
        knn_graph(x, 6, method="faiss")
    assert resolve_method("auto", 10**7, sparse=True, device=CPU) == "pynndescent"


def test_float64_and_int_input(data):
    x = data[0]
    ref = knn_indices(x, 10, method="exact", device="cpu")
    assert np.array_equal(knn_indices(x.astype(np.float64), 10, method="exact", device="cpu"), ref)
    xi = np.round(x * 100).astype(np.int32)
    assert np.array_equal(
        knn_indices(xi, 10, method="exact", device="cpu"),
        knn_indices(xi.astype(np.float32), 10, method="exact", device="cpu"),
    )


# ------------------------------------------------------------------ auto
def test_auto_chooses_by_size_and_device(monkeypatch, data):
    cpu_max = nb.EXACT_MAX_CELLS["cpu"]
    assert resolve_method("auto", cpu_max, sparse=False, device=CPU) == "exact"
    assert resolve_method("auto", cpu_max + 1, sparse=False, device=CPU) == "faiss"
    cuda = torch.device("cuda")  # a device object needs no GPU
    assert resolve_method("auto", cpu_max + 1, sparse=False, device=cuda) == "exact"
    assert resolve_method("auto", 10**8, sparse=False, device=cuda) == "faiss"
    assert resolve_method("exact", 10**8, sparse=False, device=CPU) == "exact"
    monkeypatch.setitem(nb.EXACT_MAX_CELLS, "cpu", 1000)
    _, info = knn_graph(data[0], 15, device="cpu", measure_recall=200)
    assert info["method"] == "faiss" and info["recall"] > 0.9 and info["recall_sample"] == 200


def test_auto_falls_back_without_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    assert resolve_method("auto", 10**7, sparse=False, device=CPU) == "pynndescent"
    with pytest.raises(ImportError, match="faiss"):
        knn_graph(clustered(100, 4), 5, method="faiss")


# ------------------------------------------------------------------ recall
def test_recall_hand_computed(data):
    x, ref, _, _ = data
    far = NearestNeighbors(n_neighbors=1).fit(-x).kneighbors(x, return_distance=False)  # ≈ farthest
    assert knn_recall(x, ref, n_sample=2000) == 1.0
    half = ref[:, :14].copy()
    half[:, 7:] = far  # 7 of 14 replaced by a distant point, repeated: counted once, as a miss
    assert knn_recall(x, half, n_sample=500) == pytest.approx(0.5)
    dup = ref[:, :4].copy()
    dup[:, 3] = dup[:, 0]  # a repeated neighbour counts once
    assert knn_recall(x, dup) == pytest.approx(0.75)
    selfish = ref[:, :4].copy()
    selfish[:, 0] = np.arange(2000)  # the row itself is not a neighbour
    assert knn_recall(x, selfish) == pytest.approx(0.75)
    bad_rows = ref.copy()
    bad_rows[:1000] = far[:1000]  # half the rows wrong: a 400-row sample sees about half
    assert 0.4 < knn_recall(x, bad_rows, n_sample=400, random_state=1) < 0.6


def test_recall_counts_ties_as_hits():
    line = np.array([[0.0], [1.0], [-1.0], [5.0], [9.0]])  # 0's two neighbours at distance 1: a tie
    ind = np.array([[2], [0], [0], [1], [3]])  # row 0 lists 2 where exact search lists 1
    assert knn_recall(line, ind) == 1.0


def test_recall_rejects_bad_indices():
    x = clustered(50, 4)
    with pytest.raises(ValueError, match="indices"):
        knn_recall(x, np.zeros((49, 3), dtype=int))
    with pytest.raises(ValueError, match="indices"):
        knn_recall(x, np.full((50, 3), 50))
    with pytest.raises(ValueError, match="n_sample"):
        knn_recall(x, np.zeros((50, 3), dtype=int), n_sample=0)


def test_old_signature_still_works(data):
    from manifex.neighbors import knn_indices as old

    ind = old(data[0][:300], 5, method="exact", random_state=0, n_jobs=None)
    assert ind.shape == (300, 5)


# ------------------------------------------------------------------ GPU
@requires_gpu
def test_exact_on_cuda_matches_cpu(data):
    x = data[0]
    cpu = knn_indices(x, 15, method="exact", device="cpu")
    gpu = knn_indices(x, 15, method="exact", device="cuda")
    assert set_recall(gpu, cpu) > 0.999


# ------------------------------------------------------------------ queries against a reference
@pytest.mark.parametrize("tiled", [False, True])
def test_knn_query_matches_sklearn(request, tiled):
    if tiled:
        request.getfixturevalue("small_tiles")
    ref = clustered(1500, 12, seed=1)
    q = clustered(400, 12, seed=2)
    d_ref, i_ref = (
        NearestNeighbors(n_neighbors=10).fit(ref.astype(np.float64)).kneighbors(q.astype(np.float64))
    )
    ind, dist = nb.knn_query(ref, q, 10, device="cpu")
    assert ind.shape == (400, 10) and ind.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_allclose(dist, d_ref, rtol=1e-3, atol=1e-3)
    assert set_recall(ind, i_ref) > 0.999


def test_knn_query_finds_identical_rows_and_breaks_ties_by_index():
    ref = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [5.0, 5.0]])
    ind, dist = nb.knn_query(ref, np.array([[0.0, 0.0], [5.0, 5.0]]), 3, device="cpu")
    assert ind.tolist() == [[0, 1, 2], [3, 1, 0]]  # 1 and 2 tie at distance 1: lower index first
    assert dist[0].tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("args", "err", "match"),
    [
        ((np.zeros((5, 3)), np.zeros((2, 4)), 2), ValueError, "3 columns"),
        ((np.zeros((5, 3)), np.zeros((2, 3)), 6), ValueError, "n_neighbors"),
        ((np.zeros((5, 3)), np.zeros((2, 3)), 0), ValueError, "n_neighbors"),
        ((np.zeros((5, 3)), np.zeros((2, 3)), 2.0), TypeError, "n_neighbors"),
        ((sp.csr_matrix(np.eye(5)), np.zeros((2, 5)), 2), TypeError, "dense"),
        ((np.zeros((5, 3)), np.full((2, 3), np.nan), 2), ValueError, "queries"),
    ],
)
def test_knn_query_bad_arguments(args, err, match):
    with pytest.raises(err, match=match):
        nb.knn_query(*args, device="cpu")


def test_knn_query_faiss_agrees_with_sklearn_and_reports_recall():
    ref = clustered(6000, 12, seed=1)
    q = clustered(3000, 12, seed=2)
    i_ref = NearestNeighbors(n_neighbors=5).fit(ref.astype(np.float64)).kneighbors(q, return_distance=False)
    ind, dist, info = nb.knn_query(ref, q, 5, method="faiss", random_state=4, return_info=True)
    assert ind.shape == (3000, 5) and ind.dtype == np.int64 and dist.dtype == np.float32
    assert info["method"] == "faiss" and info["params"]["nlist"] == 6000 // 39  # min(4·√n, n / 39) lists
    found = set_recall(ind, i_ref)
    assert found >= 0.95
    assert abs(info["recall"] - found) < 0.03  # the sampled recall estimates the true one
    # the listed distances are the true distances to the listed rows, nearest first
    true_d = np.sqrt(((ref[ind] - q[:, None]) ** 2).sum(-1))
    np.testing.assert_allclose(dist, true_d, rtol=1e-3, atol=1e-3)
    assert (np.diff(dist, axis=1) >= -1e-5).all()
    again, _ = nb.knn_query(ref, q, 5, method="faiss", random_state=4)
    np.testing.assert_array_equal(ind, again)


def test_knn_query_faiss_fills_short_lists_and_small_references_exactly():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 4)).astype(np.float32)
    tiny = rng.normal(size=(200, 4)).astype(np.float32)  # too few rows for 8 lists: exact
    ind, _, info = nb.knn_query(tiny, q, 3, method="faiss", return_info=True)
    assert info["params"]["nlist"] is None
    np.testing.assert_array_equal(ind, nb.knn_query(tiny, q, 3, method="exact", device="cpu")[0])
    ref = rng.normal(size=(2000, 4)).astype(np.float32)  # 178 lists of ~11 rows, K = 60
    ind, _, info = nb.knn_query(ref, q, 60, method="faiss", target_recall=0.01, return_info=True)
    assert info["params"]["exact_rows"] > 0 and (ind >= 0).all()


def test_knn_query_auto_switches_to_faiss_past_the_exact_pair_budget(monkeypatch):
    ref, q = clustered(600, 6, seed=1), clustered(500, 6, seed=2)
    _, _, info = nb.knn_query(ref, q, 2, device="cpu", return_info=True)
    assert info["method"] == "exact" and info["recall"] is None
    monkeypatch.setitem(nb.EXACT_MAX_CELLS, "cpu", 500)  # 600 × 500 pairs > 500²
    _, _, info = nb.knn_query(ref, q, 2, device="cpu", return_info=True)
    assert info["method"] == "faiss" and info["recall"] is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "pynndescent"}, "method"),
        ({"method": "annoy"}, "method"),
        ({"target_recall": 0.0}, "target_recall"),
        ({"measure_recall": -1}, "measure_recall"),
        ({"n_jobs": 0}, "n_jobs"),
    ],
)
def test_knn_query_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nb.knn_query(np.zeros((5, 3)), np.zeros((2, 3)), 2, device="cpu", **kwargs)


@pytest.mark.parametrize("tiled", [False, True])
def test_single_nearest_neighbour_matches_the_general_path(request, tiled):
    """k = 1 takes torch.min; it must pick the row the top-k path ranks first, ties included."""
    if tiled:
        request.getfixturevalue("small_tiles")
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 3, size=(700, 2)).astype(np.float32)  # many exact ties
    q = rng.integers(0, 3, size=(300, 2)).astype(np.float32) + 0.5
    one, d1 = nb.knn_query(ref, q, 1, device="cpu")
    two, d2 = nb.knn_query(ref, q, 2, device="cpu")
    np.testing.assert_array_equal(one[:, 0], two[:, 0])
    np.testing.assert_array_equal(d1[:, 0], d2[:, 0])
    best = np.sqrt(((ref[None] - q[:, None]) ** 2).sum(-1).min(axis=1))
    np.testing.assert_allclose(d1[:, 0], best, atol=1e-5)  # a nearest row, whichever tie won
    one_self, _ = knn_graph(ref, 1, method="exact", device="cpu")
    two_self, _ = knn_graph(ref, 2, method="exact", device="cpu")
    np.testing.assert_array_equal(one_self[:, 0], two_self[:, 0])
    assert (one_self[:, 0] != np.arange(len(ref))).all()
