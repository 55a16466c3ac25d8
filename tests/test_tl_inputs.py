"""Wrongly prepared, bad and awkward inputs of the ``mx.tl`` entry points.

Queries are built like real data: negative-binomial counts of a few cell types (each with its own
marker genes and a spread of library sizes) run through scanpy's own preprocessing
(``normalize_total``, ``log1p``, ``scale``, ``pca``). Every refused call must leave the AnnData
exactly as it was (deep comparison).
"""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from adata_compare import assert_unchanged, state
from anndata import AnnData

import manifex as mx

FIT = {"n_steps": 30, "progress": False, "device": "cpu"}


# ---- data --------------------------------------------------------------------------------------
def nb_counts(types=(0, 1, 2, 3, 4), per=60, n_genes=300, seed=0) -> AnnData:
    """Counts of cell types drawn from one fixed set of 8 type profiles (the same for every seed)."""
    prof_rng = np.random.default_rng(1234)
    base = prof_rng.gamma(0.6, 1.0, size=n_genes) * 0.5
    prof = np.tile(base, (8, 1))
    for t in range(8):
        idx = prof_rng.choice(n_genes, 30, replace=False)
        prof[t, idx] *= prof_rng.uniform(5, 30, size=30)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(types), per)
    lib = rng.lognormal(np.log(3000), 0.4, size=y.size)
    mu = prof[y] / prof[y].sum(1, keepdims=True) * lib[:, None]
    x = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(np.float32)
    a = AnnData(x)
    a.var_names = [f"g{i}" for i in range(n_genes)]
    a.obs_names = [f"s{seed}c{i}" for i in range(y.size)]
    a.obs["type"] = pd.Categorical([f"t{i}" for i in y])
    return a


def lognorm(a: AnnData, target: float = 1e4) -> AnnData:
    a = a.copy()
    sc.pp.normalize_total(a, target_sum=target)
    sc.pp.log1p(a)
    return a


@pytest.fixture(scope="module")
def counts():
    """Reference counts (types t0-t4) and query counts (t0-t5: t5 is a type the reference lacks)."""
    return nb_counts(seed=0), nb_counts(types=(0, 1, 2, 3, 4, 5), seed=1)


@pytest.fixture(scope="module")
def log_models(counts):
    """DLME on the reference's log genes (use_rep='X') and on the PCA manifex computes of them."""
    ref = lognorm(counts[0])
    genes = mx.tl.dlme(ref, use_rep="X", return_model=True, **FIT)
    pca = mx.tl.dlme(ref.copy(), return_model=True, **FIT)  # 300 genes, no X_pca: a PCA of X
    assert pca.input_spec_["source"] == "pca"
    return ref, genes, pca


@pytest.fixture(scope="module")
def scaled_ref(counts):
    """The usual pipeline: log, sc.pp.scale(max_value=10), sc.pp.pca; DLME on X_pca."""
    ref = lognorm(counts[0])
    sc.pp.scale(ref, max_value=10)
    sc.pp.pca(ref, n_comps=20, random_state=0)
    model = mx.tl.dlme(ref, return_model=True, **FIT)
    return ref, model


def _query(counts, types=None, target=1e4, log=True):
    q = counts[1] if types is None else counts[1][counts[1].obs["type"].isin(types).to_numpy()].copy()
    return lognorm(q, target) if log else q.copy()


def refused(query, model, match, **kw):
    before = state(query)
    with pytest.raises(ValueError, match=match) as err:
        mx.tl.embed(query, model, **kw)
    assert_unchanged(query, before)
    return str(err.value)


# ---- wrong preprocessing through tl.embed ------------------------------------------------------
@pytest.mark.parametrize("which", ["genes", "pca"])
def test_embed_refuses_raw_counts_without_reference(counts, log_models, which):
    _, genes, pca = log_models
    model = genes if which == "genes" else pca
    refused(_query(counts, log=False), model, "raw counts")


@pytest.mark.parametrize("which", ["genes", "pca"])
def test_embed_refuses_scaled_query_without_reference(counts, log_models, which):
    _, genes, pca = log_models
    q = _query(counts)
    sc.pp.scale(q)
    refused(q, genes if which == "genes" else pca, r"centred / scaled.*before sc.pp.scale")


