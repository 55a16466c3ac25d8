"""The global layout scores CPD and KNC (Kobak & Berens 2019): worked by hand on tiny
configurations, and against implementations written differently here (scipy's ``spearmanr`` over
distances from broadcasting; class means and nearest classes by plain Python loops)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

import manifex as mx


def _line(*positions: float) -> np.ndarray:
    """Points on the x-axis of the plane."""
    return np.c_[np.asarray(positions, dtype=np.float64), np.zeros(len(positions))]


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# ---------------------------------------------------------------- CPD


def _cpd_reference(e: np.ndarray, x: np.ndarray) -> float:
    """scipy's Spearman correlation over the upper triangle of distances from broadcasting."""
    iu = np.triu_indices(len(e), 1)
    de = np.sqrt(((e[:, None] - e[None]) ** 2).sum(-1))[iu]
    dx = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))[iu]
    return float(spearmanr(de, dx).statistic)


def test_cpd_by_hand_four_points():
    # Input on a line at 0, 1, 3, 7. Pairs (01, 02, 03, 12, 13, 23) have distances
    # 1, 3, 7, 2, 6, 4: ranks 1, 3, 6, 2, 5, 4.
    x = _line(0, 1, 3, 7)
    # Map at 0, 2, 3, 7: distances 2, 3, 7, 1, 5, 4, ranks 2, 3, 6, 1, 5, 4; rank differences
    # -1, 0, 0, 1, 0, 0; rho = 1 - 6 * 2 / (6 * 35) = 33/35.
    assert mx.metrics.cpd(_line(0, 2, 3, 7), x) == pytest.approx(33 / 35, abs=1e-12)
    # Map at 0, 7, 2, 3: distances 7, 2, 3, 5, 4, 1, ranks 6, 2, 3, 5, 4, 1; differences
    # 5, -1, -3, 3, -1, -3, sum of squares 54; rho = 1 - 6 * 54 / 210 = -19/35.
    assert mx.metrics.cpd(_line(0, 7, 2, 3), x) == pytest.approx(-19 / 35, abs=1e-12)
    # the map in the plane, the input in 3-d: only distances count
    e = _line(0, 7, 2, 3) @ _rotation(2, 1)
    assert mx.metrics.cpd(e, np.c_[x, np.zeros(4)] @ _rotation(3, 2)) == pytest.approx(-19 / 35, abs=1e-12)


def test_cpd_of_a_rotated_scaled_shifted_copy_is_one():
    x = np.random.default_rng(0).normal(size=(300, 3))
    copy = 2.5 * x @ _rotation(3, 0) + np.array([4.0, -1.0, 7.0])
    assert mx.metrics.cpd(copy, x) == pytest.approx(1.0, abs=1e-9)
    assert mx.metrics.cpd(copy, x, n_cells=50, random_state=3) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_cpd_equals_scipy_spearmanr_over_all_pairs(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 8))
    e = x[:, :2] + 0.7 * rng.normal(size=(120, 2))
    ours = mx.metrics.cpd(e, x, n_cells=None)
    assert ours == pytest.approx(_cpd_reference(e, x), abs=1e-10)
    # n_cells at or above n is all cells
    assert mx.metrics.cpd(e, x, n_cells=120) == ours and mx.metrics.cpd(e, x, n_cells=1000) == ours
    # the order of the cells does not matter
    perm = rng.permutation(120)
    assert mx.metrics.cpd(e[perm], x[perm], n_cells=None) == pytest.approx(ours, abs=1e-12)


def test_cpd_with_tied_distances_equals_scipy():
    # integer grids have many equal distances: ties get their average rank, as in scipy
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=(40, 3)).astype(float)
    e = rng.integers(0, 3, size=(40, 2)).astype(float)
    assert mx.metrics.cpd(e, x, n_cells=None) == pytest.approx(_cpd_reference(e, x), abs=1e-12)


def test_cpd_sample_is_seeded_and_close_to_all_cells():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 10))
    e = x[:, :2] + 0.5 * rng.normal(size=(600, 2))
    full = _cpd_reference(e, x)
    parts = [mx.metrics.cpd(e, x, n_cells=150, random_state=s) for s in range(6)]
    assert len(set(parts)) == 6  # different samples
    assert mx.metrics.cpd(e, x, n_cells=150, random_state=2) == parts[2]  # the same sample again
    assert np.mean(parts) == pytest.approx(full, abs=0.03)
    assert mx.metrics.cpd(e, x, n_cells=150) == parts[0]  # random_state=0 by default


