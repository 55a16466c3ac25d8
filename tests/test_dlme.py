import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData
from conftest import snapshot

import manifex as mx
from manifex.models import DLME, NotFittedError, load_model
from manifex.train._data import principal_components

FAST = {"n_steps": 30, "progress": False, "device": "cpu"}


def test_model_shapes_history_and_budget(blobs):
    x, _ = blobs
    m = DLME(**FAST)
    y = m.fit_transform(x)
    assert y.shape == (240, 2) and np.isfinite(y).all()
    assert m.history_["n_steps"] == 30
    assert m.transform(x, space="latent").shape == (240, 80)
    assert m.transform(x, space="latent", block=0).shape == (240, 500)
    # default budget scales with n and stays within bounds
    d = DLME()
    assert d.n_steps_for(2638) > d.n_steps_for(100_000) / 100
    assert d.n_steps_for(1_000_000) == 10 * (1_000_000 // 300)
    assert DLME(preset="paper").n_steps_for(3000) == 1500 * 10
    # 80 passes over small data (pbmc3k: 8 batches of 300 per pass), 10 passes from 100,000 on
    assert d.n_steps_for(2638) == 80 * 8
    assert d.n_steps_for(100_000) == 10 * 333
    assert d.n_steps_for(500) == 300


@pytest.mark.parametrize(
    ("kwargs", "schedule"),
    [({}, "cosine"), ({"preset": "paper"}, "step"), ({"preset": "paper", "lr_schedule": "cosine"}, "cosine")],
)
def test_lr_schedule(blobs, kwargs, schedule):
    x, _ = blobs
    m = DLME(**{**FAST, "n_steps": 60}, batch_size=40, **kwargs)
    assert m.effective_lr_schedule == schedule
    m.fit(x)
    lr = np.asarray(m.history_["lr"]) / 1e-3  # last step's multiplier of each epoch (6 steps per epoch)
    steps = np.arange(1, 11) * 6 - 1
    if schedule == "step":  # halved every 6 of the 60 steps: 2^-(step // 6)
        np.testing.assert_allclose(lr, 0.5 ** (steps // 6))
    else:
        np.testing.assert_allclose(lr, 0.5 * (1 + np.cos(np.pi * steps / 60)))


def test_lr_schedule_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        DLME(lr_schedule="linear").fit(np.zeros((50, 3), dtype="float32"))


def test_separates_blobs(blobs):
    x, y = blobs
    emb = DLME(n_steps=150, progress=False, device="cpu").fit_transform(x)
    assert mx.metrics.knn_accuracy(emb, y) > 0.95


def test_same_seed_same_result_and_different_seed_differs(blobs):
    x, _ = blobs
    a = DLME(random_state=1, **FAST).fit_transform(x)
    b = DLME(random_state=1, **FAST).fit_transform(x)
    c = DLME(random_state=2, **FAST).fit_transform(x)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_sparse_input_matches_dense(blobs):
    x, _ = blobs
    xs = np.where(np.abs(x) > 1, x, 0).astype(np.float32)
    a = DLME(**FAST).fit_transform(xs)
    b = DLME(**FAST).fit_transform(sp.csr_matrix(xs))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_save_load_transform_roundtrip(tmp_path, blobs):
    x, _ = blobs
    names = [f"g{i}" for i in range(x.shape[1])]
    m = DLME(**FAST).fit(x, feature_names=names)
    path = tmp_path / "dlme.mx"
    m.save(path)
    with pytest.raises(FileExistsError):
        m.save(path)
    m2 = load_model(path, device="cpu")
    assert isinstance(m2, DLME)
    np.testing.assert_array_equal(m2.transform(x), m.transform(x))
    np.testing.assert_array_equal(m.transform(x), m.embedding_)


def test_query_gene_alignment(blobs):
    x, _ = blobs
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    m = DLME(**FAST).fit(x, feature_names=names)
    perm = np.random.default_rng(0).permutation(x.shape[1])
    np.testing.assert_array_equal(m.transform(x[:, perm], feature_names=names[perm]), m.embedding_)
    # extra genes in the query are ignored
    extra = np.hstack([x, np.ones((x.shape[0], 1), np.float32)])
    np.testing.assert_array_equal(m.transform(extra, feature_names=[*names, "zz"]), m.embedding_)
    with pytest.raises(KeyError, match="lacks 1"):
        m.transform(x[:, 1:], feature_names=names[1:])
    with pytest.raises(ValueError, match="features"):
        m.transform(x[:, 1:])
    with pytest.raises(TypeError, match="numbers"):
        m.transform(x.astype(str))


def test_unfitted_model():
    with pytest.raises(NotFittedError):
        DLME().transform(np.zeros((5, 3)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_components": 0}, "n_components"),
        ({"batch_size": 1}, "batch_size"),
        ({"preset": "x"}, "preset"),
        ({"nu_y": 0}, "nu_y"),
        ({"exaggeration": 0.0}, "exaggeration"),
        ({"exaggeration_start": 1.0}, "exaggeration_start"),
        ({"exaggeration_start": 0.5, "early_stopping": True}, "early_stopping"),
        ({"n_steps": 0}, "n_steps"),
        ({"n_steps": 2.5}, "n_steps"),
        ({"n_epochs": 2.0}, "n_epochs"),
        ({"n_neighbors": 1.5}, "n_neighbors"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"knn_method": "annoy"}, "knn_method"),
    ],
)
def test_bad_params(blobs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DLME(**kwargs).fit(blobs[0])


def test_exaggeration_makes_clusters_more_compact():
    # the attraction weight works as t-SNE's exaggeration: the same clusters, tighter
    from sklearn.datasets import make_blobs
    from sklearn.metrics import silhouette_score

    x, labels = make_blobs(600, n_features=20, centers=4, cluster_std=2.0, random_state=0)
    x = x.astype(np.float32)
    sil = {}
    for alpha in (1.0, 4.0):
        emb = DLME(
            n_steps=300, exaggeration=alpha, exaggeration_start=0.0, progress=False, device="cpu"
        ).fit_transform(x)
        assert mx.metrics.knn_accuracy(emb, labels) > 0.99
        sil[alpha] = silhouette_score(emb, labels)
    assert sil[4.0] > sil[1.0] + 0.03


def test_late_exaggeration_switches_at_its_step():
    """Before ``exaggeration_start`` the run is the paper's loss step for step (the same epoch
    losses as a run without exaggeration); after it the loss is the exaggerated one."""
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(600, n_features=20, centers=4, cluster_std=2.0, random_state=0)
    x = x.astype(np.float32)  # 600 cells, batch 300: 2 steps per epoch, 40 epochs
    kw = {"n_steps": 80, "progress": False, "device": "cpu"}
    base = DLME(exaggeration=1.0, **kw).fit(x).history_["loss"]
    late = DLME(exaggeration=4.0, exaggeration_start=0.5, **kw).fit(x).history_["loss"]
    full = DLME(exaggeration=4.0, exaggeration_start=0.0, **kw).fit(x).history_["loss"]
    np.testing.assert_allclose(late[:20], base[:20], rtol=1e-6)
    assert not np.allclose(late[20:], base[20:], rtol=1e-3)
    assert not np.allclose(full[:20], base[:20], rtol=1e-3)
    # the switch to a weight of 4 on the attraction raises the loss at once
    assert late[20] > 1.2 * late[19]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, (4.0, 0.75)),  # the default: late exaggeration, measured on the panel
        ({"preset": "fast"}, (4.0, 0.75)),
        ({"preset": "paper"}, (1.0, 0.0)),  # the paper's loss
        ({"exaggeration": 2.0}, (2.0, 0.75)),
        ({"exaggeration_start": 0.0}, (4.0, 0.0)),
        ({"early_stopping": True}, (1.0, 0.0)),  # the loss must not change while checked
        ({"early_stopping": True, "exaggeration": 2.0}, (2.0, 0.0)),
    ],
)
def test_effective_exaggeration(kwargs, expected):
    assert DLME(**kwargs).effective_exaggeration == expected