def test_embed_refuses_log_query_against_a_count_model(counts):
    model = mx.tl.dlme(counts[0].copy(), use_rep="X", return_model=True, **FIT)
    refused(_query(counts), model, "holds raw counts")
    mx.tl.embed(_query(counts, log=False), model)  # counts against counts: fine


@pytest.mark.parametrize("which", ["genes", "pca", "genes+reference"])
def test_embed_refuses_another_normalize_total_target(counts, log_models, which):
    ref, genes, pca = log_models
    kw = {"reference": ref} if which.endswith("reference") else {}
    msg = refused(_query(counts, target=1e6), pca if which == "pca" else genes, "normalize_total", **kw)
    assert re.search(r"sum to (9\d|1\d\d)(\.\d+)?× those", msg)  # totals after expm1: 1e6 / 1e4


def test_embed_refuses_another_target_against_a_scaled_reference(counts, scaled_ref):
    ref, model = scaled_ref
    q = _query(counts, target=1e6)
    refused(q, model, "normalize_total", reference=ref, scale_query=True, max_value=10)
    refused(_query(counts, log=False), model, "raw counts", reference=ref, scale_query=True, max_value=10)


def test_embed_warn_policy_embeds_and_records(counts, log_models):
    _, genes, _ = log_models
    q = _query(counts, log=False)
    with pytest.warns(UserWarning, match="raw counts"):
        mx.tl.embed(q, genes, check_preprocessing="warn")
    assert q.obsm["X_dlme"].shape == (q.n_obs, 2)
    assert "raw counts" in q.uns["dlme"]["preprocessing_check"]["problems"]


def test_embed_accepts_legitimate_queries(counts, log_models, scaled_ref):
    ref, genes, pca = log_models
    for model in (genes, pca):
        for types in (None, ["t0"], ["t5"]):  # all, one type, a type the reference lacks
            q = _query(counts, types)
            mx.tl.embed(q, model)
            assert q.uns["dlme"]["preprocessing_check"]["problems"] == ""
        mx.tl.embed(_query(counts, ["t5"]), model, reference=ref)
    sref, smodel = scaled_ref
    for types in (None, ["t0"], ["t5"]):
        q = _query(counts, types)
        mx.tl.embed(q, smodel, reference=sref, scale_query=True, max_value=10)
        assert q.uns["dlme"]["max_value"] == 10.0


def test_embed_unseen_type_against_a_clipped_reference(counts):
    """The fix for large z-scores of a type the reference lacks is ``max_value``, not log data."""
    # a marker of the new type that the reference saw once, in one cell at a low level (ambient
    # RNA): the new type's cells get z-scores over 100 once scaled by the reference's statistics
    log = lognorm(counts[0])
    x = np.asarray(log.X).copy()
    x[:, 0], x[0, 0] = 0.0, 0.7
    log.X = x
    ref = log.copy()
    sc.pp.scale(ref, max_value=10)
    sc.pp.pca(ref, n_comps=20, random_state=0)
    model = mx.tl.dlme(ref, return_model=True, **FIT)
    q = _query(counts, ["t5"])
    xq = np.asarray(q.X).copy()
    xq[:, 0] = 7.5
    q.X = xq
    msg = refused(q, model, r"max_value=10", reference=ref, scale_query=True)
    assert "log-transformed" not in msg and "sc.pp.scale(max_value=10)" in msg
    # a max_value recorded with the reference is applied: nothing to ask
    rec = ref.copy()
    rec.uns["scale"] = {"max_value": 10}
    q2 = q.copy()
    mx.tl.embed(q2, model, reference=rec, scale_query=True)
    q3 = q.copy()
    mx.tl.embed(q3, model, reference=ref, scale_query=True, max_value=10)
    np.testing.assert_allclose(q2.obsm["X_dlme"], q3.obsm["X_dlme"])


def test_embed_genes_of_a_scaled_model_need_the_reference(counts):
    """A model trained on scaled genes: an unscaled query is told to scale like the reference."""
    ref = lognorm(counts[0])
    sc.pp.scale(ref, max_value=10)
    model = mx.tl.dlme(ref, use_rep="X", return_model=True, **FIT)
    refused(_query(counts), model, "scale_query=True")
    mx.tl.embed(_query(counts), model, reference=ref, scale_query=True, max_value=10)


