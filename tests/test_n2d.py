"""N2D: model, tl.n2d and pl.n2d on small synthetic data (CPU, a few seconds of training)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

import manifex as mx

FAST = {"hidden_dims": (64, 64, 128), "device": "cpu", "progress": False}


def blobs(n_per: int = 100, k: int = 4, d: int = 20, seed: int = 0) -> ad.AnnData:
    """``k`` Gaussian blobs whose centres are 8 standard deviations apart in every direction."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 8
    y = np.repeat(np.arange(k), n_per)
    x = (centres[y] + rng.normal(size=(k * n_per, d))).astype(np.float32)
    a = ad.AnnData(
        x, obs=pd.DataFrame({"label": pd.Categorical(y.astype(str))}, index=[f"c{i}" for i in range(len(y))])
    )
    a.var_names = [f"g{i}" for i in range(d)]
    return a


@pytest.fixture(scope="module")
def fitted():
    adata = blobs()
    model = mx.tl.n2d(
        adata, n_clusters=4, use_rep="X", n_steps=200, random_state=0, return_model=True, **FAST
    )
    return adata, model


def test_recovers_separated_blobs(fitted):
    adata, _ = fitted
    ari = adjusted_rand_score(adata.obs["label"], adata.obs["n2d"])
    assert ari >= 0.95
    # the autoencoder learned something: its loss fell by a large factor
    loss = adata.uns["n2d"]["loss"]
    assert loss[-1] < 0.5 * loss[0]


def test_outputs_shapes_keys_and_dtypes(fitted):
    adata, _ = fitted
    n = adata.n_obs
    assert isinstance(adata.obs["n2d"].dtype, pd.CategoricalDtype)
    assert adata.obs["n2d"].cat.categories.tolist() == ["0", "1", "2", "3"]
    assert adata.obsm["X_n2d"].shape == (n, 2)
    assert adata.obsm["X_n2d_code"].shape == (n, 4)
    assert adata.obsm["X_n2d_manifold"].shape == (n, 4)
    proba = adata.obsm["X_n2d_proba"]
    assert proba.shape == (n, 4)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(proba.argmax(1).astype(str), adata.obs["n2d"].to_numpy())
    np.testing.assert_allclose(adata.obs["n2d_probability"], proba.max(1), rtol=1e-6)
    uns = adata.uns["n2d"]
    assert uns["n_clusters"] == 4 and uns["k_selection"] == "given"
    assert uns["params"]["n_neighbors"] == 20 and float(uns["params"]["min_dist"]) == 0.0
    assert 0 < uns["n_steps"] <= 200 and len(uns["loss"]) > 0
    assert set(uns["timings"]) == {"autoencoder", "umap", "gmm", "map_2d"}


def test_h5ad_roundtrip_and_scanpy_plotting(fitted, tmp_path):
    adata, _ = fitted
    path = tmp_path / "n2d.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.obs["n2d"].to_numpy(), adata.obs["n2d"].to_numpy())
    np.testing.assert_allclose(back.obsm["X_n2d"], adata.obsm["X_n2d"])
    assert int(back.uns["n2d"]["n_clusters"]) == 4
    ax = sc.pl.embedding(adata, basis="n2d", color="n2d", show=False)
    assert ax is not None
    assert mx.pl.n2d(adata, show=False) is not None
    ax = mx.pl.cluster_confusion(adata, labels="label", show=False)
    assert "ACC 1.000" in ax.get_title() or "ACC 0.9" in ax.get_title()


def test_matched_confusion_is_diagonal_after_relabelling():
    from manifex.metrics._quality import matched_confusion

    labels = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    clusters = np.array(["2"] * 5 + ["0"] * 3 + ["1"] * 1 + ["0"])  # one "c" cell wrongly in "0"
    table, acc = matched_confusion(labels, clusters)
    assert list(table.index) == ["2", "0", "1"] and list(table.columns) == ["a", "b", "c"]
    np.testing.assert_array_equal(np.diag(table.to_numpy()), [5, 3, 1])
    assert acc == pytest.approx(0.9)