# --------------------------------------------------------------------------------- tl.dlme
def test_tl_dlme_writes_results(adata, tmp_path):
    model = mx.tl.dlme(adata, n_steps=20, progress=False, return_model=True)
    assert adata.obsm["X_dlme"].shape == (700, 2)
    u = adata.uns["dlme"]
    assert u["input"]["key"] == "X_pca" and u["n_steps"] == 20 and u["device"] == "cpu"
    assert len(u["loss"]) >= 1
    np.testing.assert_array_equal(model.embedding_, adata.obsm["X_dlme"])
    adata.write_h5ad(tmp_path / "a.h5ad")  # uns holds only storable types
    sc.pl.embedding(adata, basis="dlme", color="bulk_labels", show=False)
    mx.pl.dlme(adata, color="bulk_labels", show=False)
    mx.pl.loss_curve(adata, "dlme", show=False)


def test_tl_dlme_copy_key_added_and_use_rep(adata):
    out = mx.tl.dlme(adata, use_rep="X_umap", key_added="d2", n_steps=10, progress=False, copy=True)
    assert "X_d2" in out.obsm and "d2" in out.uns and "X_d2" not in adata.obsm
    assert out.uns["d2"]["input"]["key"] == "X_umap"


def test_tl_dlme_without_pca_computes_one(adata):
    del adata.obsm["X_pca"]
    mx.tl.dlme(adata, n_steps=10, progress=False)
    assert adata.uns["dlme"]["input"]["source"] == "pca"
    assert "X_pca" not in adata.obsm  # computed internally, not written


