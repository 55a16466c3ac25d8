from __future__ import annotations

from typing import Any, Literal

from anndata import AnnData

from ..models.dlme import DLME
from ._docs import FIT_DOCS, doc_layer, doc_params, model_params
from ._fit import fit_embedding


@doc_params(
    **FIT_DOCS,
    doc_layer=doc_layer,
    doc_model_n_neighbors=model_params(DLME, "n_neighbors"),
    doc_model_batch_augment=model_params(DLME, "batch_size", "augment"),
)
def dlme(
    adata: AnnData,
    *,
    use_rep: str | None = None,
    layer: str | None = None,
    n_components: int = 2,
    n_neighbors: int = 15,
    n_epochs: int | None = None,
    n_steps: int | None = None,
    preset: Literal["default", "fast", "paper"] = "default",
    batch_size: int = 300,
    augment: Any = "knn_mix",
    device: str = "auto",
    random_state: int = 0,
    progress: bool = True,
    key_added: str | None = None,
    return_model: bool = False,
    copy: bool = False,
    **model_kwargs: Any,
) -> AnnData | DLME | tuple[AnnData, DLME] | None:
    """Embed cells with DLME (Deep Local-flatness Manifold Embedding).

    Trains :class:`manifex.models.DLME` on the chosen representation and stores the 2-d map
    where scanpy looks for embeddings, so ``sc.pl.embedding(adata, basis="dlme")`` works.

    Parameters
    ----------
    adata
        Annotated data matrix (cells × genes), typically after normalisation, log1p, HVG
        selection and PCA.
    use_rep
        ``obsm`` key to embed (e.g. ``"X_pca"``, ``"X_scVI"``) or ``"X"``. Default: ``X_pca``
        when present, else ``X`` if it has ≤ 50 features, else a 50-component PCA of ``X``
        computed on the fly (logged; its loadings are kept so queries are projected alike).
    {doc_layer}
    n_components
        Dimension of the embedding.
    {doc_model_n_neighbors}
    n_epochs, n_steps, preset
        Training budget. By default the number of optimiser steps scales with the number of
        cells (:meth:`manifex.models.DLME.n_steps_for`); ``preset="paper"`` runs the reference's
        1500 epochs with its schedule and its loss (no late exaggeration), ``"fast"`` 100 epochs.
    {doc_model_batch_augment}
    {doc_device}
    {doc_random_state}
    {doc_progress}
    key_added
        Results go to ``obsm["X_<key_added>"]`` and ``uns[key_added]``; default ``"dlme"``.
        The input's key (``"pca"`` when training on ``X_pca``) and scanpy's ``"pca"`` /
        ``"neighbors"`` are refused; other existing entries are replaced with a logged warning.
    return_model
        Also return the fitted model (to embed new cells with :func:`manifex.tl.embed`, or
        ``model.save(path)``).
    {doc_copy_adata}
    **model_kwargs
        Further :class:`manifex.models.DLME` parameters (``nu_y``, ``lr``, ``encoder_dims``, ...).

    Returns
    -------
    {doc_returns_fit}

    ``adata.obsm["X_dlme"]``
        The embedding, ``(n_obs, n_components)``.
    ``adata.uns["dlme"]``
        ``params``, ``input``, ``loss`` per epoch, ``n_steps``, ``device`` and ``seconds``.

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> mx.tl.dlme(adata, n_steps=50, progress=False)
    >>> adata.obsm["X_dlme"].shape
    (700, 2)
    """
    model = DLME(
        n_components=n_components,
        n_neighbors=n_neighbors,
        n_epochs=n_epochs,
        n_steps=n_steps,
        preset=preset,
        batch_size=batch_size,
        augment=augment,
        device=device,
        random_state=random_state,
        progress=progress,
        **model_kwargs,
    )
    return fit_embedding(
        adata,
        model,
        method="dlme",
        use_rep=use_rep,
        layer=layer,
        key_added=key_added,
        random_state=random_state,
        return_model=return_model,
        copy=copy,
    )