# ---- key_added ---------------------------------------------------------------------------------
@pytest.fixture
def no_fit(monkeypatch):
    """Training raises: a check that runs 'before any work' must fire first."""

    def fail(self, *a, **k):
        raise AssertionError("fit ran before the arguments were checked")

    for cls in (mx.models.DLME, mx.models.N2D, mx.models.TSimCNE):
        monkeypatch.setattr(cls, "fit", fail)


@pytest.fixture
def warnings_logged(monkeypatch):
    import manifex.tl._fit as tu

    said: list[str] = []
    monkeypatch.setattr(tu.logg, "warning", lambda msg, *a, **k: said.append(msg))
    return said


def _pbmc():
    a = sc.datasets.pbmc68k_reduced()
    a.obs["label"] = a.obs["bulk_labels"]
    return a


@pytest.mark.parametrize(
    "call",
    [
        lambda a: mx.tl.dlme(a, key_added="pca", **FIT),
        lambda a: mx.tl.dlme(a, use_rep="X_umap", key_added="umap", **FIT),
        lambda a: mx.tl.n2d(a, n_clusters=3, key_added="pca", **FIT),
        lambda a: mx.tl.tsimcne(a, key_added="neighbors", n_epochs=(1, 1, 1), progress=False),
        lambda a: mx.tl.n2d(a, n_clusters=3, key_added="label", **FIT),
        lambda a: mx.tl.n2d(a, n_clusters=3, key_added="bulk_labels", **FIT),
        lambda a: mx.tl.dlme(a, key_added="run/1", **FIT),
        lambda a: mx.tl.n2d(a, n_clusters=3, key_added="", **FIT),
        lambda a: mx.tl.dlme(a, key_added=5, **FIT),
    ],
    ids=[
        "dlme-pca",
        "dlme-input",
        "n2d-pca",
        "tsimcne-neighbors",
        "n2d-label",
        "n2d-labels2",
        "slash",
        "empty",
        "int",
    ],
)
def test_key_added_refused_before_any_work(call, no_fit):
    a = _pbmc()
    before = state(a)
    with pytest.raises(ValueError, match="key_added"):
        call(a)
    assert_unchanged(a, before)


def test_key_added_of_embed_transfer_and_fewshot(counts, log_models, no_fit):
    ref, genes, _ = log_models
    q = _query(counts)
    mx.tl.embed(q, genes)  # X_dlme, uns["dlme"]
    q.obs["label"] = q.obs["type"]
    r = ref.copy()
    mx.tl.embed(r, genes)
    before = state(q)
    for kw in ({"key_added": "pca"}, {"key_added": "run/1"}):
        with pytest.raises(ValueError, match="key_added"):
            mx.tl.embed(q, genes, **kw)
    with pytest.raises(ValueError, match="label column"):
        mx.tl.transfer_labels(q, r, label_key="label", key_added="label")
    r.obs["label"] = r.obs["type"]
    with pytest.raises(ValueError, match="obs\\['type'\\]"):  # the user's annotation
        mx.tl.transfer_labels(q, r, label_key="label", key_added="type")
    with pytest.raises(ValueError, match="record of the embedding"):  # uns['dlme'] tells the basis
        mx.tl.transfer_labels(q, r, label_key="label", key_added="dlme")
    with pytest.raises(ValueError, match="'/'"):
        mx.tl.transfer_labels(q, r, label_key="label", key_added="a/b")
    shots = q.copy()
    with pytest.raises(ValueError, match="support labels"):
        mx.tl.fewshot_labels(shots, label_key="label", key_added="label")
    assert_unchanged(q, before)


