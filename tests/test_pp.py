"""``mx.pp.scvi_latent``: the scvi-tools workflow in one call, checked against that workflow."""

from __future__ import annotations

import random

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import manifex as mx

scvi = pytest.importorskip("scvi")

N_CELLS, N_GENES = 160, 30
FAST = {"max_epochs": 3, "progress": False, "device": "cpu"}


def _counts(seed: int = 0) -> ad.AnnData:
    """Counts of two batches with a batch effect on half of the genes, raw counts in a layer and
    log-normalised values in ``X`` (as after ``sc.pp.log1p``)."""
    rng = np.random.default_rng(seed)
    rate = np.full((N_CELLS, N_GENES), 2.0)
    rate[N_CELLS // 2 :, : N_GENES // 2] *= 3.0
    counts = rng.poisson(rate).astype(np.float32)
    adata = ad.AnnData(np.log1p(counts) - 1.0)  # negative values: not counts
    adata.layers["counts"] = sp.csr_matrix(counts)
    adata.obs["batch"] = np.repeat(["ctrl", "stim"], N_CELLS // 2)
    return adata


def test_latent_is_the_scvi_workflow_and_is_recorded():
    adata = _counts()
    mx.pp.scvi_latent(adata, batch_key="batch", layer="counts", n_latent=4, **FAST)

    # the same workflow written out with scvi-tools
    ref = _counts()
    scvi.settings.seed = 0
    scvi.model.SCVI.setup_anndata(ref, layer="counts", batch_key="batch")
    vae = scvi.model.SCVI(ref, n_latent=4)
    vae.train(max_epochs=3, accelerator="cpu", enable_progress_bar=False)
    expected = vae.get_latent_representation()

    got = adata.obsm["X_scVI"]
    assert got.shape == (N_CELLS, 4) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    rec = adata.uns["scVI"]
    assert rec["batch_key"] == "batch" and rec["layer"] == "counts" and rec["n_epochs"] == 3
    assert rec["device"] == "cpu" and rec["params"]["n_latent"] == 4 and rec["seconds"] > 0


def test_same_seed_same_latent_and_caller_generators_untouched():
    torch.manual_seed(123)
    np.random.seed(5)  # noqa: NPY002 (the legacy global generator scvi-tools seeds)
    random.seed(7)
    before = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002
    a, b, c = _counts(), _counts(), _counts()
    mx.pp.scvi_latent(a, layer="counts", key_added="X_latent", **FAST)
    after = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002
    assert torch.equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2] == after[2]

    model = mx.pp.scvi_latent(b, layer="counts", key_added="X_latent", return_model=True, **FAST)
    np.testing.assert_array_equal(a.obsm["X_latent"], b.obsm["X_latent"])
    assert isinstance(model, scvi.model.SCVI)
    np.testing.assert_allclose(model.get_latent_representation(b), b.obsm["X_latent"], rtol=1e-6)
    mx.pp.scvi_latent(c, layer="counts", key_added="X_latent", random_state=1, **FAST)
    assert not np.array_equal(a.obsm["X_latent"], c.obsm["X_latent"])


def test_copy_leaves_the_input_alone():
    adata = _counts()
    out, model = mx.pp.scvi_latent(adata, layer="counts", copy=True, return_model=True, **FAST)
    assert "X_scVI" in out.obsm and "X_scVI" not in adata.obsm and "_scvi_batch" not in adata.obs
    assert isinstance(model, scvi.model.SCVI)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "negative values"),  # X holds log-normalised values
        ({"layer": "raw"}, KeyError, "layer"),
        ({"layer": "counts", "batch_key": "donor"}, KeyError, "batch_key"),
        ({"layer": "counts", "key_added": "scVI"}, ValueError, "X_"),
        ({"layer": "counts", "n_latent": 0}, ValueError, "n_latent"),
        ({"layer": "counts", "max_epochs": 2.5}, ValueError, "max_epochs"),
        ({"layer": "counts", "random_state": -1}, ValueError, "random_state"),
        ({"layer": "counts", "device": "tpu"}, ValueError, "device"),
    ],
)
def test_bad_input_is_refused_before_training(kwargs, error, match):
    adata = _counts()
    with pytest.raises(error, match=match):
        mx.pp.scvi_latent(adata, **{**FAST, **kwargs})
    assert "X_scVI" not in adata.obsm and "_scvi_batch" not in adata.obs


def test_non_finite_counts_are_refused():
    adata = _counts()
    adata.layers["counts"] = adata.layers["counts"].toarray()
    adata.layers["counts"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mx.pp.scvi_latent(adata, layer="counts", **FAST)
