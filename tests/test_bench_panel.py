"""The panel's peers (TorchDR's UMAP / InfoTSNE, openTSNE) and its per-row function on tiny synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torchdr")

import anndata as ad
import pandas as pd
from benchmarks import bench_panel as P
from benchmarks import harness as H

import manifex as mx


def _blobs(n_classes: int, per_class: int = 100):
    """``n_classes`` well-separated Gaussian clusters in 10 dimensions, as an AnnData."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=10.0, size=(n_classes, 10))
    y = np.repeat(np.arange(n_classes), per_class)
    n = y.size
    x = (centers[y] + rng.normal(size=(n, 10))).astype(np.float32)
    a = ad.AnnData(
        x, obs=pd.DataFrame({"label": pd.Categorical(y.astype(str))}, index=[f"c{i}" for i in range(n)])
    )
    a.obsm["X_pca"] = x
    return a, x, y


@pytest.fixture(scope="module")
def clusters():
    """300 points in three well-separated Gaussian clusters in 10 dimensions, as an AnnData."""
    return _blobs(3)


@pytest.mark.parametrize("fn", [H.torchdr_umap_baseline, H.torchdr_infotsne_baseline])
def test_torchdr_baseline_maps_clusters_apart(clusters, fn):
    _, x, y = clusters
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    emb, sec = fn(x.astype(np.float64), random_state=0, max_iter=100)
    assert emb.shape == (300, 2) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert sec > 0
    # the clusters are 10+ sd apart: a 2-d map that keeps them apart has each point's nearest
    # neighbour in its own cluster
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.95
    # TorchDR seeds the global generators when constructed: the harness restores them
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    again, _ = fn(x, random_state=0, max_iter=100)
    np.testing.assert_allclose(again, emb, atol=1e-4)


def test_opentsne_baseline_maps_clusters_apart(clusters):
    _, x, y = clusters
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    kw = {"n_iter": 100, "early_exaggeration_iter": 50}
    emb, sec = H.opentsne_baseline(x, random_state=0, n_jobs=1, **kw)
    assert emb.shape == (300, 2) and emb.dtype == np.float64 and type(emb) is np.ndarray
    assert np.isfinite(emb).all() and sec > 0
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.95
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    again, _ = H.opentsne_baseline(x.astype(np.float64), random_state=0, n_jobs=1, **kw)
    np.testing.assert_array_equal(again, emb)  # seeded
    other, _ = H.opentsne_baseline(x, random_state=1, n_jobs=1, **kw)
    assert not np.array_equal(other, emb)
    with pytest.raises(TypeError, match="random_state"):
        H.opentsne_baseline(x, random_state=None)
    with pytest.raises(ValueError, match="random_state"):
        H.opentsne_baseline(x, random_state=-1)
    with pytest.raises(ValueError, match="2-d"):
        H.opentsne_baseline(x[0], random_state=0)


def test_torchdr_baseline_refuses_bad_seed(clusters):
    _, x, _ = clusters
    with pytest.raises(ValueError, match="random_state"):
        H.torchdr_umap_baseline(x, random_state=-1)
    with pytest.raises(TypeError, match="random_state"):
        H.torchdr_umap_baseline(x, random_state=None)
    with pytest.raises(ValueError, match="2-d"):
        H.torchdr_umap_baseline(x[0], random_state=0)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("dlme", {"n_steps": 30}),
        ("torchdr_umap", {"max_iter": 50}),
        ("torchdr_infotsne", {"max_iter": 50}),
        ("opentsne", {"n_iter": 50, "early_exaggeration_iter": 50}),
        ("pca", {}),
    ],
)
def test_panel_row(clusters, method, kwargs):
    a = clusters[0]
    before = a.copy()
    row = P.panel_row("blobs", method, a, 0, method_kwargs=kwargs)
    assert row["dataset"] == "blobs" and row["method"] == P.METHODS[method][0] and row["seed"] == 0
    six = ["knn_acc", "linear_acc", "acc", "nmi", "ari", "trust"]
    assert all(0.0 <= row[k] <= 1.0 for k in six)
    assert row["mean6"] == pytest.approx(np.mean([row[k] for k in six]))
    assert list(row) == ["dataset", "method", "seed", *six, "mean6", "cpd", "knc", "seconds"]
    assert -1.0 <= row["cpd"] <= 1.0
    assert np.isnan(row["knc"])  # three classes have no three nearest classes to compare
    assert row["seconds"] > 0
    # the panel's data is not changed by a method (each gets its own copy)
    assert list(a.obsm) == list(before.obsm) and list(a.obs.columns) == list(before.obs.columns)
    if method == "pca":  # the first two PCs of well-separated clusters separate them
        assert row["knn_acc"] > 0.95


def test_panel_row_global_scores_are_the_metrics(tmp_path):
    """With five classes KNC is defined; both global scores are mx.metrics' on the map and the PCs,
    and they reach the table beside the six scores, outside mean6."""
    a, x, y = _blobs(5, per_class=60)
    row = P.panel_row("blobs5", "pca", a, 0)
    emb, _ = H.pca_baseline(x, random_state=0)
    assert row["cpd"] == mx.metrics.cpd(emb, x, random_state=0)
    assert row["knc"] == mx.metrics.knc(emb, x, y.astype(str), n_neighbors=3)
    assert 0.0 <= row["knc"] <= 1.0
    table = H.write_markdown([row, {**row, "seed": 1}], tmp_path / "panel.md", title="t")
    cols = list(table.columns)
    assert cols.index("mean6") < cols.index("cpd") < cols.index("knc") < cols.index("seconds")
    assert table.loc[0, "knc"] == f"{row['knc']:.3f} ± 0.000"
    assert "| cpd " in (tmp_path / "panel.md").read_text()


def test_panel_row_refuses_unknown_method(clusters):
    with pytest.raises(ValueError, match="method must be one of"):
        P.panel_row("blobs", "tsne", clusters[0], 0)
