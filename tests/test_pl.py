"""Plots: found as scanpy finds them, bad inputs refused before anything is drawn or changed.

No network is trained here: scanpy's bundled UMAP stands in for an mx.tl result.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from anndata import AnnData

import manifex as mx


@pytest.fixture
def small(pbmc_small):
    """pbmc68k_reduced with scanpy's UMAP standing in for DLME / t-SimCNE / N2D results."""
    a = pbmc_small.copy()
    a.obsm["X_dlme"] = a.obsm["X_umap"].copy()
    a.obsm["X_n2d"] = a.obsm["X_umap"][:, ::-1].copy()
    a.obs["n2d"] = a.obs["louvain"].copy()
    a.obs["donor"] = np.where(np.arange(a.n_obs) % 2, "d1", "d2")  # a string column
    a.uns["dlme"] = {"loss": [3.0, 2.0, 1.5]}
    return a


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def state(adata: AnnData):
    """Everything a plot could change: obs (with dtypes), obsm, uns keys."""
    return (
        adata.obs.dtypes.astype(str).to_dict(),
        adata.obs.copy(),
        {k: np.array(v) for k, v in adata.obsm.items()},
        sorted(adata.uns.keys()),
    )


def assert_same_state(a, b):
    assert a[0] == b[0]
    pd.testing.assert_frame_equal(a[1], b[1])
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k])
    assert a[3] == b[3]


def offsets(ax) -> np.ndarray:
    return np.concatenate([np.asarray(c.get_offsets()) for c in ax.collections if len(c.get_offsets())])


# ---- embedding and its wrappers -------------------------------------------------------------


def test_embedding_draws_what_scanpy_draws(small):
    ours = mx.pl.embedding(small, "dlme", show=False)
    theirs = sc.pl.embedding(small, basis="dlme", show=False)
    np.testing.assert_allclose(offsets(ours), offsets(theirs))
    np.testing.assert_allclose(offsets(ours), small.obsm["X_dlme"])
    # with and without the X_ prefix
    np.testing.assert_allclose(offsets(mx.pl.embedding(small, "X_dlme", show=False)), small.obsm["X_dlme"])


def test_basis_lookup_order_is_scanpys(small):
    # both "emb" and "X_emb" present: scanpy takes obsm["emb"], so must we
    small.obsm["emb"] = small.obsm["X_umap"] * 2
    small.obsm["X_emb"] = small.obsm["X_umap"] * -1
    np.testing.assert_allclose(offsets(mx.pl.embedding(small, "emb", show=False)), small.obsm["emb"])
    np.testing.assert_allclose(offsets(sc.pl.embedding(small, basis="emb", show=False)), small.obsm["emb"])


def test_wrappers_take_basis(small):
    np.testing.assert_allclose(offsets(mx.pl.dlme(small, show=False)), small.obsm["X_dlme"])
    small.obsm["X_run2"] = small.obsm["X_umap"] + 1.0
    np.testing.assert_allclose(offsets(mx.pl.dlme(small, basis="run2", show=False)), small.obsm["X_run2"])
    small.obsm["X_tsimcne"] = small.obsm["X_umap"] * 3
    np.testing.assert_allclose(offsets(mx.pl.tsimcne(small, show=False)), small.obsm["X_tsimcne"])
    ax = mx.pl.n2d(small, show=False)  # coloured by obs["n2d"] by default
    assert ax.get_title() == "n2d"
    np.testing.assert_allclose(np.sort(offsets(ax), 0), np.sort(small.obsm["X_n2d"], 0))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda a: mx.pl.embedding(a, 5), TypeError, "`basis` must be a string"),
        (lambda a: mx.pl.embedding(a, None), TypeError, "`basis` must be a string"),
        (lambda a: mx.pl.embedding(a, ""), ValueError, "`basis` must name an embedding"),
        (lambda a: mx.pl.embedding(a, "nope"), KeyError, "no 'nope' or 'X_nope'"),
        (lambda a: mx.pl.embedding(a.X, "umap"), TypeError, "`adata` must be an AnnData"),
        (lambda a: mx.pl.embedding(a, "umap", color="no_such_gene"), KeyError, "no_such_gene"),
        (lambda a: mx.pl.embedding(a, "umap", color=["donor", 3]), TypeError, "`color` entries"),
        (lambda a: mx.pl.embedding(a, "umap", ax="left"), TypeError, "`ax` must be"),
        (lambda a: mx.pl.dlme(a, key="dlme"), TypeError, "key"),
        (lambda a: mx.pl.dlme(a, basis="tsimcne"), KeyError, "X_tsimcne"),
        (lambda a: mx.pl.tsimcne(a), KeyError, "X_tsimcne"),
        (lambda a: mx.pl.n2d(a, basis=1), TypeError, "`basis` must be a string"),
        (lambda a: mx.pl.n2d(a, basis="nope"), KeyError, "X_nope"),
    ],
)
def test_embedding_bad_inputs(small, call, error, match):
    before = state(small)
    with pytest.raises(error, match=match):
        call(small)
    assert_same_state(before, state(small))  # "donor" is still a string column