def test_tl_dlme_sparse_layer(adata):
    adata.layers["sp"] = sp.csr_matrix(np.abs(adata.X))
    mx.tl.dlme(adata, layer="sp", n_steps=10, progress=False)
    assert adata.uns["dlme"]["input"]["source"] == "layer"


def _bad_cases():
    rng = np.random.default_rng(0)
    good = AnnData(rng.normal(size=(60, 10)).astype(np.float32))
    nan = good.copy()
    nan.X[3, 4] = np.nan
    inf_rep = good.copy()
    inf_rep.obsm["X_pca"] = rng.normal(size=(60, 5))
    inf_rep.obsm["X_pca"][0, 0] = np.inf
    tiny = good[:10].copy()
    empty = AnnData(np.zeros((0, 10), dtype=np.float32))
    text = good.copy()
    text.obsm["txt"] = np.full((60, 2), "a")
    oned = good.copy()
    oned.obsm["v"] = np.arange(60.0)  # anndata stores a 1-d array as one column
    return [
        (nan, {}, ValueError, "NaN"),
        (inf_rep, {}, ValueError, "NaN or infinite"),
        (tiny, {}, ValueError, "at least"),
        (empty, {}, ValueError, "empty"),
        (good, {"use_rep": "X_nope"}, KeyError, "X_nope"),
        (good, {"layer": "nope"}, KeyError, "nope"),
        (good, {"use_rep": "X_pca", "layer": "x"}, ValueError, "either"),
        (text, {"use_rep": "txt"}, TypeError, "numbers"),
        (oned, {"use_rep": "v"}, ValueError, "2-dimensional"),
        (good, {"n_neighbors": 0}, ValueError, "n_neighbors"),
        (good, {"key_added": ""}, ValueError, "key_added"),
    ]


@pytest.mark.parametrize(("ad", "kwargs", "exc", "match"), _bad_cases())
def test_tl_dlme_bad_input_leaves_adata_unchanged(ad, kwargs, exc, match):
    before = snapshot(ad) if ad.n_obs else None
    with pytest.raises(exc, match=match):
        mx.tl.dlme(ad, n_steps=5, progress=False, **kwargs)
    if before is not None:
        assert snapshot(ad) == before
        assert "X_dlme" not in ad.obsm and "dlme" not in ad.uns


def test_tl_dlme_rejects_non_anndata():
    with pytest.raises(TypeError, match="AnnData"):
        mx.tl.dlme(np.zeros((50, 3)))


def test_dataframe_rep_is_accepted(adata):
    adata.obsm["df"] = pd.DataFrame(adata.obsm["X_pca"][:, :5], index=adata.obs_names)
    mx.tl.dlme(adata, use_rep="df", n_steps=5, progress=False)
    assert adata.obsm["X_dlme"].shape == (700, 2)