def test_key_added_replaces_earlier_results_with_a_warning(counts, log_models, warnings_logged):
    ref, genes, _ = log_models
    q = _query(counts)
    mx.tl.embed(q, genes)
    assert not warnings_logged
    first = q.obsm["X_dlme"].copy()
    mx.tl.embed(q, genes)  # the same result again: replaced, and said so
    assert any("replacing the existing obsm['X_dlme'], uns['dlme']" in m for m in warnings_logged)
    np.testing.assert_array_equal(first, q.obsm["X_dlme"])
    r = ref.copy()
    mx.tl.embed(r, genes)
    r.obs["label"] = r.obs["type"]
    mx.tl.transfer_labels(q, r, label_key="label", key_added="pred")
    n = len(warnings_logged)
    mx.tl.transfer_labels(q, r, label_key="label", key_added="pred", unknown="distance")
    assert "obs['pred']" in warnings_logged[n] and "pred_confidence" in warnings_logged[n]
    # an existing embedding that is not an input is replaced with a warning, never silently
    a = _pbmc()
    mx.tl.dlme(a, key_added="umap", **FIT)
    assert any("obsm['X_umap']" in m for m in warnings_logged)
    a.write_h5ad(Path(tempfile.mkdtemp()) / "a.h5ad")  # results stay writable


# ---- messages that name the right thing --------------------------------------------------------
def test_fewshot_names_the_support_that_lacks_the_embedding():
    rng = np.random.default_rng(0)
    q = AnnData(np.zeros((30, 2), dtype=np.float32))
    q.obsm["X_dlme"] = rng.normal(size=(30, 2))
    sup = AnnData(np.zeros((3, 2), dtype=np.float32))
    sup.obs["label"] = ["a", "b", "c"]
    for basis in ("dlme", None):
        before = state(q)
        with pytest.raises(KeyError, match=r"support\.obsm has no .*'X_dlme'"):
            mx.tl.fewshot_labels(q, sup, label_key="label", basis=basis)
        assert_unchanged(q, before)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: mx.tl.dlme(a, n_neighbors=30, **FIT),
        lambda a: mx.tl.tsimcne(a, n_neighbors=30, n_epochs=(1, 1, 1), progress=False),
        lambda a: mx.tl.n2d(a, n_neighbors=30, n_clusters=3, **FIT),
    ],
    ids=["dlme", "tsimcne", "n2d"],
)
def test_too_few_cells_for_n_neighbors_names_it(call, no_fit):
    a = AnnData(np.random.default_rng(0).normal(size=(25, 10)).astype(np.float32))
    before = state(a)
    with pytest.raises(ValueError, match=r"`n_neighbors`=30 needs more than"):
        call(a)
    assert_unchanged(a, before)