def test_cpd_takes_sparse_input():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 30)) * (rng.random((80, 30)) < 0.2)
    e = rng.normal(size=(80, 2))
    dense = mx.metrics.cpd(e, x, n_cells=40)
    assert mx.metrics.cpd(e, sp.csr_matrix(x), n_cells=40) == dense
    assert mx.metrics.cpd(e, sp.csc_matrix(x), n_cells=40) == dense


def test_input_precision_and_integer_input():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 90)
    x = rng.normal(size=(90, 7)).astype(np.float32)
    e = rng.normal(size=(90, 2)).astype(np.float32)
    x64, e64 = x.astype(np.float64), e.astype(np.float64)
    # float32 data are scored in float64: the same numbers as their float64 copy
    assert mx.metrics.cpd(e, x, n_cells=50) == mx.metrics.cpd(e64, x64, n_cells=50)
    for k in (1, 3):
        assert mx.metrics.knc(e, x, y, n_neighbors=k) == mx.metrics.knc(e64, x64, y, n_neighbors=k)
    xi = rng.integers(-5, 5, size=(90, 7))
    assert mx.metrics.cpd(e, xi, n_cells=None) == pytest.approx(_cpd_reference(e64, xi.astype(float)))
    assert mx.metrics.knc(e, xi, y) == pytest.approx(_knc_reference(e64, xi.astype(float), y, 3))


def test_cpd_is_nan_when_a_space_has_one_distance_only():
    x = np.random.default_rng(0).normal(size=(10, 4))
    assert math.isnan(mx.metrics.cpd(np.ones((10, 2)), x))  # the map collapsed to one point
    assert math.isnan(mx.metrics.cpd(x[:, :2], np.zeros((10, 4))))


def test_cpd_refuses_bad_input():
    x = np.random.default_rng(0).normal(size=(20, 4))
    e = x[:, :2]
    with pytest.raises(TypeError, match="`X` is required"):
        mx.metrics.cpd(e, None)
    with pytest.raises(ValueError, match="`X` has 19 rows but `embedding` has 20"):
        mx.metrics.cpd(e, x[:19])
    with pytest.raises(ValueError, match="`X` must be 2-d"):
        mx.metrics.cpd(e, x[:, 0])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="`X` contains NaN"):
        mx.metrics.cpd(e, bad)
    with pytest.raises(ValueError, match="`X` contains NaN"):
        mx.metrics.cpd(e, sp.csr_matrix(bad))
    with pytest.raises(ValueError, match="`embedding` contains NaN"):
        mx.metrics.cpd(bad[:, :2], x)
    with pytest.raises(ValueError, match="`embedding` must be 2-d"):
        mx.metrics.cpd(e[:, 0], x)
    with pytest.raises(ValueError, match="at least 3 rows"):
        mx.metrics.cpd(e[:2], x[:2])
    for n_cells in (2, 0, -5, 2.5, 100.0, True, "all"):
        with pytest.raises(ValueError, match="`n_cells` must be an integer"):
            mx.metrics.cpd(e, x, n_cells=n_cells)


# ---------------------------------------------------------------- KNC

#: five classes on a line; nearest two classes of each (worked out from the positions):
#: 0: {1, 2}, 1: {0, 2}, 2: {0, 1}, 3: {2, 4}, 4: {2, 3}
LINE = np.array([0.0, 1.0, 3.0, 7.0, 12.0])


