"""The expression-coverage check behind ``mx.tl.transfer_labels``'s unknown calls."""

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from conftest import snapshot

import manifex as mx
from manifex.tl._coverage import expression_pair, reference_coverage


def test_coverage_hand_computed():
    # 1-d, no PCA: reference at 0, 2, 4, 6 and query at 1, 3, 5, 7; 8 cells, so every cell's
    # neighbours are all 7 others (K = min(max(1, ⌈5/p0⌉), 7) with p0 = 4/7).
    # Reference share among a query cell's neighbours: 4/7; among a reference cell's: 3/7.
    # Smoothed for a query cell: (4·3/7 + 3·4/7)/7 = 24/49; coverage = (24/49)/(4/7) = 6/7.
    xr = np.array([[0.0], [2.0], [4.0], [6.0]], dtype=np.float32)
    xq = np.array([[1.0], [3.0], [5.0], [7.0]], dtype=np.float32)
    cov, info = reference_coverage(xq, xr, n_neighbors=1, n_pcs=1)
    assert info["n_neighbors"] == 7 and info["p0"] == pytest.approx(4 / 7)
    np.testing.assert_allclose(cov, 6 / 7, rtol=1e-6)
    # the documented limit: a new population no larger than K cannot be told apart. Moved far
    # away, the 4 query cells still have all 7 others as neighbours, so coverage is unchanged.
    cov_far, _ = reference_coverage(xq + 100.0, xr, n_neighbors=3, n_pcs=1)
    np.testing.assert_allclose(cov_far, 6 / 7, rtol=1e-6)


def test_coverage_separates_a_population_larger_than_k():
    rng = np.random.default_rng(0)
    xr = rng.normal(size=(300, 5)).astype(np.float32)
    xq = np.vstack([rng.normal(size=(300, 5)), rng.normal(size=(60, 5)) + 20]).astype(np.float32)
    cov, info = reference_coverage(xq, xr, n_neighbors=15, n_pcs=5)
    assert info["n_neighbors"] == 15
    assert np.median(cov[:300]) == pytest.approx(1.0, abs=0.15)  # mixed: about 1
    assert (cov[300:] == 0).all()  # a query-only population: no reference neighbours


def _expression_pair_data(seed=0, n_per=150, novel=True):
    """Genes 0-29 tell types A, B, C apart; type D equals A there and differs in genes 60-69."""
    rng = np.random.default_rng(seed)
    n_genes = 100
    prof = np.zeros((4, n_genes))
    prof[0, 0:10] = prof[1, 10:20] = prof[2, 20:30] = 3.0
    prof[3, 0:10] = 3.0
    prof[3, 60:70] = 3.0

    def cells(types):
        y = np.repeat(types, n_per)
        x = np.clip(prof[y] + rng.normal(scale=0.5, size=(len(y), n_genes)), 0, None)
        return x.astype(np.float32), np.array(list("ABCD"))[y]

    xr, yr = cells([0, 1, 2])
    xq, yq = cells([0, 1, 2, 3] if novel else [0, 1, 2])
    genes = [f"g{i}" for i in range(n_genes)]
    ref = AnnData(xr, var=pd.DataFrame(index=genes))
    ref.obs["label"] = pd.Categorical(yr)
    query = AnnData(xq, var=pd.DataFrame(index=genes))
    # the embedding both share: the reference's PCA (a new type has no axis of its own there)
    mu = xr.mean(0)
    _, _, vt = np.linalg.svd(xr - mu, full_matrices=False)
    ref.obsm["X_emb"] = (xr - mu) @ vt[:5].T
    query.obsm["X_emb"] = (xq - mu) @ vt[:5].T
    return ref, query, yq


def test_transfer_labels_coverage_calls_a_type_the_reference_lacks():
    ref, query, truth = _expression_pair_data()
    novel = truth == "D"
    mx.tl.transfer_labels(query, ref, label_key="label", basis="emb", unknown="distance", key_added="d")
    pred_d = query.obs["d"].astype(str).to_numpy()
    assert (pred_d[novel] == "unknown").mean() < 0.1  # D sits on A in the reference's PCs
    mx.tl.transfer_labels(query, ref, label_key="label", basis="emb", key_added="p")  # unknown="auto"
    pred = query.obs["p"].astype(str).to_numpy()
    assert (pred[novel] == "unknown").mean() >= 0.9
    assert (pred[~novel] == truth[~novel]).mean() >= 0.97
    u = query.uns["p"]
    assert list(u["unknown_checks"]) == ["distance", "coverage"] and u["coverage"]["n_genes"] == 100
    cov = query.obs["p_coverage"].to_numpy()
    assert np.median(cov[~novel]) > 0.8 and np.median(cov[novel]) < 0.1
    assert u["n_unknown"] == (pred == "unknown").sum()


