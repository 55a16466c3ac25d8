from __future__ import annotations

import numpy as np
import pytest
import torch

# small tensors gain nothing from intra-op threads, and oversubscribed cores make them spin
torch.set_num_threads(1)

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="session")
def pbmc_small():
    """scanpy's bundled pbmc68k_reduced (700 cells, has X_pca and bulk_labels)."""
    import scanpy as sc

    return sc.datasets.pbmc68k_reduced()


@pytest.fixture
def adata(pbmc_small):
    return pbmc_small.copy()


@pytest.fixture(scope="session")
def blobs():
    """Three well-separated Gaussian blobs in 20 dimensions, 240 points."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=8.0, size=(3, 20))
    y = np.repeat(np.arange(3), 80)
    x = centers[y] + rng.normal(size=(240, 20))
    return x.astype(np.float32), y


def snapshot(adata):
    """Keys and shapes of an AnnData, to check that a failed call left it unchanged."""
    return (
        adata.shape,
        tuple(adata.obs.columns),
        tuple(adata.var.columns),
        tuple(sorted(adata.obsm.keys())),
        tuple(sorted(adata.uns.keys())),
        tuple(sorted(adata.layers.keys())),
        _digest(adata.X),
        tuple((k, _digest(v)) for k, v in sorted(adata.obsm.items())),
    )


def _digest(x):
    import hashlib

    import scipy.sparse as sp

    if x is None:
        return None
    if sp.issparse(x):
        x = x.data
    return hashlib.sha1(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()
