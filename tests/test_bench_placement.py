"""The placement benchmark's pure steps on tiny generated data: split, projection, scores, table."""

from __future__ import annotations

import inspect

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from benchmarks import bench_placement as P
from benchmarks import harness as H
from scipy.spatial.distance import pdist
from sklearn.decomposition import PCA

import manifex as mx


@pytest.fixture(scope="module")
def counts():
    """240 cells × 300 genes of negative-binomial counts in three groups (each with its own
    up-regulated genes), with labels and a gene never expressed."""
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], [120, 80, 40])
    mu = np.full((3, 300), 2.0)
    for g in range(3):
        mu[g, g * 40 : (g + 1) * 40] = 12.0
    x = rng.negative_binomial(3, 3 / (3 + mu[pd.factorize(y, sort=True)[0]])).astype(np.float32)
    x[:, -1] = 0
    obs = pd.DataFrame({"label": pd.Categorical(y)}, index=[f"c{i}" for i in range(y.size)])
    return ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(300)]))


def test_stratified_halves():
    y = np.array(["a"] * 7 + ["b"] * 4 + ["c"])
    ref = P.stratified_halves(y, 0)
    assert ref.dtype == bool and ref.shape == y.shape
    # per class half (rounded down) in the reference; a single-cell class stays in the reference
    assert ref[y == "a"].sum() == 3 and ref[y == "b"].sum() == 2 and ref[y == "c"].sum() == 1
    np.testing.assert_array_equal(P.stratified_halves(y, 0), ref)
    assert any(not np.array_equal(P.stratified_halves(y, s), ref) for s in range(1, 5))
    with pytest.raises(ValueError, match="1-d"):
        P.stratified_halves(np.zeros((2, 2)), 0)


def _by_hand(x: np.ndarray, genes: np.ndarray, mean=None, std=None):
    """normalize_total (1e4) + log1p + the given genes + scaling, in plain numpy."""
    x = np.log1p(x / x.sum(1, keepdims=True) * 1e4)[:, genes]
    if mean is None:
        mean, std = x.mean(0), x.std(0, ddof=1)
    return np.clip((x - mean) / std, -10, 10), mean, std


def test_query_projection_is_the_reference_pca_of_the_query(counts):
    split = P.split_set(counts, "toy", 3, images=False)
    mask = P.stratified_halves(counts.obs["label"], 3)
    assert split.xr.shape == (mask.sum(), 50) and split.xq.shape == ((~mask).sum(), 50)
    np.testing.assert_array_equal(split.yq, counts.obs["label"].astype(str).to_numpy()[~mask])
    assert "g299" not in split.ref.var_names  # never expressed in the reference: filtered out
    # the reference through the projection gives its own PCs back
    np.testing.assert_allclose(P.project_query(split.ref.X, split.ref), split.xr, atol=2e-4)
    # the query, preprocessed independently with the reference's genes, means and sds, through
    # a PCA fitted on the identically preprocessed reference: the same coordinates
    genes = counts.var_names.get_indexer(split.ref.var_names)
    xr, mean, std = _by_hand(counts.X[mask].astype(np.float64), genes)
    xq, _, _ = _by_hand(counts.X[~mask].astype(np.float64), genes, mean, std)
    np.testing.assert_allclose(split.query.X, xq, atol=1e-4)
    np.testing.assert_allclose(split.ref.X, xr, atol=1e-4)
    want = PCA(50, svd_solver="full").fit(xr).transform(xq)
    # the signal's components one by one (a component's sign is arbitrary); the noise components
    # come in near-degenerate pairs that a float32 PCA may rotate within their plane, so all 50
    # together by the query's pairwise distances (the same 50-d subspace) ...
    sign = np.sign((want * split.xq).sum(0))
    np.testing.assert_allclose(split.xq[:, :3], (want * sign)[:, :3], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(pdist(split.xq), pdist(want), rtol=1e-3, atol=1e-3)
    # ... centred on the reference: each cell's distance from the reference's centre
    np.testing.assert_allclose(np.linalg.norm(split.xq, axis=1), np.linalg.norm(want, axis=1), rtol=1e-3)
    # the query mx.tl.embed reads: log-normalised, the reference's genes, not scaled
    np.testing.assert_allclose(
        split.query_genes.X,
        np.log1p(counts.X[~mask] / counts.X[~mask].sum(1, keepdims=True) * 1e4)[:, genes],
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="like the reference"):
        P.project_query(np.zeros((2, 3)), split.ref)


def test_image_split_has_no_gene_preprocessing():
    rng = np.random.default_rng(1)
    imgs = rng.random((80, 8, 8)).astype(np.float32)
    a = mx.datasets.image_anndata(imgs, np.repeat(np.arange(4), 20))
    split = P.split_set(a, "toy", 0, images=True)
    mask = P.stratified_halves(a.obs["label"], 0)
    x = imgs.reshape(80, -1).astype(np.float64)
    np.testing.assert_allclose(split.query.X, x[~mask], atol=1e-6)
    np.testing.assert_allclose(split.ref.X, x[mask], atol=1e-6)
    want = PCA(split.xr.shape[1], svd_solver="full").fit(x[mask]).transform(x[~mask])
    np.testing.assert_allclose(pdist(split.xq), pdist(want), rtol=1e-3, atol=1e-3)
    # ... centred on the reference: each cell's distance from the reference's centre
    np.testing.assert_allclose(np.linalg.norm(split.xq, axis=1), np.linalg.norm(want, axis=1), rtol=1e-3)


def test_placement_accuracy_by_hand():
    ref = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], float)
    yr = ["a", "a", "a", "b", "b", "b"]
    # nearest 3: all "a" -> right; all "b" -> wrong ("a" is its label); all "b" -> right;
    # (4, 4): 3 of "a" (distances 5.0, 5.0, 5.7) against "b" at 8.5 -> "a", right
    q = np.array([[0.5, 0.5], [10.5, 10.5], [9, 9], [4, 4]])
    yq = ["a", "a", "b", "a"]
    assert P.placement_accuracy(ref, yr, q, yq, k=3) == pytest.approx(3 / 4)
    assert P.placement_accuracy(ref, yr, ref, yr, k=3) == 1.0
    with pytest.raises(ValueError, match="one label per row"):
        P.placement_accuracy(ref, yr[:-1], q, yq)


