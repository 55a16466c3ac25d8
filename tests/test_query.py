"""Query mapping: tl.embed, tl.transfer_labels, tl.fewshot_labels, invariance / one-shot metrics, pl."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from anndata import AnnData
from conftest import snapshot

import manifex as mx
from manifex.models import NotFittedError

FIT = {"n_steps": 30, "progress": False, "device": "cpu"}


# ---- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pbmc_ref_query():
    """pbmc68k_reduced split in two; the reference gets a fresh PCA (so X reproduces X_pca)."""
    a = sc.datasets.pbmc68k_reduced()
    ref, query = a[:500].copy(), a[500:].copy()
    for k in ("PCs",):
        del ref.varm[k]
    del ref.obsm["X_pca"], query.obsm["X_pca"]
    sc.pp.pca(ref, n_comps=30, random_state=0)
    model = mx.tl.dlme(ref, return_model=True, **FIT)
    return ref, query, model


def _blobs(n_classes=5, per=60, dim=20, sep=8.0, seed=0, names=True):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=sep, size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), per)
    x = (centers[y] + rng.normal(size=(y.size, dim))).astype(np.float32)
    a = AnnData(x)
    a.var_names = [f"g{i}" for i in range(dim)] if names else a.var_names
    a.obs_names = [f"c{seed}_{i}" for i in range(y.size)]
    a.obs["label"] = pd.Categorical([f"type{i}" for i in y])
    return a


@pytest.fixture(scope="module")
def blob_model():
    """DLME trained on the genes ('X') of synthetic blobs; query blobs from the same centres."""
    a = _blobs(seed=0)
    ref = a[::2].copy()
    query = a[1::2].copy()
    model = mx.tl.dlme(ref, use_rep="X", return_model=True, n_neighbors=10, **FIT)
    return ref, query, model


# ---- embed -------------------------------------------------------------------------------------
def test_embed_projects_on_reference_pca(pbmc_ref_query):
    ref, query, model = pbmc_ref_query
    q = query.copy()
    mx.tl.embed(q, model, reference=ref)
    assert q.obsm["X_dlme"].shape == (200, 2)
    info = q.uns["dlme"]
    assert info["model"] == "DLME" and info["input"]["key"] == "X_pca" and info["n_missing_features"] == 0
    # the reference itself, re-projected from its genes, lands where training put it
    r = ref.copy()
    del r.obsm["X_pca"]
    mx.tl.embed(r, model, reference=ref)
    np.testing.assert_allclose(
        r.obsm["X_dlme"], ref.obsm["X_dlme"], atol=1e-3 * np.abs(ref.obsm["X_dlme"]).max()
    )
    # and equals model.transform of the reference's own PCA coordinates
    np.testing.assert_allclose(r.obsm["X_dlme"], model.transform(ref.obsm["X_pca"]), rtol=1e-4, atol=1e-4)


def test_embed_shuffled_gene_order_identical(pbmc_ref_query, blob_model):
    ref, query, model = pbmc_ref_query
    q1 = query.copy()
    mx.tl.embed(q1, model, reference=ref)
    perm = np.random.default_rng(1).permutation(query.n_vars)
    q2 = query[:, perm].copy()
    mx.tl.embed(q2, model, reference=ref)
    np.testing.assert_array_equal(q1.obsm["X_dlme"], q2.obsm["X_dlme"])
    # a model trained on genes directly
    _, bquery, bmodel = blob_model
    b1, b2 = bquery.copy(), bquery[:, ::-1].copy()
    mx.tl.embed(b1, bmodel)
    mx.tl.embed(b2, bmodel)
    np.testing.assert_array_equal(b1.obsm["X_dlme"], b2.obsm["X_dlme"])


def test_embed_recorded_pca_needs_no_reference(pbmc_ref_query):
    ref, query, model = pbmc_ref_query
    m = copy.copy(model)  # same networks; PCA loadings and gene means recorded in its input spec
    used = ref.var["highly_variable"].to_numpy()
    m.input_spec_ = dict(
        model.input_spec_,
        var_names=np.asarray(ref.var_names[used]),
        pca_components=np.asarray(ref.varm["PCs"][used]).T,
        pca_mean=np.asarray(ref.X[:, used]).mean(0),
    )
    q1, q2 = query.copy(), query.copy()
    mx.tl.embed(q1, model, reference=ref)
    mx.tl.embed(q2, m)
    np.testing.assert_allclose(q1.obsm["X_dlme"], q2.obsm["X_dlme"], rtol=1e-4, atol=1e-4)
    assert q2.uns["dlme"]["input"]["description"] == "query genes projected on the recorded PCA"


def test_embed_missing_genes_keyerror_and_fill(pbmc_ref_query):
    ref, query, model = pbmc_ref_query
    used = ref.var_names[ref.var["highly_variable"].to_numpy()]  # the genes the PCA used
    q = query[:, ~query.var_names.isin(used[:5])].copy()
    before = snapshot(q)
    with pytest.raises(KeyError, match=f"lacks 5 of the {len(used)} genes"):
        mx.tl.embed(q, model, reference=ref)
    assert snapshot(q) == before
    mx.tl.embed(q, model, reference=ref, fill_missing="zero")
    assert q.uns["dlme"]["n_missing_features"] == 5
    assert np.isfinite(q.obsm["X_dlme"]).all()


def test_embed_wrong_dtype_typeerror(pbmc_ref_query):
    _, query, model = pbmc_ref_query
    q = query.copy()
    q.obsm["X_pca"] = np.full((q.n_obs, 30), "a", dtype=object)
    before = snapshot(q)
    with pytest.raises(TypeError, match="must hold numbers"):
        mx.tl.embed(q, model)  # no reference: the query's own X_pca is read
    assert snapshot(q) == before
    with pytest.raises(TypeError, match="AnnData"):
        mx.tl.embed(q.X, model)
    with pytest.raises(TypeError, match="transform"):
        mx.tl.embed(q, b"not a path")


def test_embed_unfitted_model(pbmc_ref_query):
    _, query, _ = pbmc_ref_query
    q = query.copy()
    before = snapshot(q)
    with pytest.raises(NotFittedError):
        mx.tl.embed(q, mx.models.DLME())
    assert snapshot(q) == before


def test_embed_obsm_rep_must_exist(pbmc_ref_query):
    _, query, model = pbmc_ref_query
    q = query.copy()
    before = snapshot(q)
    with pytest.raises(KeyError, match="reference="):
        mx.tl.embed(q, model)
    with pytest.raises(ValueError, match="30"):
        q2 = q.copy()
        q2.obsm["X_pca"] = np.zeros((q.n_obs, 7), dtype=np.float32)
        mx.tl.embed(q2, model)
    assert snapshot(q) == before


def test_embed_mismatched_preprocessing(pbmc_ref_query):
    ref, query, model = pbmc_ref_query
    # raw-count-like query against a scaled reference
    q = query.copy()
    q.X = np.random.default_rng(0).poisson(3.0, size=q.shape).astype(np.float32) * 10
    before = snapshot(q)
    with pytest.raises(ValueError, match="raw counts"):
        mx.tl.embed(q, model, reference=ref)
    assert snapshot(q) == before
    # log data, not scaled, against a scaled reference: caught by the sign check
    q = query.copy()
    q.X = np.abs(q.X)
    with pytest.raises(ValueError, match="scale the query"):
        mx.tl.embed(q, model, reference=ref)
    with pytest.warns(UserWarning, match="does not look preprocessed"):
        mx.tl.embed(q, model, reference=ref, check_preprocessing="warn")
    assert "scale the query" in q.uns["dlme"]["preprocessing_check"]["problems"]
    # an obsm representation on another scale (feature statistics check)
    q = query.copy()
    mx.tl.embed(q, model, reference=ref)
    q.obsm["X_pca"] = np.asarray(ref.obsm["X_pca"][:200]) * 100
    with pytest.raises(ValueError, match="vary"):
        mx.tl.embed(q, model)


def test_embed_scale_query_matches_scaled_input(blob_model):
    ref, query, model = blob_model
    # reference stored as scaled data with its scaling in var; the query comes unscaled
    r = ref.copy()
    r.var["mean"], r.var["std"] = 0.0, 1.0
    q = query.copy()
    mx.tl.embed(q, model, reference=r, scale_query=True)
    q0 = query.copy()
    mx.tl.embed(q0, model)
    np.testing.assert_allclose(q.obsm["X_dlme"], q0.obsm["X_dlme"], rtol=1e-5, atol=1e-5)


def test_embed_latent_copy_and_saved_model(pbmc_ref_query, tmp_path):
    ref, query, model = pbmc_ref_query
    out = mx.tl.embed(query, model, reference=ref, space="latent", copy=True)
    assert "X_dlme_latent" not in query.obsm
    assert out.obsm["X_dlme_latent"].shape == (200, 80)
    path = tmp_path / "m.pt"
    model.save(path)
    q1, q2 = query.copy(), query.copy()
    mx.tl.embed(q1, model, reference=ref)
    mx.tl.embed(q2, path, reference=ref)
    np.testing.assert_allclose(q1.obsm["X_dlme"], q2.obsm["X_dlme"], rtol=1e-5, atol=1e-5)
    q2.write_h5ad(tmp_path / "q.h5ad")  # provenance stays writable


def test_embed_input_space(pbmc_ref_query, blob_model):
    ref, query, model = pbmc_ref_query
    # the reference re-projected from its genes: its own PCA coordinates, without the network
    r = ref.copy()
    del r.obsm["X_pca"]
    mx.tl.embed(r, model, reference=ref, space="input")
    assert r.uns["dlme_input"]["space"] == "input"
    np.testing.assert_allclose(r.obsm["X_dlme_input"], ref.obsm["X_pca"], rtol=1e-4, atol=1e-4)
    # the query: centred with the reference's gene means, on the reference's loadings
    q = query.copy()
    mx.tl.embed(q, model, reference=ref, space="input")
    used = ref.var["highly_variable"].to_numpy()
    xr = np.asarray(ref.X[:, used])
    xq = np.asarray(query[:, ref.var_names[used]].X)
    want = (xq - xr.mean(0)) @ np.asarray(ref.varm["PCs"][used])
    np.testing.assert_allclose(q.obsm["X_dlme_input"], want, rtol=1e-3, atol=1e-3)
    # a gene-level model: the query's genes in the training order, whatever the query's order
    _, bquery, bmodel = blob_model
    b = bquery[:, ::-1].copy()
    mx.tl.embed(b, bmodel, space="input")
    np.testing.assert_array_equal(b.obsm["X_dlme_input"], np.asarray(bquery.X))
    with pytest.raises(ValueError, match="space"):
        mx.tl.embed(query.copy(), model, reference=ref, space="inputs")


def test_holdout_one_shot_input_space_is_the_features():
    a = _blobs(n_classes=6, per=40, seed=3)
    y = a.obs["label"].to_numpy()
    model = mx.models.DLME(n_neighbors=5, **FIT)
    res = mx.metrics.holdout_one_shot(model, np.asarray(a.X), y, n_holdout=3, space="input", random_state=0)
    held = np.isin(y, res["held_out"])
    np.testing.assert_array_equal(res["embedding"], np.asarray(a.X)[held])
    assert res["mean"] > 0.9  # well-separated blobs: one example per class is enough in the input


# ---- label transfer ----------------------------------------------------------------------------
def test_transfer_labels_on_separated_blobs(blob_model):
    ref, query, model = blob_model
    q = query.copy()
    mx.tl.embed(q, model)
    truth = q.obs["label"].astype(str).to_numpy()
    for method in ("knn", "prototype"):
        mx.tl.transfer_labels(q, ref, label_key="label", method=method, unknown_threshold=None, key_added="f")
        assert (q.obs["f"].astype(str).to_numpy() == truth).mean() >= 0.97, method
        mx.tl.transfer_labels(q, ref, label_key="label", method=method, key_added="pred")
        pred = q.obs["pred"].astype(str).to_numpy()
        called = pred != "unknown"
        assert called.mean() >= 0.9, method  # a 0.99 quantile calls few same-distribution cells unknown
        assert (pred[called] == truth[called]).mean() >= 0.97, method
        conf = q.obs["pred_confidence"].to_numpy()
        assert ((conf >= 0) & (conf <= 1)).all() and np.median(conf) > 0.8
        assert q.uns["pred"]["method"] == method and q.uns["pred"]["basis"] == "dlme"


def _coords_adata(x, labels=None):
    a = AnnData(np.zeros((len(x), 1), dtype=np.float32))
    a.obsm["X_emb"] = np.asarray(x, dtype=np.float32)
    if labels is not None:
        a.obs["label"] = pd.Categorical(labels)
    return a


def test_removed_class_called_unknown():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], dtype=float)
    y = np.repeat(np.arange(4), 200)
    x = centers[y] + rng.normal(size=(800, 2))
    ref_mask = (np.arange(800) % 2 == 0) & (y != 3)  # class 3 removed from the reference
    q_mask = np.arange(800) % 2 == 1
    ref = _coords_adata(x[ref_mask], y[ref_mask].astype(str))
    query = _coords_adata(x[q_mask])
    truth = y[q_mask].astype(str)
    for method in ("knn", "prototype"):
        mx.tl.transfer_labels(query, ref, label_key="label", basis="emb", method=method, key_added="p")
        pred = query.obs["p"].astype(str).to_numpy()
        novel = truth == "3"
        assert (pred[novel] == "unknown").mean() >= 0.95, method
        assert (pred[~novel] == truth[~novel]).mean() >= 0.93, method
        assert (query.obs["p_novelty"].to_numpy()[novel] > 1).all()
    # without the unknown call the novel cells are forced into a known class
    mx.tl.transfer_labels(query, ref, label_key="label", basis="emb", unknown_threshold=None, key_added="f")
    assert "unknown" not in set(query.obs["f"].astype(str))


def test_unknown_threshold_is_a_calibrated_quantile():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 2))
    ref = _coords_adata(x[:1000], ["a"] * 1000)
    query = _coords_adata(x[1000:])  # same distribution as the reference
    mx.tl.transfer_labels(
        query, ref, label_key="label", basis="emb", method="prototype", unknown_threshold=0.9
    )
    rate = (query.obs["label_transferred"] == "unknown").mean()
    assert 0.05 < rate < 0.15  # ≈ 1 − 0.9 for a query drawn like the reference


def test_transfer_with_support_names_new_class():
    rng = np.random.default_rng(2)
    centers = np.array([[0, 0], [15, 0], [0, 15]], dtype=float)
    y = np.repeat(np.arange(3), 50)
    x = centers[y] + rng.normal(size=(150, 2))
    ref = _coords_adata(x[y < 2], np.array(["A", "B"])[y[y < 2]])
    query = _coords_adata(x)
    support = _coords_adata(centers[2:3] + rng.normal(size=(1, 2)), ["C"])  # one labelled example
    with pytest.raises(ValueError, match="prototype"):
        mx.tl.transfer_labels(query, ref, label_key="label", basis="emb", support=support)
    mx.tl.transfer_labels(query, ref, label_key="label", basis="emb", method="prototype", support=support)
    pred = query.obs["label_transferred"].astype(str).to_numpy()
    assert (pred[y == 2] == "C").mean() >= 0.9
    assert (pred[y < 2] == np.array(["A", "B"])[y[y < 2]]).mean() >= 0.95


def test_fewshot_labels_from_query_cells():
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=10, size=(4, 5))
    y = np.repeat(np.arange(4), 40)
    q = _coords_adata(centers[y] + rng.normal(size=(160, 5)))
    q.obs["shot"] = pd.Series([None] * 160, index=q.obs_names, dtype=object)
    for c in range(4):
        q.obs.iloc[np.flatnonzero(y == c)[0], q.obs.columns.get_loc("shot")] = f"t{c}"
    mx.tl.fewshot_labels(q, label_key="shot", basis="emb")
    assert (q.obs["shot_fewshot"].astype(str).to_numpy() == np.array([f"t{c}" for c in y])).mean() >= 0.95
    assert q.uns["shot_fewshot"]["shots"]["t0"] == 1


def test_transfer_errors_write_nothing(blob_model):
    ref, query, model = blob_model
    q = query.copy()
    mx.tl.embed(q, model)
    before = snapshot(q)
    with pytest.raises(KeyError, match="no column"):
        mx.tl.transfer_labels(q, ref, label_key="nope")
    with pytest.raises(KeyError, match="X_umap"):
        mx.tl.transfer_labels(q, ref, label_key="label", basis="umap")
    with pytest.raises(ValueError, match="quantile"):
        mx.tl.transfer_labels(q, ref, label_key="label", unknown_threshold=5)
    assert snapshot(q) == before


# ---- metrics -----------------------------------------------------------------------------------
class _Identity:
    """A 'model' whose embedding is its input."""

    is_fitted = True

    def transform(self, x):
        return np.asarray(x, dtype=np.float64)


def test_invariance_score_hand_computed():
    x = np.array([[0, 0], [1, 0], [3, 0], [6, 0]], dtype=np.float32)

    def shift(t, generator):  # an augmentation moving every point by 0.5
        return t + torch.tensor([0.5, 0.0])

    # moved 0.5 each; nearest-neighbour distances 1, 1, 2, 3
    score, per = mx.metrics.invariance_score(_Identity(), x, shift, return_per_sample=True)
    np.testing.assert_allclose(per, [0.5, 0.5, 0.25, 0.5 / 3])
    assert score == pytest.approx(0.375)
    assert mx.metrics.invariance_score(_Identity(), x, shift, reduce="mean") == pytest.approx(
        (1.25 + 0.5 / 3) / 4
    )

    def shift_expr(t, idx, ctx):  # the expression-augmentation signature
        return t + torch.tensor([0.0, 2.0])

    assert mx.metrics.invariance_score(_Identity(), x, shift_expr, n_neighbors=2) == pytest.approx(1.5)


def test_invariance_score_model(blob_model):
    ref, _, model = blob_model
    s_none = mx.metrics.invariance_score(model, ref.X, "none", feature_names=ref.var_names)
    s_def = mx.metrics.invariance_score(model, ref.X, "strong", feature_names=ref.var_names, n_augment=2)
    assert s_none == pytest.approx(0.0, abs=1e-6)
    assert s_def > 0
    with pytest.raises(NotFittedError):
        mx.metrics.invariance_score(mx.models.DLME(), ref.X)


def test_one_shot_accuracy_episodes():
    emb = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    lab = ["a", "a", "a", "b", "b", "b"]
    res = mx.metrics.one_shot_accuracy(emb, lab, n_episodes=10)
    assert res["mean"] == 1.0 and res["sd"] == 0.0 and res["n_way"] == 2 and res["chance"] == 0.5
    # identical embeddings for all classes: the nearest prototype is always the first class
    res = mx.metrics.one_shot_accuracy(np.zeros((6, 2)), lab, n_episodes=10)
    assert res["mean"] == pytest.approx(0.5)
    r1 = mx.metrics.one_shot_accuracy(np.random.default_rng(0).normal(size=(60, 3)), np.repeat([0, 1, 2], 20))
    r2 = mx.metrics.one_shot_accuracy(np.random.default_rng(0).normal(size=(60, 3)), np.repeat([0, 1, 2], 20))
    assert r1["mean"] == r2["mean"]  # seeded
    with pytest.raises(ValueError, match="3-way"):
        mx.metrics.one_shot_accuracy(emb, lab, n_way=3)


def test_holdout_one_shot_beats_chance():
    a = _blobs(n_classes=6, per=40, seed=5)
    x, y = a.X, a.obs["label"].astype(str).to_numpy()
    res = mx.metrics.holdout_one_shot(
        mx.models.DLME(n_neighbors=10, **FIT), x, y, holdout=["type3", "type4", "type5"], n_episodes=50
    )
    assert res["held_out"] == ["type3", "type4", "type5"] and res["n_way"] == 3
    assert res["embedding"].shape == (120, 2)
    assert res["mean"] > 0.8  # chance 1/3
    mask, held = mx.metrics.holdout_classes(y, n_holdout=2, random_state=0)
    assert len(held) == 2 and (~mask).sum() == 80


# ---- plots -------------------------------------------------------------------------------------
def test_query_plots(blob_model):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, query, model = blob_model
    q = query.copy()
    mx.tl.embed(q, model)
    mx.tl.transfer_labels(q, ref, label_key="label", key_added="pred")
    ax = mx.pl.query_map(ref, q, show=False)
    assert len(ax.collections) == 2
    ax = mx.pl.query_map(ref, q, color="pred", show=False)
    assert len(ax.collections) == 1 + q.obs["pred"].astype(str).nunique()
    # unknown cells of transfer_labels: black, drawn last
    assert "unknown" in q.obs["pred"].cat.categories
    q.obs.loc[q.obs_names[:5], "pred"] = "unknown"
    ax = mx.pl.query_map(ref, q, color="pred", show=False)
    assert ax.collections[-1].get_label() == "unknown"
    assert matplotlib.colors.to_hex(ax.collections[-1].get_facecolor()[0]) == "#000000"
    # scanpy's stored palette is reused, category by category
    ref.uns["label_colors"] = ["#ff0000", "#00ff00", "#0000ff", "#111111", "#222222"]
    ax = mx.pl.query_map(ref, q, color="label", show=False)
    got = {c.get_label(): matplotlib.colors.to_hex(c.get_facecolor()[0]) for c in ax.collections[1:]}
    assert got["type0"] == "#ff0000" and got["type2"] == "#0000ff"
    # a type only the query has gets a colour no reference type uses (scanpy's first default
    # colour is the reference's first type's here)
    from scanpy.plotting import palettes

    r2, q2 = ref.copy(), q.copy()
    keep = r2.obs["label"] != "type0"
    r2 = r2[keep.to_numpy()].copy()
    r2.obs["label"] = r2.obs["label"].cat.remove_unused_categories()
    r2.uns["label_colors"] = list(palettes.default_20[:4])
    ax = mx.pl.query_map(r2, q2, color="label", show=False)
    got = {c.get_label(): matplotlib.colors.to_hex(c.get_facecolor()[0]) for c in ax.collections[1:]}
    assert len(set(got.values())) == len(got) == 5
    assert got["type1"] == matplotlib.colors.to_hex(palettes.default_20[0])
    # numeric colour: colour bar on the right, legend below the axes (no overlap)
    q.obs["score"] = np.linspace(0, 1, q.n_obs)
    ax = mx.pl.query_map(ref, q, color="score", show=False)
    assert ax.get_legend().get_bbox_to_anchor().y0 < ax.get_window_extent().y0
    ax = mx.pl.confidence_map(q, key="pred", reference=ref, show=False)
    assert ax.get_title() == "pred: confidence"
    with pytest.raises(KeyError):
        mx.pl.confidence_map(q, key="nope", show=False)
    plt.close("all")


def test_embed_own_pca_warns_only_for_other_axes(pbmc_ref_query, monkeypatch):
    """Re-embedding the reference itself is silent; a query with its own PCA is warned about."""
    import manifex.tl._query as tq

    ref, query, model = pbmc_ref_query
    said: list[str] = []
    monkeypatch.setattr(tq.logg, "warning", lambda msg, *a, **k: said.append(msg))
    r = ref.copy()
    mx.tl.embed(r, model)
    assert not any("own obsm['X_pca']" in m for m in said)
    np.testing.assert_allclose(r.obsm["X_dlme"], ref.obsm["X_dlme"], atol=1e-4)
    q = query.copy()
    sc.pp.pca(q, n_comps=30, random_state=0)  # the query's own axes
    mx.tl.embed(q, model, check_preprocessing="ignore")
    assert any("own obsm['X_pca']" in m for m in said)


def test_dlme_block_readout_and_one_shot_on_a_block():
    a = _blobs(n_classes=6, per=40, seed=3)
    model = mx.models.DLME(n_steps=30, progress=False, device="cpu")
    res = mx.metrics.holdout_one_shot(
        model, a.X, a.obs["label"], holdout=["type4", "type5"], space="latent", block=0, n_episodes=20
    )
    assert res["embedding"].shape == (80, model.encoder_dims[0])
    # the last encoder block is the latent z
    np.testing.assert_allclose(
        model.transform(a.X, space="latent", block=len(model.encoder_dims) - 1),
        model.transform(a.X, space="latent"),
    )
    with pytest.raises(ValueError, match="block"):
        model.transform(a.X, space="latent", block=len(model.encoder_dims))
    with pytest.raises(ValueError, match="space='latent'"):
        mx.metrics.holdout_one_shot(mx.models.DLME(**FIT), a.X, a.obs["label"], space="input", block=0)
    with pytest.raises(ValueError, match="space='latent'"):
        mx.tl.embed(a.copy(), model, space="input", block=0)


def test_embed_block_of_n2d_and_out_of_range():
    a = _blobs(n_classes=3, per=40, seed=4)
    model = mx.tl.n2d(
        a, n_clusters=3, use_rep="X", n_steps=20, progress=False, device="cpu", return_model=True
    )
    q = a.copy()
    snap = snapshot(q)
    with pytest.raises(ValueError, match="`block` must be an integer block index"):
        mx.tl.embed(q, model, space="latent", block=99)
    assert snapshot(q) == snap
    mx.tl.embed(q, model, space="latent", block=0)
    assert q.obsm["X_n2d_block0"].shape == (q.n_obs, model.hidden_dims[0])
    assert q.uns["n2d_block0"]["block"] == 0


def test_one_shot_metrics_refuse_missing_labels_and_check_before_fitting(monkeypatch):
    emb = np.arange(12, dtype=float).reshape(6, 2)
    with pytest.raises(ValueError, match="missing"):
        mx.metrics.one_shot_accuracy(emb, ["a", "a", None, "b", "b", "b"])
    with pytest.raises(ValueError, match="missing"):
        mx.metrics.holdout_classes(np.array(["a", np.nan, "b"], dtype=object))
    a = _blobs(n_classes=4, per=20, seed=6)

    def fail(self, *args, **kwargs):
        raise AssertionError("fit ran before the arguments were checked")

    monkeypatch.setattr(mx.models.DLME, "fit", fail)
    for kw, match in [
        ({"k_shot": 0}, "k_shot"),
        ({"n_episodes": 2.5}, "n_episodes"),
        ({"space": "input", "block": 0}, "space='latent'"),
        ({"space": "latent", "block": "0"}, "block"),
    ]:
        with pytest.raises(ValueError, match=match):
            mx.metrics.holdout_one_shot(mx.models.DLME(**FIT), a.X, a.obs["label"], n_holdout=2, **kw)
    labels = a.obs["label"].astype(object).to_numpy()
    labels[0] = None
    with pytest.raises(ValueError, match="missing"):
        mx.metrics.holdout_one_shot(mx.models.DLME(**FIT), a.X, labels, n_holdout=2)


def test_embed_n2d_manifold_space(tmp_path):
    a = _blobs(n_classes=3, per=40, seed=5)
    model = mx.tl.n2d(
        a, n_clusters=3, use_rep="X", n_steps=20, progress=False, device="cpu", return_model=True
    )
    q = a[:, ::-1].copy()  # genes in another order: embed aligns them by name
    mx.tl.embed(q, model, space="manifold")
    assert q.uns["n2d_manifold"]["space"] == "manifold"
    got = q.obsm["X_n2d_manifold"]
    assert got.shape == (q.n_obs, model.manifold_.shape[1])
    np.testing.assert_allclose(got, model.transform(np.asarray(a.X), space="manifold"), rtol=1e-5, atol=1e-5)
    # the same from the model file; a DLME has no manifold, and a failing call writes nothing
    path = tmp_path / "n2d.mx"
    model.save(path)
    q2 = a.copy()
    mx.tl.embed(q2, path, space="manifold", key_added="m")
    np.testing.assert_allclose(q2.obsm["X_m"], got, rtol=1e-5, atol=1e-5)
    dlme = mx.tl.dlme(a.copy(), use_rep="X", return_model=True, **FIT)
    snap = snapshot(q2)
    with pytest.raises(ValueError, match="for a DLME, got 'manifold'"):
        mx.tl.embed(q2, dlme, space="manifold")
    with pytest.raises(ValueError, match="space='latent'"):
        mx.tl.embed(q2, model, space="manifold", block=0)
    assert snapshot(q2) == snap