# ---- init="pca": a warm-up stage fits the output to the leading principal components ---------
def _elongated(n: int = 300, d: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A cloud stretched along one random direction (a clear PC1) and the PCs computed by SVD."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.r_[10.0, 3.0, np.ones(d - 2)]
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (x @ q).astype(np.float32)
    return x, _svd_pcs(x)


def _svd_pcs(x: np.ndarray) -> np.ndarray:
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return u[:, :2] * s[:2]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init": "spectral"}, "init"),
        ({"init": None}, "init"),
        ({"init": "pca", "init_scale": 0.0}, "init_scale"),
        ({"init": "pca", "init_steps": 0}, "init_steps"),
        ({"init": "pca", "init_anchor": -1.0}, "init_anchor"),
        ({"init_anchor": 1.0}, "init='pca'"),
    ],
)
def test_bad_init_params(blobs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DLME(**kwargs).fit(blobs[0])


@pytest.mark.parametrize("sparse", [False, True])
def test_pca_init_warm_up_fits_the_principal_components(sparse):
    x, pcs = _elongated()
    # one DLME step after the warm-up: the map is the warm-up's
    m = DLME(
        init="pca", init_steps=300, init_scale=2.0, n_steps=1, batch_size=100, progress=False, device="cpu"
    )
    m.fit(sp.csr_matrix(x) if sparse else x)
    y = m.embedding_
    for j in range(2):
        assert abs(_spearman(y[:, j], pcs[:, j])) > 0.9
    # scaled so that PC1 has std init_scale, PC2 keeps its ratio to it
    assert 1.5 < y[:, 0].std() < 2.5
    ratio = pcs[:, 1].std() / pcs[:, 0].std()
    assert abs(y[:, 1].std() / y[:, 0].std() - ratio) < 0.1
    # without the warm-up, the same budget leaves a map unrelated to PC1
    r = DLME(n_steps=1, batch_size=100, progress=False, device="cpu").fit(x).embedding_
    assert abs(_spearman(r[:, 0], pcs[:, 0])) < 0.9


def test_pca_init_history_records_the_warm_up():
    x, _ = _elongated()
    m = DLME(init="pca", init_steps=25, n_steps=40, batch_size=100, progress=False, device="cpu").fit(x)
    h = m.history_
    assert h["init"]["n_steps"] == 25 and h["train"]["n_steps"] == 40
    assert h["n_steps"] == 65 and len(h["loss"]) == len(h["init"]["loss"]) + len(h["train"]["loss"])
    assert {"init_s", "init_pca_s", "train_s"} <= set(m.timings_)
    # the default warm-up: a tenth of the DLME budget, at least 50 steps
    d = DLME(init="pca", n_steps=40, batch_size=100, progress=False, device="cpu").fit(x)
    assert d.history_["init"]["n_steps"] == 50


def test_default_init_is_random_and_unchanged(blobs):
    x, _ = blobs
    assert DLME().init == "random"
    a = DLME(**FAST).fit(x)
    # the warm-up parameters do nothing without init="pca"
    b = DLME(init="random", init_scale=5.0, init_steps=7, **FAST).fit(x)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert "init" not in a.history_ and "init_s" not in a.timings_


def test_pca_anchor_keeps_the_map_on_the_principal_components():
    x, pcs = _elongated()
    kw = {
        "init": "pca",
        "init_steps": 100,
        "n_steps": 300,
        "batch_size": 100,
        "progress": False,
        "device": "cpu",
    }
    free = DLME(**kw).fit(x).embedding_
    held = DLME(init_anchor=10.0, **kw).fit(x).embedding_
    assert abs(_spearman(held[:, 0], pcs[:, 0])) > 0.9
    assert abs(_spearman(held[:, 0], pcs[:, 0])) >= abs(_spearman(free[:, 0], pcs[:, 0]))


def test_pca_init_through_tl(adata):
    m = mx.tl.dlme(
        adata, init="pca", init_steps=20, n_steps=20, progress=False, device="cpu", return_model=True
    )
    assert m.init == "pca" and m.history_["init"]["n_steps"] == 20


@pytest.mark.parametrize("d", [10, 60])  # 60 features: the PCs of the kNN graph's incremental PCA
def test_pca_init_on_a_backed_matrix(tmp_path, d):
    x, pcs = _elongated(d=d)
    a = AnnData(X=sp.csr_matrix(x))
    a.write_h5ad(tmp_path / "a.h5ad")
    b = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    m = DLME(
        init="pca", init_steps=300, init_scale=2.0, n_steps=1, batch_size=100, progress=False, device="cpu"
    ).fit(b.X)
    for j in range(2):
        assert abs(_spearman(m.embedding_[:, j], pcs[:, j])) > 0.9


@pytest.mark.parametrize("sparse", [False, True])
def test_principal_components_match_an_svd(sparse):
    x, _ = _elongated()
    scale = np.linspace(0.5, 2.0, x.shape[1]).astype(np.float32)
    ref = _svd_pcs(x * scale)
    got = principal_components(sp.csr_matrix(x) if sparse else x, 2, scale=scale, random_state=0)
    np.testing.assert_allclose(np.abs(got), np.abs(ref), rtol=1e-3, atol=1e-3)
    assert principal_components(x, 5).shape == (300, 5) and principal_components(x[:, :3], 5).shape == (
        300,
        3,
    )


def test_pca_init_checkpoint_and_save_load(tmp_path):
    x, _ = _elongated()
    kw = {
        "init": "pca",
        "init_steps": 9,
        "n_steps": 20,
        "batch_size": 100,
        "progress": False,
        "device": "cpu",
    }
    ref = DLME(**kw).fit(x)
    ck = {"checkpoint": tmp_path / "ck.mx", "checkpoint_every": 1}
    a = DLME(**kw, **ck).fit(x)
    b = DLME(**kw, **ck).fit(x)  # both stages finished in the file: nothing is trained again
    np.testing.assert_array_equal(a.embedding_, ref.embedding_)
    np.testing.assert_array_equal(b.embedding_, ref.embedding_)
    assert b.history_["init"]["n_steps"] == 9 and b.history_["train"]["n_steps"] == 20
    ref.save(tmp_path / "m.mx")
    m = load_model(tmp_path / "m.mx")
    assert m.init == "pca" and m.history_["init"]["n_steps"] == 9
    np.testing.assert_allclose(m.transform(x), ref.transform(x), rtol=1e-5, atol=1e-6)