def test_transform_kwargs_hook():
    class WithPlacement:
        def transform(self, X, placement=None):
            return X

    assert P.transform_kwargs(mx.models.DLME(), None) == {}
    assert P.transform_kwargs(WithPlacement(), "nearest") == {"placement": "nearest"}
    if "placement" not in inspect.signature(mx.models.DLME.transform).parameters:
        with pytest.raises(TypeError, match="no `placement` option"):
            P.transform_kwargs(mx.models.DLME(), "nearest")


def test_table_bolds_the_best_route_per_set():
    rows = [
        {
            "dataset": d,
            "route": r,
            "seed": s,
            "place_acc": acc + 0.01 * s,
            "place_trust": tr,
            **dict.fromkeys([*P.TRAIN_SCORES, "mean6", "fit_s", "place_s"], 0.5),
        }
        for d, r, acc, tr in [
            ("x", "A", 0.8, 0.7),
            ("x", "B", 0.9, 0.6),
            ("y", "A", 0.5, 0.9),
            ("y", "B", 0.4, 0.8),
        ]
        for s in (0, 1)
    ]
    t = P.table(rows).set_index(["dataset"])
    assert list(t.loc["x", "route"]) == ["A", "**B**"] and list(t.loc["y", "route"]) == ["**A**", "B"]
    assert t.loc["x", "place_acc"].iloc[1] == "**0.905 ± 0.007**"
    assert t.loc["x", "place_trust"].iloc[0].startswith("**0.700")
    assert not t.loc["x", "place_trust"].iloc[1].startswith("**")
    assert (t["n_seeds"] == 2).all()


def test_dlme_routes_agree_and_rows_are_scored(counts):
    """model.transform of the harness's projection and mx.tl.embed of the genes (manifex's own
    projection and scaling) place the query at the same positions; every score is in [0, 1]."""
    split = P.split_set(counts, "toy", 0, images=False)
    ctx = P.Context(0, budgets={"dlme": {"n_steps": 20}})
    rows = [P.placement_row(split, r, ctx) for r in ("dlme", "dlme_embed")]
    model, ref = ctx.cache["dlme"][:2]
    a = model.transform(split.xq)
    b = mx.tl.embed(split.query_genes, model, reference=ref, scale_query=True, max_value=10, copy=True).obsm[
        "X_dlme"
    ]
    np.testing.assert_allclose(a, b, atol=1e-3)
    for row in rows:
        assert row["dataset"] == "toy" and row["seed"] == 0
        assert all(0.0 <= row[k] <= 1.0 for k in ["place_acc", "place_trust", *P.TRAIN_SCORES])
        assert row["fit_s"] > 0 and row["place_s"] > 0
    assert rows[0]["place_acc"] == pytest.approx(rows[1]["place_acc"], abs=0.02)
    with pytest.raises(ValueError, match="route must be one of"):
        P.placement_row(split, "tsne", ctx)


def test_knn_graph_is_the_symmetric_exact_graph():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    g = P.knn_graph(x, k=5).toarray()
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    want = np.zeros((60, 60))
    want[np.repeat(np.arange(60), 5), np.argsort(d, axis=1)[:, :5].ravel()] = 1
    np.testing.assert_array_equal(g, np.maximum(want, want.T))


def test_cne_route_repeats_with_a_seed(counts):
    pytest.importorskip("cne")
    split = P.split_set(counts, "toy", 0, images=False)
    ctx = P.Context(0, budgets={"cne": {"n_epochs": 2}})
    a, b = P.route_cne(split, ctx), P.route_cne(split, ctx)
    np.testing.assert_array_equal(a.query_emb, b.query_emb)
    assert a.train_emb.shape == (split.xr.shape[0], 2) and a.query_emb.shape == (split.xq.shape[0], 2)


def test_smoke_set_loads_when_the_shared_data_is_there():
    if "pbmc3k" not in mx.datasets.available(H.data_dir()):
        pytest.skip("pbmc3k is not in the shared data directory")
    a, images = P.load_set("pbmc3k", max_cells=200)
    assert not images and a.n_obs == 200 and "label" in a.obs
