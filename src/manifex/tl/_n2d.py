from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from ..models.n2d import DEFAULT_K_RANGE, N2D
from ._docs import FIT_DOCS, doc_layer, doc_params, model_params
from ._fit import fit_embedding


def _writes(key: str) -> list[tuple[str, str]]:
    """The entries besides ``obsm["X_<key>"]`` and ``uns[key]`` that :func:`n2d` writes."""
    return [
        ("obs", key),
        ("obs", f"{key}_probability"),
        ("obsm", f"X_{key}_code"),
        ("obsm", f"X_{key}_manifold"),
        ("obsm", f"X_{key}_proba"),
    ]


def _collect(m: N2D, key: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Clusters, their probabilities, the code and the manifold of a fitted N2D, and its record."""
    k = m.n_clusters_
    cats = [str(i) for i in range(k)]
    obs = {
        key: pd.Categorical(m.labels_.astype(str), categories=cats),
        f"{key}_probability": m.proba_.max(1).astype(np.float32),
    }
    obsm = {
        f"X_{key}_code": m.code_,
        f"X_{key}_manifold": m.manifold_,
        f"X_{key}_proba": m.proba_.astype(np.float32),
    }
    uns = {
        "n_clusters": int(k),
        "k_selection": "bic" if m.bic_ is not None else "given",
        "bic": m.bic_,
        "timings": dict(m.timings_),
        "gmm": {
            "converged": bool(m.gmm_.converged_),
            "n_iter": int(m.gmm_.n_iter_),
            "lower_bound": float(m.gmm_.lower_bound_),
        },
        "early_stopping": {
            "n_validation": int(m.history_.get("n_validation", 0)),
            "best_step": m.history_.get("best_step"),
            "stopped_early": bool(m.history_.get("stopped_early", False)),
            "val_loss": m.history_.get("val_loss"),
        },
        "obsm_keys": {
            "map": f"X_{key}",
            "code": f"X_{key}_code",
            "manifold": f"X_{key}_manifold",
            "proba": f"X_{key}_proba",
        },
    }
    return obsm, obs, uns


@doc_params(
    **FIT_DOCS,
    doc_layer=doc_layer,
    doc_model_k_range=model_params(N2D, "k_range", "gmm_n_init"),
)
def n2d(
    adata: AnnData,
    *,
    n_clusters: int | None = None,
    use_rep: str | None = None,
    layer: str | None = None,
    n_latent: int | None = None,
    n_neighbors: int = 20,
    min_dist: float = 0.0,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    gmm_n_init: int = 10,
    n_epochs: int | None = None,
    n_steps: int | None = None,
    preset: Literal["default", "fast", "paper"] = "default",
    batch_size: int = 256,
    device: str = "auto",
    random_state: int = 0,
    progress: bool = True,
    key_added: str = "n2d",
    return_model: bool = False,
    copy: bool = False,
    **model_kwargs: Any,
) -> AnnData | N2D | tuple[AnnData, N2D] | None:
    """Cluster cells with N2D: autoencoder, UMAP manifold of the code, Gaussian mixture.

    Trains :class:`manifex.models.N2D` on the chosen representation and stores the clusters
    the way :func:`scanpy.tl.leiden` does, plus a 2-d map for ``sc.pl.embedding``.

    Parameters
    ----------
    adata
        Annotated data matrix: cells × genes after the usual preprocessing, or images with the
        flattened pixels (scaled to [0, 1]) in ``X``.
    n_clusters
        Number of clusters. ``None`` chooses it by the Bayesian information criterion of the
        mixture over ``k_range`` (recorded in ``uns[key_added]["bic"]``).
    use_rep
        ``obsm`` key to use (e.g. ``"X_pca"``, ``"X_scVI"``) or ``"X"`` (genes or pixels; use
        this for images and HVG matrices). Default: ``X_pca`` when present, else ``X`` itself
        (the pixels or genes, as in the reference: the autoencoder does the dimension
        reduction, so no PCA is computed on the fly here, unlike :func:`manifex.tl.dlme`).
    {doc_layer}
    n_latent
        Size of the autoencoder code; default ``n_clusters`` (10 when ``n_clusters`` is ``None``).
    n_neighbors, min_dist
        UMAP settings of the manifold and the map (reference: 20 and 0).
    {doc_model_k_range}
    n_epochs, n_steps, preset
        Autoencoder budget. By default the number of optimiser steps scales with the number of
        cells (:meth:`manifex.models.N2D.n_steps_for`); ``preset="paper"`` runs the reference's
        1000 epochs, ``"fast"`` 10 epochs.
    batch_size
        Cells per autoencoder step (reference: 256).
    {doc_device}
    {doc_random_state}
    {doc_progress}
    key_added
        Clusters go to ``obs[key_added]``, the map to ``obsm["X_<key_added>"]`` and the record to
        ``uns[key_added]``. A key that would replace an ``obs`` column that is not an earlier
        result of this key (e.g. your cell-type labels) or the input (``"pca"``) is refused;
        an earlier result is replaced with a logged warning.
    return_model
        Also return the fitted model (``model.predict`` assigns new cells to the clusters;
        ``model.save(path)`` stores it).
    {doc_copy_adata}
    **model_kwargs
        Further :class:`manifex.models.N2D` parameters (``hidden_dims``, ``lr``,
        ``manifold_dim``, ``gmm_reg_covar``, ``map_2d``, ``early_stopping``, ...). Early stopping
        on 10% held-out cells is on by default; what it did is recorded in
        ``uns[key_added]["early_stopping"]``.

    Returns
    -------
    {doc_returns_fit}

    ``adata.obs[key_added]``
        Cluster labels, categorical with categories ``"0" … "k-1"``.
    ``adata.obs[key_added + "_probability"]``
        Mixture probability of the assigned cluster.
    ``adata.obsm["X_<key_added>"]``
        2-d UMAP map of the autoencoder code.
    ``adata.obsm["X_<key_added>_code"]``, ``adata.obsm["X_<key_added>_manifold"]``
        The autoencoder code and the UMAP manifold that was clustered.
    ``adata.obsm["X_<key_added>_proba"]``
        Cluster probabilities, ``(n_obs, k)``.
    ``adata.uns[key_added]``
        ``params``, ``input``, ``loss`` per epoch, ``n_steps``, ``device``, ``seconds``,
        ``n_clusters``, ``k_selection`` (``"given"`` or ``"bic"``), ``bic`` (``k`` and ``bic``
        arrays when chosen), ``timings`` per stage and the mixture's convergence.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.n2d(adata, n_clusters=5, n_steps=50, progress=False)
    >>> adata.obs["n2d"].cat.categories.tolist()
    ['0', '1', '2', '3', '4']
    >>> ax = sc.pl.embedding(adata, basis="n2d", color="n2d", show=False)
    """
    model = N2D(
        n_clusters=n_clusters,
        n_latent=n_latent,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        k_range=k_range,
        gmm_n_init=gmm_n_init,
        n_epochs=n_epochs,
        n_steps=n_steps,
        preset=preset,
        batch_size=batch_size,
        device=device,
        random_state=random_state,
        progress=progress,
        **model_kwargs,
    )
    return fit_embedding(
        adata,
        model,
        method="n2d",
        use_rep=use_rep,
        layer=layer,
        key_added=key_added,
        random_state=random_state,
        return_model=return_model,
        copy=copy,
        min_cells=1,  # N2D's own minimum (`n_neighbors`, `n_clusters`: model._min_cells) applies
        collect=_collect,
        extra_writes=_writes,
        auto_pca=False,
    )