def test_embedding_one_column_and_empty(small):
    small.obsm["X_line"] = small.obsm["X_umap"][:, :1]
    with pytest.raises(ValueError, match=r"must be 2-dimensional with at least 2 column"):
        mx.pl.embedding(small, "line", show=False)
    with pytest.raises(ValueError, match="`adata` is empty"):
        mx.pl.embedding(small[:0].copy(), "umap", show=False)


# ---- loss_curve ------------------------------------------------------------------------------


def test_loss_curve_draws_the_history(small):
    ax = mx.pl.loss_curve(small, "dlme", show=False)
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(line.get_ydata(), [3.0, 2.0, 1.5])
    assert ax.get_yscale() == "log"
    # stages are drawn one after the other
    small.uns["ts"] = {"loss_stage1": [4.0, 3.0], "loss_stage2": [2.0]}
    lines = mx.pl.loss_curve(small, basis="ts", show=False).get_lines()
    assert [list(ln.get_xdata()) for ln in lines] == [[1, 2], [3]]
    # the history is in uns: an AnnData without cells still draws it
    (line,) = mx.pl.loss_curve(small[:0].copy(), "dlme", show=False).get_lines()
    np.testing.assert_array_equal(line.get_ydata(), [3.0, 2.0, 1.5])


@pytest.mark.parametrize(
    "basis, uns, error, match",
    [
        (3, None, TypeError, "`basis` must be a string"),
        ("nope", None, KeyError, "adata.uns has no 'nope'"),
        ("bad", "a string", TypeError, "not the dict"),
        ("bad", {"n_steps": 3}, KeyError, "no loss history"),
        ("bad", {"loss": ["a", "b"]}, TypeError, "not numeric"),
    ],
)
def test_loss_curve_bad_inputs(small, basis, uns, error, match):
    if uns is not None:
        small.uns["bad"] = uns
    before = state(small)
    with pytest.raises(error, match=match):
        mx.pl.loss_curve(small, basis, show=False)
    assert_same_state(before, state(small))


# ---- cluster_confusion -----------------------------------------------------------------------


def _labelled(clusters, labels) -> AnnData:
    n = len(labels)
    a = AnnData(np.zeros((n, 2), np.float32))
    a.obs["cl"] = pd.Categorical(clusters)
    a.obs["y"] = pd.Categorical(labels)
    return a


def test_cluster_confusion_matches_hand_computed_table():
    # clusters "2" -> a (5 cells), "0" -> b (3 + 1 wrong "c" cell), "1" -> c
    a = _labelled(["2"] * 5 + ["0"] * 3 + ["1", "0"], ["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    ax = mx.pl.cluster_confusion(a, clusters="cl", labels="y", normalize=False, show=False)
    np.testing.assert_array_equal(ax.images[0].get_array(), [[5, 0, 0], [0, 3, 1], [0, 0, 1]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "0", "1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_title() == "cl vs y (ACC 0.900)"
    ax = mx.pl.cluster_confusion(a, clusters="cl", labels="y", show=False)
    np.testing.assert_allclose(ax.images[0].get_array()[1], [0, 0.75, 0.25])


@pytest.mark.parametrize("missing", [np.nan, None])
def test_cluster_confusion_refuses_missing_labels(missing):
    a = _labelled(["0", "0", "1", "1"], ["a", "a", "b", "b"])
    a.obs["y"] = pd.Series(["a", missing, "b", "b"], index=a.obs_names, dtype=object)
    before = state(a)
    with pytest.raises(ValueError, match=r"obs\['y'\] has 1 missing values"):
        mx.pl.cluster_confusion(a, clusters="cl", labels="y", show=False)
    assert_same_state(before, state(a))
    a.obs["y"] = pd.Categorical(["a", "a", "b", None])
    with pytest.raises(ValueError, match="missing"):
        mx.pl.cluster_confusion(a, clusters="cl", labels="y", show=False)
    a.obs["cl"] = [0.0, np.nan, 1.0, 1.0]
    a.obs["y"] = ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match=r"obs\['cl'\] has 1 missing"):
        mx.pl.cluster_confusion(a, clusters="cl", labels="y", show=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"clusters": "nope"}, KeyError, "`clusters`='nope'"),
        ({"labels": "nope"}, KeyError, "`labels`='nope'"),
        ({"clusters": 0}, TypeError, "`clusters` must be a string"),
        ({"key": "cl"}, TypeError, "key"),
        ({"ax": 1}, TypeError, "`ax`"),
    ],
)
def test_cluster_confusion_bad_inputs(kwargs, error, match):
    a = _labelled(["0", "1"], ["a", "b"])
    kw = {"clusters": "cl", "labels": "y", "show": False} | kwargs
    figures = plt.get_fignums()
    with pytest.raises(error, match=match):
        mx.pl.cluster_confusion(a, **kw)
    assert plt.get_fignums() == figures  # nothing drawn
    with pytest.raises(ValueError, match="`adata` is empty"):
        mx.pl.cluster_confusion(a[:0].copy(), clusters="cl", labels="y", show=False)


