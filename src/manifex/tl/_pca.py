"""PCA of expression data: fitted on the training genes, and projections on a PCA.

A model trained on a PCA (one manifex computed, or the reference's ``sc.pp.pca``) embeds a query
by projecting the query's genes on the *training* loadings, centred with the *training* gene
means, never by a PCA of the query. Everything about those projections is here:

* :func:`fit_pca` -- loadings and means of the PCA manifex computes when there is no ``X_pca``;
* :func:`project` -- ``(x − mean) @ components.T`` without densifying sparse or on-disk data;
* :func:`reference_loadings` / :func:`check_reproduces` -- the loadings of a reference's
  ``varm["PCs"]`` and the check that its ``X`` still gives its ``obsm["X_pca"]``;
* :func:`pcs_fingerprint` -- to recognise data projected on the same PCs later.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from scanpy import logging as logg
from sklearn.decomposition import PCA

from ..train._data import BackedMatrix, fit_incremental_pca

__all__ = ["check_reproduces", "fit_pca", "pcs_fingerprint", "project", "reference_loadings"]

#: Largest relative error allowed when re-projecting the reference on its own PCs.
PCA_REPRO_ERROR = 0.1
#: Cells of the reference the reproduction check projects.
REPRO_CELLS = 200


def fit_pca(x: Any, n_comps: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA loadings ``(n_comps, n_genes)`` and gene means, float32; sparse input is centred
    implicitly (never densified), a backed matrix is fitted chunk by chunk (incremental PCA)."""
    if isinstance(x, BackedMatrix):
        ipca = fit_incremental_pca(x, n_comps, check_finite=True)
        return ipca.components_.astype(np.float32), ipca.mean_.astype(np.float32)
    pca = PCA(n_components=n_comps, svd_solver="arpack", random_state=random_state).fit(x)
    return pca.components_.astype(np.float32), pca.mean_.astype(np.float32)


def project(x: Any, comps: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``(x − mean) @ comps.T`` without densifying ``x``; a backed matrix chunk by chunk."""
    if isinstance(x, BackedMatrix):
        out = np.empty((x.shape[0], comps.shape[0]), dtype=np.float32)
        for s, block in x.chunks():
            out[s : s + block.shape[0]] = project(block, comps, mean)
        return out
    out = np.asarray(x @ comps.T, dtype=np.float32) - (mean @ comps.T)[None, :]
    return np.ascontiguousarray(out, dtype=np.float32)


def pcs_fingerprint(pcs: Any) -> str:
    """A short hash of PCA loadings, to recognise data projected on the same PCs later."""
    arr = np.ascontiguousarray(np.asarray(pcs, dtype=np.float32))
    return hashlib.sha1(arr.tobytes()).hexdigest()[:16]


def reference_loadings(pcs: Any, n_comp: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The genes a reference's PCA used (rows of ``varm["PCs"]``) and their loadings
    ``(n_comp, n_used)``: an HVG-restricted PCA leaves the other rows zero (or NaN)."""
    pcs = np.asarray(pcs, dtype=np.float32)
    n_comp = pcs.shape[1] if n_comp is None else n_comp
    if n_comp > pcs.shape[1]:
        raise ValueError(f"The model needs {n_comp} PCs but reference.varm['PCs'] has {pcs.shape[1]}.")
    rows = np.flatnonzero(np.all(np.isfinite(pcs), axis=1) & np.any(pcs != 0, axis=1))
    if rows.size == 0:
        raise ValueError("reference.varm['PCs'] has no finite, non-zero loadings.")
    return rows, np.ascontiguousarray(pcs[rows, :n_comp].T)


def check_reproduces(xr: Any, comps: np.ndarray, mean: np.ndarray, x_pca: Any) -> None:
    """The reference's genes ``xr`` projected on its loadings give back its ``obsm["X_pca"]``
    (the first :data:`REPRO_CELLS` cells): else its ``X`` was changed after ``sc.pp.pca``."""
    m = min(xr.shape[0], REPRO_CELLS)
    got = project(xr[:m], comps, mean)
    want = np.asarray(x_pca)[:m, : comps.shape[0]]
    err = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12)
    if not err <= PCA_REPRO_ERROR:
        raise ValueError(
            "Projecting reference.X on reference.varm['PCs'] does not reproduce reference.obsm['X_pca'] "
            f"(relative error {err:.2g}): reference.X was changed after sc.pp.pca. Restore the matrix "
            "the PCA was computed from."
        )
    if err > 1e-3:
        logg.warning(
            f"projecting reference.X on its PCs reproduces obsm['X_pca'] only to {err:.1%}; "
            "was reference.X modified after sc.pp.pca?"
        )