# ---- bad and awkward inputs of every entry point -----------------------------------------------
def _blobs(n=90, d=12, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    x = (np.random.default_rng(99).normal(scale=6, size=(3, d))[y] + rng.normal(size=(n, d))).astype(
        np.float32
    )
    a = AnnData(x)
    a.var_names = [f"g{i}" for i in range(d)]
    a.obs_names = [f"c{seed}_{i}" for i in range(n)]
    a.obs["label"] = pd.Categorical([f"t{i}" for i in y])
    return a


def _nan(a):
    a.X[3, 2] = np.nan
    return a


def _dup(a):
    a.var_names = ["g"] * a.n_vars
    return a


TRAIN = {
    "dlme": lambda a, **k: mx.tl.dlme(a, **{**FIT, **k}),
    "n2d": lambda a, **k: mx.tl.n2d(a, **{"n_clusters": 3, **FIT, **k}),
    "tsimcne": lambda a, **k: mx.tl.tsimcne(a, **{"n_epochs": (1, 1, 1), "progress": False, **k}),
}
BAD_TRAIN = [
    ("ndarray", lambda: np.zeros((50, 5)), {}, TypeError, "must be an AnnData"),
    ("empty", lambda: AnnData(np.zeros((0, 10), dtype=np.float32)), {}, ValueError, "empty"),
    ("nan", lambda: _nan(_blobs()), {"use_rep": "X"}, ValueError, "NaN"),
    ("duplicate genes", lambda: _dup(_blobs()), {"use_rep": "X"}, ValueError, "not unique"),
    ("use_rep int", _blobs, {"use_rep": 5}, TypeError, "use_rep"),
    ("missing layer", _blobs, {"layer": "counts"}, KeyError, "counts"),
    ("copy str", _blobs, {"use_rep": "X", "copy": "yes"}, TypeError, "copy"),
    ("return_model str", _blobs, {"use_rep": "X", "return_model": "no"}, TypeError, "return_model"),
    ("n_neighbors float", _blobs, {"use_rep": "X", "n_neighbors": 2.5}, ValueError, "n_neighbors"),
]


@pytest.mark.parametrize("fn", list(TRAIN))
@pytest.mark.parametrize("make, kw, error, match", [c[1:] for c in BAD_TRAIN], ids=[c[0] for c in BAD_TRAIN])
def test_training_functions_refuse_bad_inputs_before_any_work(fn, make, kw, error, match, no_fit):
    a = make()
    before = state(a) if isinstance(a, AnnData) else None
    with pytest.raises(error, match=match):
        TRAIN[fn](a, **kw)
    if before is not None:
        assert_unchanged(a, before)


@pytest.fixture(scope="module")
def blob_model():
    ref = _blobs(seed=0)
    return ref, mx.tl.dlme(ref, use_rep="X", return_model=True, **FIT)


BAD_EMBED = [
    ({"space": "foo"}, ValueError, "`space`"),
    ({"block": "0"}, ValueError, "`block`"),
    ({"block": True}, ValueError, "`block`"),
    ({"space": "input", "block": 0}, ValueError, "space='latent'"),
    ({"space": "latent", "block": 99}, ValueError, r"block index in 0\.\.2"),
    ({"use_rep": 5}, TypeError, "use_rep"),
    ({"fill_missing": "x"}, ValueError, "fill_missing"),
    ({"check_preprocessing": "x"}, ValueError, "check_preprocessing"),
    ({"scale_query": "yes"}, TypeError, "scale_query"),
    ({"scale_query": True}, ValueError, "needs the `reference`"),
    ({"max_value": -1}, ValueError, "max_value"),
    ({"max_value": 10}, ValueError, "scale_query"),
    ({"reference": np.zeros(3)}, TypeError, "reference"),
    ({"copy": "yes"}, TypeError, "copy"),
]


@pytest.mark.parametrize("kw, error, match", BAD_EMBED, ids=[str(c[0]) for c in BAD_EMBED])
def test_embed_refuses_bad_arguments(blob_model, kw, error, match):
    _, model = blob_model
    q = _blobs(seed=1)
    before = state(q)
    with pytest.raises(error, match=match):
        mx.tl.embed(q, model, **kw)
    assert_unchanged(q, before)


def test_embed_refuses_bad_queries_and_models(blob_model, tmp_path):
    _, model = blob_model
    cases = [
        (_nan(_blobs(seed=1)), model, ValueError, "NaN"),
        (_dup(_blobs(seed=1)), model, ValueError, "not unique"),
        (_blobs(seed=1)[:, :6].copy(), model, KeyError, "lacks 6 of the 12 genes"),
        (AnnData(np.zeros((0, 12), dtype=np.float32)), model, ValueError, "empty"),
        (_blobs(seed=1), None, TypeError, "transform"),
        (_blobs(seed=1), mx.models.DLME(), mx.models.NotFittedError, "not fitted"),
        (_blobs(seed=1), tmp_path / "missing.mx", FileNotFoundError, "missing.mx"),
    ]
    (tmp_path / "t.txt").write_text("hello")
    cases.append((_blobs(seed=1), tmp_path / "t.txt", ValueError, "not a manifex model file"))
    for q, m, error, match in cases:
        before = state(q)
        with pytest.raises(error, match=match):
            mx.tl.embed(q, m)
        assert_unchanged(q, before)
    with pytest.raises(TypeError, match="AnnData"):
        mx.tl.embed(np.zeros((5, 12)), model)


def test_embed_of_a_reference_without_pcs_says_so(pbmc_small):
    ref, q = pbmc_small[:500].copy(), pbmc_small[500:].copy()
    model = mx.tl.dlme(ref, return_model=True, **FIT)
    del q.obsm["X_pca"], ref.varm["PCs"]
    before = state(q)
    with pytest.raises(KeyError, match=r"`reference` given has no varm\['PCs'\]"):
        mx.tl.embed(q, model, reference=ref)
    assert_unchanged(q, before)


@pytest.mark.filterwarnings("ignore:Setting element:UserWarning")
def test_views_and_backed_anndata(blob_model, tmp_path):
    _, model = blob_model
    parent = _blobs(seed=1)
    before = state(parent)
    view = parent[:40]
    mx.tl.embed(view, model)  # a view becomes an AnnData of its own, as in scanpy; the parent stays
    assert view.obsm["X_dlme"].shape == (40, 2)
    assert_unchanged(parent, before)
    q = _blobs(seed=1)
    q.write_h5ad(tmp_path / "q.h5ad")
    backed = __import__("anndata").read_h5ad(tmp_path / "q.h5ad", backed="r")
    mx.tl.embed(backed, model)
    mx.tl.embed(q, model)
    np.testing.assert_allclose(backed.obsm["X_dlme"], q.obsm["X_dlme"], rtol=1e-5, atol=1e-6)
    out = mx.tl.dlme(backed, use_rep="X", copy=True, **FIT)
    assert out.obsm["X_dlme"].shape == (q.n_obs, 2)


def test_backed_data_stays_on_disk(counts, tmp_path, monkeypatch):
    """Training on a backed X (300 genes: manifex's PCA, fitted chunk by chunk) and embedding a
    backed query hand the models the on-disk matrix, and give what the in-memory data gives."""
    import anndata

    from manifex.train._data import BackedMatrix

    ref = lognorm(counts[0])
    ref.write_h5ad(tmp_path / "ref.h5ad")
    backed_ref = anndata.read_h5ad(tmp_path / "ref.h5ad", backed="r")
    seen: list[type] = []
    fit, transform = mx.models.DLME.fit, mx.models.DLME.transform

    def spy_fit(self, X, *a, **k):
        seen.append(type(X))
        return fit(self, X, *a, **k)

    def spy_transform(self, X, *a, **k):
        seen.append(type(X))
        return transform(self, X, *a, **k)

    monkeypatch.setattr(mx.models.DLME, "fit", spy_fit)
    monkeypatch.setattr(mx.models.DLME, "transform", spy_transform)
    genes = mx.tl.dlme(backed_ref, use_rep="X", return_model=True, **FIT)
    assert seen == [BackedMatrix]
    pca = mx.tl.dlme(backed_ref, return_model=True, key_added="dlme_pca", **FIT)
    assert pca.input_spec_["source"] == "pca" and pca.n_features_in_ == 50
    q = _query(counts)
    q.write_h5ad(tmp_path / "q.h5ad")
    backed_q = anndata.read_h5ad(tmp_path / "q.h5ad", backed="r")
    for model in (genes, pca):
        seen.clear()
        mx.tl.embed(backed_q, model)
        if model is genes:
            assert seen == [BackedMatrix]
        mx.tl.embed(q, model)
        np.testing.assert_allclose(backed_q.obsm["X_dlme"], q.obsm["X_dlme"], rtol=1e-4, atol=1e-5)
    # wrongly prepared on disk: refused like in memory
    raw = counts[1].copy()
    raw.write_h5ad(tmp_path / "raw.h5ad")
    backed_raw = anndata.read_h5ad(tmp_path / "raw.h5ad", backed="r")
    with pytest.raises(ValueError, match="raw counts"):
        mx.tl.embed(backed_raw, genes)
    assert "X_dlme" not in backed_raw.obsm


def _emb(n=90, seed=0, labels=True):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    a = AnnData(np.zeros((n, 2), dtype=np.float32))
    a.obs_names = [f"e{seed}_{i}" for i in range(n)]
    a.obsm["X_emb"] = (np.array([[0, 0], [10, 0], [0, 10]])[y] + rng.normal(size=(n, 2))).astype(np.float32)
    if labels:
        a.obs["label"] = pd.Categorical([f"t{i}" for i in y])
    return a


BAD_TRANSFER = [
    ({"label_key": "nope"}, KeyError, "reference.obs has no column 'nope'"),
    ({"label_key": 5}, TypeError, "label_key"),
    ({"basis": "nope"}, KeyError, "query.obsm has no"),
    ({"basis": 5}, TypeError, "basis"),
    ({"method": "x"}, ValueError, "method"),
    ({"n_neighbors": 0}, ValueError, "n_neighbors"),
    ({"n_neighbors": 2.5}, ValueError, "n_neighbors"),
    ({"unknown": "x"}, ValueError, "unknown"),
    ({"unknown_threshold": True}, ValueError, "unknown_threshold"),
    ({"min_coverage": -1}, ValueError, "min_coverage"),
    ({"unknown_label": ""}, ValueError, "unknown_label"),
    ({"unknown_label": "t0"}, ValueError, "class named 't0'"),
    ({"copy": "yes"}, TypeError, "copy"),
    ({"method": "prototype", "support": np.zeros(3)}, TypeError, "support"),
    ({"unknown": "coverage"}, ValueError, "coverage check"),
]


@pytest.mark.parametrize("kw, error, match", BAD_TRANSFER, ids=[str(c[0]) for c in BAD_TRANSFER])
def test_transfer_labels_refuses_bad_arguments(kw, error, match):
    ref, q = _emb(seed=0), _emb(seed=1, labels=False)
    before = state(q)
    with pytest.raises(error, match=match):
        mx.tl.transfer_labels(q, ref, **{"label_key": "label", "basis": "emb", **kw})
    assert_unchanged(q, before)


def test_transfer_labels_missing_labels_and_single_cell_classes():
    ref, q = _emb(seed=0), _emb(seed=1, labels=False)
    r = ref.copy()
    lab = r.obs["label"].astype(object)
    lab.iloc[:10] = np.nan  # categorical labels with missing values: those cells are left out
    r.obs["label"] = pd.Categorical(lab)
    mx.tl.transfer_labels(q, r, label_key="label", basis="emb", key_added="p")
    assert set(q.obs["p"].cat.categories) == {"t0", "t1", "t2", "unknown"}
    assert q.uns["p"]["n_reference"] == 80
    r.obs["label"] = pd.Categorical([None] * r.n_obs, categories=["a"])
    with pytest.raises(ValueError, match="has no labels"):
        mx.tl.transfer_labels(q, r, label_key="label", basis="emb", key_added="p2")
    # one cell per class: distances within a class are undefined, no threshold can be calibrated
    one = ref[[0, 40, 70]].copy()
    before = state(q)
    with pytest.raises(ValueError, match="single cell"):
        mx.tl.transfer_labels(q, one, label_key="label", basis="emb", unknown="distance")
    assert_unchanged(q, before)
    mx.tl.transfer_labels(q, one, label_key="label", basis="emb", key_added="one")
    assert (
        "unknown" not in set(q.obs["one"].astype(str))
        and "single cell" in q.uns["one"]["distance"]["skipped"]
    )
    assert (q.obs["one"].astype(str).to_numpy() == np.repeat(["t0", "t1", "t2"], 30)).mean() > 0.95


def test_fewshot_labels_refuses_bad_arguments():
    q = _emb(seed=2, labels=False)
    q.obs["shot"] = pd.Series([None] * q.n_obs, index=q.obs_names, dtype=object)
    q.obs.iloc[[0, 30, 60], q.obs.columns.get_loc("shot")] = ["a", "b", "c"]
    before = state(q)
    for kw, error, match in [
        ({"label_key": "nope"}, KeyError, "query.obs has no column 'nope'"),
        ({"label_key": 5}, TypeError, "label_key"),
        ({"basis": "x"}, KeyError, "query.obsm has no"),
        ({"support": np.zeros(2)}, TypeError, "support"),
        ({"copy": "yes"}, TypeError, "copy"),
    ]:
        with pytest.raises(error, match=match):
            mx.tl.fewshot_labels(q, **{"label_key": "shot", "basis": "emb", **kw})
    assert_unchanged(q, before)
    q.obs["shot"] = pd.Categorical(q.obs["shot"])  # categorical with NaN: the unlabelled cells
    mx.tl.fewshot_labels(q, label_key="shot", basis="emb")
    assert list(q.obs["shot_fewshot"].cat.categories) == ["a", "b", "c"]


# ---- fitting on raw counts: the query's preprocessing check at fit time ------------------------
def _poisson_counts(n_genes: int, n=120, seed=0) -> AnnData:
    """Raw counts: Poisson draws around per-gene means (integers up to well above 20)."""
    rng = np.random.default_rng(seed)
    means = rng.gamma(2.0, 10.0, size=n_genes)
    a = AnnData(rng.poisson(means, size=(n, n_genes)).astype(np.float32))
    a.var_names = [f"g{i}" for i in range(n_genes)]
    return a


def _preprocessing_warnings(record) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, mx.tl.PreprocessingWarning)]