def test_predict_save_load(fitted, tmp_path):
    adata, model = fitted
    x = adata.X
    pred = model.predict(x)
    # new cells go through the fitted network, UMAP.transform and the fitted mixture
    assert adjusted_rand_score(pred, model.labels_) >= 0.95
    proba = model.predict_proba(x[:10])
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert model.transform(x[:10], space="latent").shape == (10, 4)
    assert model.transform(x[:10], space="manifold").shape == (10, 4)
    assert model.transform(x[:10], space="embedding").shape == (10, 2)
    np.testing.assert_array_equal(model.transform(x[:10], space="input"), x[:10])
    # the old names of the spaces are gone
    for old in ("code", "map"):
        with pytest.raises(ValueError, match="'latent'"):
            model.transform(x[:10], space=old)
    # the code of the training cells is the latent space; the manifold is the UMAP of the code
    np.testing.assert_allclose(model.transform(x, space="latent"), model.code_, atol=1e-5)
    # columns are aligned by name
    perm = np.random.default_rng(0).permutation(x.shape[1])
    np.testing.assert_array_equal(model.predict(x[:, perm], feature_names=adata.var_names[perm]), pred)
    path = tmp_path / "n2d.mx"
    model.save(path)
    loaded = mx.models.N2D.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.predict(x), pred)
    assert loaded.n_clusters_ == 4
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    with pytest.raises(FileExistsError):
        model.save(path)


def test_same_seed_same_clusters_and_seed_is_used():
    x = blobs(n_per=40, k=3, d=10, seed=1).X
    kw = {"n_clusters": 3, "n_steps": 30, "map_2d": False, **FAST}
    a = mx.models.N2D(random_state=3, **kw).fit(x)
    b = mx.models.N2D(random_state=3, **kw).fit(x)
    c = mx.models.N2D(random_state=4, **kw).fit(x)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.manifold_, b.manifold_)
    np.testing.assert_array_equal(a.code_, b.code_)
    assert not np.allclose(a.code_, c.code_)


def test_choose_k_by_bic_and_sparse_layer():
    adata = blobs(n_per=50, k=3, d=12, seed=2)
    adata.layers["counts"] = sp.csr_matrix(np.clip(adata.X, 0, None))
    mx.tl.n2d(adata, layer="counts", n_clusters=None, n_latent=4, k_range=(2, 6), n_steps=100, **FAST)
    uns = adata.uns["n2d"]
    assert uns["k_selection"] == "bic"
    np.testing.assert_array_equal(uns["bic"]["k"], np.arange(2, 7))
    k = int(uns["n_clusters"])
    assert k == int(uns["bic"]["k"][np.argmin(uns["bic"]["bic"])])
    assert adata.obsm["X_n2d_proba"].shape == (adata.n_obs, k)
    assert adata.obsm["X_n2d_code"].shape == (adata.n_obs, 4)
    assert adata.obs["n2d"].cat.categories.size == k


def _snapshot(a: ad.AnnData):
    return (
        a.X.copy(),
        list(a.obs.columns),
        set(a.obsm.keys()),
        set(a.uns.keys()),
        set(a.layers.keys()),
    )


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "match"),
    [
        (lambda a: a.X.__setitem__((3, 2), np.nan), {"use_rep": "X"}, ValueError, "NaN"),
        (lambda a: None, {"n_clusters": 0}, ValueError, "n_clusters"),
        (lambda a: None, {"n_clusters": 500}, ValueError, "fewer than `n_clusters`"),
        (lambda a: None, {"use_rep": "X_nope"}, KeyError, "X_nope"),
        (lambda a: None, {"layer": "nope"}, KeyError, "nope"),
        (lambda a: None, {"preset": "huge"}, ValueError, "preset"),
        (lambda a: None, {"n_neighbors": 400}, ValueError, "n_neighbors"),
        (lambda a: None, {"key_added": ""}, ValueError, "key_added"),
        (lambda a: None, {"key_added": "run/1"}, ValueError, "key_added"),
        (lambda a: None, {"key_added": "label"}, ValueError, "label"),  # the user's annotation
        (lambda a: None, {"n_steps": 2.5}, ValueError, "n_steps"),
        (lambda a: None, {"n_latent": 0}, ValueError, "n_latent"),
        (lambda a: None, {"placement": "mean"}, ValueError, "placement"),
        (lambda a: None, {"placement": "nearest", "metric": "cosine"}, ValueError, "placement"),
        (lambda a: None, {"umap_subsample": 50}, ValueError, "umap_subsample"),
    ],
)
def test_bad_input_raises_and_leaves_adata_unchanged(make, kwargs, error, match):
    adata = blobs(n_per=30, k=3, d=5)
    make(adata)
    before = _snapshot(adata)
    kw = {"n_clusters": 3, "n_steps": 5, **FAST, **kwargs}
    with pytest.raises(error, match=match):
        mx.tl.n2d(adata, **kw)
    after = _snapshot(adata)
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1:] == after[1:]