# ---- image_map -------------------------------------------------------------------------------


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    a = mx.datasets.image_anndata(rng.integers(0, 256, (40, 8, 8)).astype(np.uint8), labels=np.arange(40) % 3)
    a.obsm["X_tsimcne"] = rng.normal(size=(40, 2))
    return a


def test_image_map_draws_thumbnails_at_their_points(images):
    ax = mx.pl.image_map(images, "tsimcne", n=10, min_distance=None, color="label", show=False)
    boxes = [c for c in ax.get_children() if type(c).__name__ == "AnnotationBbox"]
    assert len(boxes) == 10 and ax.get_title() == "tsimcne: 10 images"
    emb = images.obsm["X_tsimcne"]
    for b in boxes:  # each thumbnail sits on one of the points
        assert np.min(np.abs(emb - np.asarray(b.xy)).sum(1)) < 1e-12


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"basis": 5}, TypeError, "`basis` must be a string"),
        ({"basis": "umap"}, KeyError, "X_umap"),
        ({"image_key": "img"}, KeyError, "`image_key`='img'"),
        ({"n": -1}, ValueError, "`n` must be"),
        ({"n": 2.5}, ValueError, "`n` must be"),
        ({"zoom": 0}, ValueError, "`zoom`"),
        ({"min_distance": -0.1}, ValueError, "`min_distance`"),
        ({"color": "nope"}, KeyError, "`color`='nope'"),
        ({"color": 3}, TypeError, "`color` must be a string"),
    ],
)
def test_image_map_bad_inputs(images, kwargs, error, match):
    before, figures = state(images), plt.get_fignums()
    with pytest.raises(error, match=match):
        mx.pl.image_map(images, **({"show": False} | kwargs))
    assert_same_state(before, state(images))
    assert plt.get_fignums() == figures


def test_image_map_refuses_non_images(images):
    images.obsm["flat"] = images.X
    with pytest.raises(ValueError, match=r"\(n_obs, H, W\)"):
        mx.pl.image_map(images, "tsimcne", image_key="flat", show=False)
    images.obsm["X_tsimcne"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mx.pl.image_map(images, "tsimcne", show=False)


# ---- query_map and confidence_map -------------------------------------------------------------


@pytest.fixture
def ref_query(small):
    ref, query = small[:400].copy(), small[400:].copy()
    query.obs["pred"] = pd.Categorical(np.where(np.arange(query.n_obs) % 5 == 0, "unknown", "B"))
    query.obs["pred_confidence"] = np.linspace(0, 1, query.n_obs)
    query.uns["pred"] = {"basis": "dlme", "unknown_label": "unknown"}
    return ref, query


def test_query_map_and_confidence_map_draw_both(ref_query):
    ref, query = ref_query
    ax = mx.pl.query_map(ref, query, show=False)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), ref.obsm["X_dlme"])
    np.testing.assert_allclose(ax.collections[1].get_offsets(), query.obsm["X_dlme"])
    ax = mx.pl.confidence_map(query, key="pred", reference=ref, show=False)
    known = query.obs["pred"].to_numpy() != "unknown"
    np.testing.assert_allclose(ax.collections[1].get_array(), query.obs["pred_confidence"][known])
    np.testing.assert_allclose(ax.collections[2].get_offsets(), query.obsm["X_dlme"][~known])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda r, q: mx.pl.query_map(r, q, basis=2), TypeError, "`basis` must be a string"),
        (lambda r, q: mx.pl.query_map(r, q, basis="n2d2"), KeyError, "reference.obsm"),
        (lambda r, q: mx.pl.query_map(r.X, q), TypeError, "`reference` must be an AnnData"),
        (lambda r, q: mx.pl.query_map(r, q, color="nope"), KeyError, "`color`='nope'"),
        (lambda r, q: mx.pl.query_map(r, q, size=-1), ValueError, "`size`"),
        (lambda r, q: mx.pl.query_map(r, q[:0].copy()), ValueError, "`query` is empty"),
        (lambda r, q: mx.pl.confidence_map(q, key="nope"), KeyError, "pred|nope"),
        (lambda r, q: mx.pl.confidence_map(q, key=1), TypeError, "`key` must be a string"),
        (lambda r, q: mx.pl.confidence_map(q, key="pred", basis="umap2"), KeyError, "query.obsm"),
        (lambda r, q: mx.pl.confidence_map(q, key="pred", reference=3), TypeError, "`reference`"),
    ],
)
def test_query_plots_bad_inputs(ref_query, call, error, match):
    ref, query = ref_query
    before_r, before_q, figures = state(ref), state(query), plt.get_fignums()
    with pytest.raises(error, match=match):
        call(ref, query)
    assert_same_state(before_r, state(ref))
    assert_same_state(before_q, state(query))
    assert plt.get_fignums() == figures


def test_confidence_map_refuses_non_numeric_confidence(ref_query):
    _, query = ref_query
    query.obs["pred_confidence"] = "high"
    with pytest.raises(TypeError, match="must be numeric"):
        mx.pl.confidence_map(query, key="pred", show=False)