@pytest.mark.parametrize("n_genes", [80, 30], ids=["pca-of-counts", "counts-as-input"])
def test_fit_on_raw_counts_warns_naming_the_fix(n_genes):
    a = _poisson_counts(n_genes)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = mx.tl.dlme(a, return_model=True, **FIT)
    said = _preprocessing_warnings(record)
    assert len(said) == 1
    msg = str(said[0].message)
    assert "adata.X looks like raw counts" in msg
    assert "sc.pp.normalize_total" in msg and "sc.pp.log1p" in msg
    assert ("PCA" in msg) == (n_genes > 50)
    assert said[0].filename == __file__  # points at the call of mx.tl.dlme
    assert issubclass(mx.tl.PreprocessingWarning, UserWarning)
    # a warning, not a refusal: the embedding is there, its input recorded as before
    assert a.obsm["X_dlme"].shape == (a.n_obs, 2)
    assert model.input_spec_.source == ("pca" if n_genes > 50 else "X")


def test_fit_on_normalised_or_embedded_input_does_not_warn():
    a = lognorm(_poisson_counts(80))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mx.tl.dlme(a, **FIT)
        mx.tl.n2d(a, n_clusters=3, use_rep="X", **FIT)
        sc.pp.pca(a, n_comps=10)
        raw = _poisson_counts(80)
        raw.obsm["X_pca"] = a.obsm["X_pca"]  # an embedding is used as given
        mx.tl.dlme(raw, **FIT)
    assert _preprocessing_warnings(record) == []