def _line_classes(map_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two cells per class spread vertically around the class's position on the line, in the
    input, and a map that puts class ``c`` at ``map_positions[c]`` (each cell 0.1 off it)."""
    y = np.repeat(np.arange(5), 2)
    off = np.tile([[0.0, -0.1], [0.0, 0.1]], (5, 1))
    return _line(*LINE[y]) + off, _line(*np.asarray(map_positions)[y]) + off[:, ::-1], y


def _knc_reference(e, x, labels, k) -> float:
    """Class means by loops over the cells, nearest classes by sorting (distance, class) pairs."""
    classes = sorted(set(labels.tolist()))

    def means(z):
        out = []
        for c in classes:
            rows = [z[i] for i in range(len(labels)) if labels[i] == c]
            out.append([sum(r[j] for r in rows) / len(rows) for j in range(z.shape[1])])
        return out

    def nearest(m):
        return [
            {j for _, j in sorted((math.dist(m[i], m[j]), j) for j in range(len(m)) if j != i)[:k]}
            for i in range(len(m))
        ]

    nx, ne = nearest(means(x)), nearest(means(e))
    return sum(len(a & b) for a, b in zip(nx, ne, strict=True)) / (k * len(classes))


def test_knc_of_an_isometry_is_one():
    x, _, y = _line_classes(LINE)
    for k in (1, 2, 3, 4):
        assert mx.metrics.knc(-3.0 * x[:, ::-1] + 5.0, x, y, n_neighbors=k) == 1.0
    rng = np.random.default_rng(0)
    x3 = rng.normal(size=(200, 3))
    y3 = rng.integers(0, 7, 200)
    assert mx.metrics.knc(x3 @ _rotation(3, 4), x3, y3) == 1.0


@pytest.mark.parametrize(
    ("swap", "expected"),
    [
        # swapping 0 and 1 keeps every class's two nearest classes
        ((0, 1), 1.0),
        # 2 <-> 3: map at 0, 1, 7, 3, 12 -> nearest 0: {1, 3}, 1: {0, 3}, 2: {3, 4}, 3: {0, 1},
        # 4: {2, 3}; kept 1, 1, 0, 0, 2 of 2 -> 4 / 10
        ((2, 3), 0.4),
        # 0 <-> 2: map at 3, 1, 0, 7, 12 -> 3: {0, 4}, 4: {0, 3}, the others keep both -> 8 / 10
        ((0, 2), 0.8),
        # 0 <-> 3: map at 7, 1, 3, 0, 12 -> 0: {2, 4}, 1: {2, 3}, 2: {1, 3}, 3: {1, 2}, 4: {0, 2};
        # kept 1 of 2 each -> 5 / 10
        ((0, 3), 0.5),
    ],
)
def test_knc_by_hand_swapped_classes(swap, expected):
    pos = LINE.copy()
    a, b = swap
    pos[a], pos[b] = pos[b], pos[a]
    x, e, y = _line_classes(pos)
    assert mx.metrics.knc(e, x, y, n_neighbors=2) == pytest.approx(expected, abs=1e-12)
    assert mx.metrics.knc(e, x, y, n_neighbors=2) == pytest.approx(_knc_reference(e, x, y, 2), abs=1e-12)


def test_knc_ties_go_to_the_class_that_comes_first():
    # Input: class "a" at 0 has two nearest classes at distance 1 (at -1 and +1). The map moves
    # the class at -1 out to -1.5, so the map's nearest class of "a" is the one at +1.
    x = _line(0, 0, -1, -1, 1, 1)
    e = _line(0, 0, -1.5, -1.5, 1, 1)
    # labels a, b, c: the input's tie goes to "b" (at -1): "a" loses it; "b" and "c" keep "a"
    assert mx.metrics.knc(e, x, np.array(list("aabbcc")), n_neighbors=1) == pytest.approx(2 / 3)
    # labels a, d, c: sorted a, c, d, the tie goes to "c" (at +1), which the map keeps
    assert mx.metrics.knc(e, x, np.array(list("aaddcc")), n_neighbors=1) == 1.0
    # a categorical's own order counts, not the sorted one
    labels = pd.Categorical(list("aabbcc"), categories=["a", "c", "b"])
    assert mx.metrics.knc(e, x, labels, n_neighbors=1) == 1.0
    assert mx.metrics.knc(e, x, pd.Series(labels), n_neighbors=1) == 1.0


def test_knc_with_every_other_class_as_neighbour_is_one():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)), rng.integers(0, 4, 60)
    assert mx.metrics.knc(rng.normal(size=(60, 2)), x, y, n_neighbors=3) == 1.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 6])
def test_knc_equals_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 9, 300)
    x = rng.normal(size=(300, 6)) + 2.0 * rng.normal(size=(9, 6))[y]
    e = x[:, :2] + rng.normal(size=(300, 2))
    ours = mx.metrics.knc(e, x, y, n_neighbors=k)
    assert ours == pytest.approx(_knc_reference(e, x, y, k), abs=1e-12)
    # names instead of numbers (sorted the same way), a sparse input, renamed classes
    names = np.array([f"type{c}" for c in range(9)])[y]
    assert mx.metrics.knc(e, x, names, n_neighbors=k) == ours
    assert mx.metrics.knc(e, sp.csr_matrix(x), y, n_neighbors=k) == pytest.approx(ours, abs=1e-12)
    assert mx.metrics.knc(e, x, rng.permutation(9)[y], n_neighbors=k) == pytest.approx(ours, abs=1e-12)


def test_knc_ignores_unused_categories():
    x, e, y = _line_classes(LINE[[0, 2, 3, 1, 4]])
    labels = pd.Categorical(y, categories=[0, 1, 2, 3, 4, 5, 6])
    assert mx.metrics.knc(e, x, labels, n_neighbors=2) == mx.metrics.knc(e, x, y, n_neighbors=2)
    with pytest.raises(ValueError, match="number of classes \\(5\\)"):
        mx.metrics.knc(e, x, labels, n_neighbors=5)


def test_knc_refuses_bad_input():
    x, e, y = _line_classes(LINE)
    with pytest.raises(ValueError, match=r"`n_neighbors`=5 must be smaller than the number of classes \(5\)"):
        mx.metrics.knc(e, x, y, n_neighbors=5)
    with pytest.raises(ValueError, match="`n_neighbors`=3 must be smaller than the number of classes"):
        mx.metrics.knc(e, x, np.repeat([0, 1, 2], [4, 3, 3]))  # the default 3 needs 4 classes
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="`n_neighbors` must be a positive integer"):
            mx.metrics.knc(e, x, y, n_neighbors=bad)
    with pytest.raises(TypeError, match="'k'"):
        mx.metrics.knc(e, x, y, k=2)
    with pytest.raises(ValueError, match="`labels` has 9 entries but `embedding` has 10 rows"):
        mx.metrics.knc(e, x, y[:9])
    with pytest.raises(ValueError, match="`labels` has 1 missing"):
        mx.metrics.knc(e, x, pd.Series(["a"] * 9 + [None]), n_neighbors=1)
    with pytest.raises(ValueError, match="`labels` must be 1-d"):
        mx.metrics.knc(e, x, y[:, None])
    with pytest.raises(TypeError, match="`X` is required"):
        mx.metrics.knc(e, None, y)
    with pytest.raises(ValueError, match="`X` has 8 rows"):
        mx.metrics.knc(e, x[:8], y)
    with pytest.raises(ValueError, match="`embedding` contains NaN"):
        mx.metrics.knc(np.full_like(e, np.inf), x, y)


# ---------------------------------------------------------------- evaluate_embedding

SIX = ["knn_acc", "linear_acc", "acc", "nmi", "ari", "trust"]


@pytest.fixture(scope="module")
def blobs():
    """Five overlapping classes in 10-d and a noisy 2-d projection."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 30)
    x = rng.normal(size=(150, 10)) + 2.0 * rng.normal(size=(5, 10))[y]
    return x, x[:, :2] + 0.8 * rng.normal(size=(150, 2)), y


def test_evaluate_embedding_adds_cpd_and_knc_outside_the_mean(blobs):
    x, e, y = blobs
    s = mx.metrics.evaluate_embedding(e, y, X=x, random_state=1)
    assert list(s) == [*SIX, "mean", "cpd", "knc"]
    assert s["mean"] == pytest.approx(np.mean([s[k] for k in SIX]), abs=1e-15)
    assert s["cpd"] == mx.metrics.cpd(e, x, random_state=1)
    assert s["knc"] == mx.metrics.knc(e, x, y, n_neighbors=3)
    # the six are the functions' own numbers
    assert s["knn_acc"] == mx.metrics.knn_accuracy(e, y, random_state=1)
    assert s["trust"] == mx.metrics.trustworthiness(x, e, random_state=1)
    s2 = mx.metrics.evaluate_embedding(e, y, X=x, random_state=1, knc_neighbors=1)
    assert s2["knc"] == mx.metrics.knc(e, x, y, n_neighbors=1)
    assert {k: s2[k] for k in [*SIX, "mean", "cpd"]} == {k: s[k] for k in [*SIX, "mean", "cpd"]}


def test_evaluate_embedding_without_x_has_no_global_scores(blobs):
    _, e, y = blobs
    s = mx.metrics.evaluate_embedding(e, y)
    assert list(s) == ["knn_acc", "linear_acc", "acc", "nmi", "ari", "mean"]


def test_evaluate_embedding_knc_is_nan_with_too_few_classes(blobs):
    x, e, y = blobs
    keep = y < 3
    s = mx.metrics.evaluate_embedding(e[keep], y[keep], X=x[keep])
    assert math.isnan(s["knc"]) and np.isfinite(s["cpd"])
    assert s["mean"] == pytest.approx(np.mean([s[k] for k in SIX]), abs=1e-15)
    assert mx.metrics.evaluate_embedding(e[keep], y[keep], X=x[keep], knc_neighbors=2)["knc"] == 1.0


def test_evaluate_embedding_checks_knc_neighbors(blobs):
    x, e, y = blobs
    for bad in (0, 1.5, False):
        with pytest.raises(ValueError, match="`knc_neighbors` must be a positive integer"):
            mx.metrics.evaluate_embedding(e, y, X=x, knc_neighbors=bad)
