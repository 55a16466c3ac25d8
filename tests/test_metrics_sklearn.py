"""The metrics scikit-learn also has, checked against scikit-learn on small data.

``trustworthiness`` and ``knn_accuracy`` / ``linear_accuracy`` must give scikit-learn's numbers
(exactly, up to float rounding); the Hungarian matching of ``clustering_accuracy`` must find the
best of all one-to-one matchings, found here by trying every permutation.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import trustworthiness as sk_trustworthiness
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import manifex as mx
from manifex.metrics import matched_confusion


@pytest.fixture(scope="module")
def data():
    """Three overlapping classes in 10-d and a noisy 2-d projection of them (continuous: no ties)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [60, 50, 40])
    x = rng.normal(size=(150, 10)) + 1.5 * rng.normal(size=(3, 10))[y]
    e = x[:, :2] + 0.8 * rng.normal(size=(150, 2))
    return x, e, y


@pytest.mark.parametrize("k", [1, 5, 15, 40])
@pytest.mark.parametrize("chunk_size", [1024, 7])
def test_trustworthiness_equals_sklearn(data, k, chunk_size):
    x, e, _ = data
    ours = mx.metrics.trustworthiness(x, e, n_neighbors=k, n_samples=None, chunk_size=chunk_size)
    theirs = sk_trustworthiness(x, e, n_neighbors=k)
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_trustworthiness_of_the_data_itself_is_one(data):
    x, _, _ = data
    assert mx.metrics.trustworthiness(x, x, n_neighbors=10, n_samples=None) == pytest.approx(1.0)
    assert sk_trustworthiness(x, x, n_neighbors=10) == pytest.approx(1.0)


def test_trustworthiness_subsample_is_close_to_full(data):
    x, e, _ = data
    full = sk_trustworthiness(x, e, n_neighbors=10)
    parts = [mx.metrics.trustworthiness(x, e, n_neighbors=10, n_samples=75, random_state=s) for s in range(8)]
    assert np.mean(parts) == pytest.approx(full, abs=0.01)


def _sklearn_cv(clf, e, y, n_splits=5, seed=0) -> float:
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, e, y, cv=cv).mean())


@pytest.mark.parametrize("k", [1, 5, 15])
@pytest.mark.parametrize("space", ["embedding", "input"])
def test_knn_accuracy_equals_sklearn(data, k, space):
    x, e, y = data
    z = e if space == "embedding" else x
    ours = mx.metrics.knn_accuracy(z, y, n_neighbors=k)
    assert ours == pytest.approx(_sklearn_cv(KNeighborsClassifier(n_neighbors=k), z, y), abs=1e-12)
    # the same with string labels (sorted the same way, so the same folds)
    names = np.array(["alpha", "beta", "gamma"])[y]
    assert mx.metrics.knn_accuracy(z, names, n_neighbors=k) == pytest.approx(ours, abs=1e-12)


def test_knn_accuracy_leaves_out_single_member_classes(data):
    _, e, y = data
    y2 = y.copy()
    y2[0] = 7  # a class of one cell: it cannot be stratified
    keep = y2 != 7
    ours = mx.metrics.knn_accuracy(e, y2, n_neighbors=5, random_state=3)
    theirs = _sklearn_cv(KNeighborsClassifier(n_neighbors=5), e[keep], y[keep], seed=3)
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_linear_accuracy_equals_sklearn(data):
    _, e, y = data
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    assert mx.metrics.linear_accuracy(e, y) == pytest.approx(_sklearn_cv(clf, e, y), abs=1e-12)


def _best_matching_by_brute_force(t: np.ndarray, p: np.ndarray) -> float:
    """Accuracy of the best one-to-one map clusters -> labels, trying every injective map."""
    labels, clusters = np.unique(t), np.unique(p)
    best = 0
    slots = list(labels) + [None] * max(0, len(clusters) - len(labels))
    for perm in itertools.permutations(slots, len(clusters)):
        mapping = dict(zip(clusters, perm, strict=True))
        best = max(best, int(sum(mapping[c] == lab for c, lab in zip(p, t, strict=True))))
    return best / len(t)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_clusters", [2, 3, 4])
def test_clustering_accuracy_is_the_best_matching(seed, n_clusters):
    rng = np.random.default_rng(seed)
    t = rng.choice(["a", "b", "c"], 40)
    p = rng.integers(0, n_clusters, 40)
    assert mx.metrics.clustering_accuracy(t, p) == pytest.approx(_best_matching_by_brute_force(t, p))


def test_matched_confusion_counts_and_order():
    labels = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    clusters = np.array([2] * 5 + [0] * 3 + [1, 0])  # one "c" cell wrongly in cluster 0
    table, acc = matched_confusion(labels, clusters)
    assert list(table.index) == [2, 0, 1] and list(table.columns) == ["a", "b", "c"]
    expected = pd.crosstab(pd.Series(clusters, name="cluster"), pd.Series(labels, name="label"))
    pd.testing.assert_frame_equal(table, expected.loc[[2, 0, 1]], check_names=False, check_dtype=False)
    assert acc == pytest.approx(0.9)
    # more clusters than labels: the unmatched cluster comes last
    table, acc = matched_confusion(["x", "x", "y", "y"], ["p", "q", "r", "r"])
    assert list(table.index) == ["p", "r", "q"] and acc == pytest.approx(0.75)


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA])
def test_missing_labels_are_refused_not_counted_as_nan(missing):
    t = pd.Series(["a", "a", missing, "b"], dtype=object)
    with pytest.raises(ValueError, match="`labels_true` has 1 missing"):
        mx.metrics.clustering_accuracy(t, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="`labels_pred` has 1 missing"):
        mx.metrics.clustering_accuracy(["a", "a", "b", "b"], pd.Categorical([0, 0, None, 1]))
    with pytest.raises(ValueError, match="4 entries but `labels_pred` has 3"):
        mx.metrics.clustering_accuracy(["a", "a", "b", "b"], [0, 0, 1])


def test_neighbour_count_is_named_n_neighbors(data):
    x, e, y = data
    for call in (
        lambda **kw: mx.metrics.knn_accuracy(e, y, **kw),
        lambda **kw: mx.metrics.trustworthiness(x, e, **kw),
        lambda **kw: mx.metrics.evaluate_embedding(e, y, X=x, **kw),
    ):
        with pytest.raises(TypeError, match="'k'"):
            call(k=5)  # the old name
        for bad in (0, 2.5, True):
            with pytest.raises(ValueError, match="`n_neighbors` must be a positive integer"):
                call(n_neighbors=bad)
    with pytest.raises(ValueError, match=r"`n_neighbors` must be in \[1, n/2\)"):
        mx.metrics.trustworthiness(x, e, n_neighbors=75)