def test_coverage_scales_an_unscaled_query_like_the_reference():
    ref, query, _ = _expression_pair_data(novel=False)
    scaled = ref.copy()
    mean, std = scaled.X.mean(0), scaled.X.std(0)
    scaled.X = (scaled.X - mean) / std
    scaled.var["mean"], scaled.var["std"] = mean, std
    q_scaled = query.copy()
    q_scaled.X = (q_scaled.X - mean) / std
    a = expression_pair(query, scaled)
    b = expression_pair(q_scaled, scaled)
    assert a[2]["scaled_query_like_reference"] and not b[2]["scaled_query_like_reference"]
    np.testing.assert_allclose(a[0], b[0], atol=1e-4)
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)
    del scaled.var["mean"]
    assert "var lacks" in expression_pair(query, scaled)


def test_coverage_uses_highly_variable_genes_and_needs_shared_genes():
    ref, query, _ = _expression_pair_data(novel=False)
    ref.var["highly_variable"] = np.arange(100) < 60
    assert expression_pair(query, ref)[2]["n_genes"] == 60
    q = query[:, :40].copy()
    assert "share 40 genes" in expression_pair(q, ref)


def test_coverage_auto_skips_and_explicit_coverage_errors():
    ref, query, _ = _expression_pair_data(novel=False)
    q = query[:, :20].copy()  # 20 shared genes: too few
    mx.tl.transfer_labels(q, ref, label_key="label", basis="emb", key_added="p")
    assert list(q.uns["p"]["unknown_checks"]) == ["distance"]
    assert "share 20 genes" in q.uns["p"]["coverage"]["skipped"]
    assert "p_coverage" not in q.obs
    before = snapshot(q)
    with pytest.raises(ValueError, match=r"coverage check.*share 20 genes"):
        mx.tl.transfer_labels(q, ref, label_key="label", basis="emb", unknown="coverage", key_added="c")
    with pytest.raises(ValueError, match="`unknown`"):
        mx.tl.transfer_labels(q, ref, label_key="label", basis="emb", unknown="maybe")
    with pytest.raises(ValueError, match="min_coverage"):
        mx.tl.transfer_labels(q, ref, label_key="label", basis="emb", min_coverage=0)
    with pytest.raises(KeyError, match="coverage_layer"):
        mx.tl.transfer_labels(query.copy(), ref, label_key="label", basis="emb", coverage_layer="counts")
    bad = query.copy()
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mx.tl.transfer_labels(bad, ref, label_key="label", basis="emb", unknown="coverage")
    assert "label_transferred" not in bad.obs
    assert snapshot(q) == before


def test_coverage_warns_when_query_and_reference_do_not_mix():
    ref, query, _ = _expression_pair_data(novel=False)
    shifted = query.copy()
    shifted.X = shifted.X + 5.0  # a batch effect on every gene
    with pytest.warns(UserWarning, match="do not mix"):
        mx.tl.transfer_labels(shifted, ref, label_key="label", basis="emb", key_added="p")
    assert (shifted.obs["p"] == "unknown").mean() > 0.5
    # the distance check alone does not look at expression
    mx.tl.transfer_labels(shifted, ref, label_key="label", basis="emb", unknown="distance", key_added="p")
    assert "p_coverage" not in shifted.obs and "p_novelty" in shifted.obs  # no stale column


def test_coverage_spares_cells_named_by_support_examples():
    ref, query, truth = _expression_pair_data()
    novel = truth == "D"
    support = query[np.flatnonzero(novel)[:1]].copy()
    support.obs["label"] = pd.Categorical(["D"])
    mx.tl.transfer_labels(
        query, ref, label_key="label", basis="emb", method="prototype", support=support, unknown="coverage"
    )
    pred = query.obs["label_transferred"].astype(str).to_numpy()
    # D sits on A in this embedding, so the one D prototype competes with A's; whichever it
    # gets, a D cell is never forced into A: coverage calls those unknown
    assert not (pred[novel] == "A").any()
    assert ((pred[novel] == "D") | (pred[novel] == "unknown")).all()