def test_empty_adata_raises():
    with pytest.raises(ValueError, match="empty"):
        mx.tl.n2d(ad.AnnData(np.zeros((0, 5), dtype=np.float32)), n_clusters=2, **FAST)


def test_model_rejects_bad_arrays():
    with pytest.raises(ValueError, match="fewer than `n_clusters`"):
        mx.models.N2D(n_clusters=30, n_neighbors=5, **FAST).fit(np.zeros((25, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        mx.models.N2D(n_clusters=2, **FAST).fit(np.full((50, 3), np.nan, dtype=np.float32))
    with pytest.raises(mx.models.NotFittedError):
        mx.models.N2D(n_clusters=2, **FAST).predict(np.zeros((5, 3), dtype=np.float32))


def test_n_latent_sets_the_code_size_and_n_components_is_gone():
    x = blobs(n_per=40, k=3, d=10, seed=1).X
    kw = {"n_clusters": 3, "n_steps": 10, "map_2d": False, "gmm_n_init": 1, **FAST}
    m = mx.models.N2D(n_latent=5, **kw).fit(x)
    assert m.code_.shape == (120, 5) and m.manifold_.shape == (120, 5)
    assert m.transform(x[:3], space="latent").shape == (3, 5)
    # manifold_dim defaults to the code size, and can be set apart from it
    m2 = mx.models.N2D(n_latent=5, manifold_dim=2, **kw).fit(x)
    assert m2.code_.shape == (120, 5) and m2.transform(x[:3], space="manifold").shape == (3, 2)
    # without n_latent the code has n_clusters dimensions (the reference's choice)
    assert mx.models.N2D(**kw).fit(x).code_.shape == (120, 3)
    with pytest.raises(TypeError, match="n_components"):
        mx.models.N2D(n_components=5)
    with pytest.raises(TypeError, match="n_components"):
        mx.tl.n2d(blobs(n_per=40, k=3, d=10), n_components=5, **kw)


def test_wide_x_without_pca_trains_on_x_itself():
    """Images / gene matrices with > 50 features: N2D's autoencoder sees X, not an on-the-fly PCA."""
    adata = blobs(n_per=30, k=3, d=64)
    model = mx.tl.n2d(adata, n_clusters=3, n_steps=5, random_state=0, return_model=True, **FAST)
    assert adata.uns["n2d"]["input"]["source"] == "X"
    assert model.input_spec_["pca_components"] is None
    assert model.n_features_in_ == 64


def test_early_stopping_holds_out_cells_and_is_optional():
    adata = blobs(n_per=60)  # 240 cells: 24 held out
    m = mx.models.N2D(n_clusters=4, n_steps=150, map_2d=False, random_state=0, **FAST).fit(adata.X)
    h = m.history_
    assert h["n_validation"] == 24 and len(h["val_loss"]) >= 1
    assert h["best_step"] <= h["n_steps"] <= 150
    kept = h["val_loss"][list(h["val_step"]).index(h["best_step"])]
    assert kept <= min(h["val_loss"]) * (1 + 1e-3)  # the best check, up to the improvement margin
    assert m.labels_.shape == (240,)  # held-out cells are clustered too
    off = mx.models.N2D(
        n_clusters=4, n_steps=30, map_2d=False, random_state=0, early_stopping=False, **FAST
    ).fit(adata.X)
    assert off.history_["n_steps"] == 30 and "val_loss" not in off.history_
    assert off.history_["n_validation"] == 0
    small = mx.models.N2D(n_clusters=4, n_steps=30, map_2d=False, random_state=0, **FAST).fit(adata.X[:150])
    assert small.history_["n_validation"] == 0  # fewer than 200 cells: no hold-out
    with pytest.raises(ValueError, match="validation_fraction"):
        mx.models.N2D(n_clusters=4, validation_fraction=0.7).fit(adata.X)
    with pytest.raises(TypeError, match="early_stopping"):
        mx.models.N2D(n_clusters=4, early_stopping="yes").fit(adata.X)
    with pytest.raises(ValueError, match="patience"):
        mx.models.N2D(n_clusters=4, patience=0).fit(adata.X)


@pytest.mark.parametrize("placement", ["auto", "nearest", "transform"])
def test_umap_subsample_places_the_other_cells(placement):
    """UMAPs fitted on 200 of 400 cells; the other 200 placed, the mixture fitted on all 400."""
    from sklearn.neighbors import NearestNeighbors

    from manifex.models._n2d_umap import subsample_rows

    adata = blobs(n_per=100, k=4, d=10)
    kw = {"n_clusters": 4, "n_steps": 150, "random_state": 0, **FAST}
    model = mx.models.N2D(umap_subsample=200, placement=placement, **kw).fit(adata.X)
    fit_rows = subsample_rows(400, 200, 0)
    rest = np.setdiff1d(np.arange(400), fit_rows)
    assert model.manifold_.shape == (400, 4) and model.embedding_.shape == (400, 2)
    assert adjusted_rand_score(adata.obs["label"], model.labels_) >= 0.95
    assert model.umap_.embedding_.shape[0] == 200  # fitted on the subsample only
    np.testing.assert_allclose(model.manifold_[fit_rows], model.umap_.embedding_, atol=1e-6)
    if placement == "transform":
        assert "nearest_search" not in model.timings_ and model.knn_info_ is None
        moved = model.manifold_[rest]
        assert not (moved[:, None, :] == model.umap_.embedding_[None]).all(-1).any()  # optimised positions
    else:  # each other cell sits where its nearest subsample cell (in code space, by sklearn) sits
        code = model.code_
        nn = NearestNeighbors(n_neighbors=1).fit(code[fit_rows]).kneighbors(code[rest])[1][:, 0]
        np.testing.assert_array_equal(model.manifold_[rest], model.umap_.embedding_[nn])
        np.testing.assert_array_equal(model.embedding_[rest], model.umap2d_.embedding_[nn])
        assert model.timings_["nearest_search"] >= 0
        assert model.knn_info_["method"] == "exact" and model.knn_info_["n_neighbors"] == 1


@pytest.mark.parametrize("map_2d", [True, False])
def test_new_cells_are_placed_as_the_fit_placed_the_rest(map_2d, tmp_path):
    """After a subsample fit with nearest placement, transform puts a new cell at its nearest
    subsample cell (sklearn) and maps the training cells back onto their fitted positions."""
    from sklearn.neighbors import NearestNeighbors

    adata = blobs(n_per=100, k=4, d=10)
    new = blobs(n_per=20, k=4, d=10, seed=0).X + 0.05
    model = mx.models.N2D(
        n_clusters=4, n_steps=150, random_state=0, umap_subsample=200, map_2d=map_2d, **FAST
    ).fit(adata.X)
    np.testing.assert_array_equal(model.transform(adata.X, space="manifold"), model.manifold_)
    np.testing.assert_array_equal(model.transform(adata.X), model.embedding_)
    code = model.transform(new, space="latent")
    nn = NearestNeighbors(n_neighbors=1).fit(model.umap_._raw_data).kneighbors(code)[1][:, 0]
    np.testing.assert_array_equal(model.transform(new, space="manifold"), model.umap_.embedding_[nn])
    flat = model.umap2d_.embedding_ if map_2d else model.umap_.embedding_[:, :2]
    np.testing.assert_array_equal(model.transform(new), flat[nn])
    np.testing.assert_array_equal(model.predict(new), model.gmm_.predict(model.umap_.embedding_[nn]))
    model.save(tmp_path / "m.mx")
    np.testing.assert_array_equal(
        mx.models.N2D.load(tmp_path / "m.mx", device="cpu").transform(new), flat[nn]
    )


def test_fit_and_transform_keep_the_callers_torch_thread_count():
    """umap-learn resets numba's threads to all cores after a fit; where numba and torch share
    one OpenMP runtime that also reset torch's count (a caller's ``torch.set_num_threads(1)``
    was lost, and threaded code downstream summed in another order)."""
    import numba
    import torch

    if numba.config.NUMBA_DEFAULT_NUM_THREADS < 2:
        pytest.skip("one core: a reset to numba's default would not change the count")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        adata = blobs(n_per=60, k=3, d=10)
        kw = {"n_clusters": 3, "n_steps": 30, "random_state": 0, **FAST}
        model = mx.models.N2D(umap_subsample=120, placement="transform", **kw).fit(adata.X)
        assert torch.get_num_threads() == 1
        model.transform(adata.X[:50], space="embedding")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