def test_fit_on_a_counts_layer_names_the_layer():
    a = lognorm(_poisson_counts(30))
    a.layers["counts"] = _poisson_counts(30).X
    with pytest.warns(mx.tl.PreprocessingWarning, match=r"adata\.layers\['counts'\] looks like raw counts"):
        mx.tl.n2d(a, n_clusters=3, layer="counts", **FIT)


def test_cli_fit_on_raw_counts_warns(tmp_path):
    from manifex import cli

    raw, norm = tmp_path / "raw.h5ad", tmp_path / "norm.h5ad"
    _poisson_counts(80).write_h5ad(raw)
    lognorm(_poisson_counts(80)).write_h5ad(norm)
    opts = ["--n-steps", "5", "--device", "cpu", "--param", "progress=false"]
    with pytest.warns(mx.tl.PreprocessingWarning, match=r"sc\.pp\.normalize_total and sc\.pp\.log1p"):
        cli.main(["fit", "dlme", str(raw), "--embedding-out", str(tmp_path / "raw.npy"), *opts])
    assert np.load(tmp_path / "raw.npy").shape == (120, 2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cli.main(["fit", "dlme", str(norm), "--embedding-out", str(tmp_path / "norm.npy"), *opts])
    assert _preprocessing_warnings(record) == []


# ---- the recorded input: typed on the model, a dict in the file --------------------------------
def test_input_spec_is_typed_and_keeps_the_file_format(tmp_path):
    from manifex.io import InputSpec

    a = _poisson_counts(80)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    model = mx.tl.dlme(a, return_model=True, random_state=3, **{**FIT, "n_steps": 5})
    spec = model.input_spec_
    assert isinstance(spec, InputSpec) and spec.source == "pca" and spec.key_added == "dlme"
    with pytest.raises(AttributeError):
        spec.source = "X"  # frozen
    # the dict written to model files: the fields of earlier versions, in their order
    assert list(spec.to_dict()) == [
        "source", "key", "var_names", "pca_components", "pca_mean",
        "description", "extra", "genes", "key_added", "method",
    ]  # fmt: skip
    old = {k: v for k, v in spec.to_dict().items() if k not in ("key_added", "method")}
    assert InputSpec.from_dict(old).pca_components is spec.pca_components
    assert spec["source"] == "pca" and dict(spec)["method"] == "dlme" and spec == spec.to_dict()
    model.save(tmp_path / "m.mx")
    loaded = mx.models.load_model(tmp_path / "m.mx", device="cpu")
    assert isinstance(loaded.input_spec_, InputSpec) and loaded.input_spec_ == spec
    # the PCA is seeded by the call's random_state
    again = mx.tl.dlme(a.copy(), return_model=True, random_state=3, **{**FIT, "n_steps": 5})
    np.testing.assert_array_equal(again.input_spec_.pca_components, spec.pca_components)
