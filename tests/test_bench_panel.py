"""The panel's peers (TorchDR's UMAP / InfoTSNE) and its per-row function on tiny synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torchdr")

import anndata as ad
import pandas as pd
from benchmarks import bench_panel as P
from benchmarks import harness as H


@pytest.fixture(scope="module")
def clusters():
    """300 points in three well-separated Gaussian clusters in 10 dimensions, as an AnnData."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=10.0, size=(3, 10))
    y = np.repeat(np.arange(3), 100)
    x = (centers[y] + rng.normal(size=(300, 10))).astype(np.float32)
    a = ad.AnnData(
        x, obs=pd.DataFrame({"label": pd.Categorical(y.astype(str))}, index=[f"c{i}" for i in range(300)])
    )
    a.obsm["X_pca"] = x
    return a, x, y


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
    assert row["seconds"] > 0
    # the panel's data is not changed by a method (each gets its own copy)
    assert list(a.obsm) == list(before.obsm) and list(a.obs.columns) == list(before.obs.columns)
    if method == "pca":  # the first two PCs of well-separated clusters separate them
        assert row["knn_acc"] > 0.95


def test_panel_row_refuses_unknown_method(clusters):
    with pytest.raises(ValueError, match="method must be one of"):
        P.panel_row("blobs", "tsne", clusters[0], 0)
