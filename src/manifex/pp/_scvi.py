"""A batch-corrected latent from scvi-tools, as an input for :mod:`manifex.tl` (``use_rep``)."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from scanpy import logging as logg

from .._anndata import check_adata, copy_of
from .._utils import check_random_state, resolve_device

__all__ = ["scvi_latent"]


def scvi_latent(
    adata: AnnData,
    *,
    batch_key: str | None = None,
    layer: str | None = None,
    n_latent: int = 10,
    max_epochs: int | None = None,
    device: str = "auto",
    random_state: int = 0,
    progress: bool = True,
    key_added: str = "X_scVI",
    model_kwargs: dict[str, Any] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    return_model: bool = False,
    copy: bool = False,
) -> AnnData | Any | tuple[AnnData, Any] | None:
    """Train scVI on raw counts and store its latent, e.g. as the input of :func:`manifex.tl.dlme`.

    The scvi-tools workflow in one call: ``SCVI.setup_anndata`` with ``layer`` and
    ``batch_key``, an ``SCVI`` model with ``n_latent`` dimensions, ``train`` on ``device`` and
    the posterior means of ``get_latent_representation`` in ``obsm[key_added]``. With a
    ``batch_key`` the latent is corrected for the batches, so a map trained on it with
    ``use_rep=key_added`` mixes them. Needs scvi-tools (``pip install manifex[scvi]``).

    Parameters
    ----------
    adata
        Annotated data matrix (cells × genes) whose ``X`` or ``layers[layer]`` holds raw counts
        (non-negative; scVI models counts with a negative binomial, so use the counts of the
        genes you keep, e.g. the highly variable ones, not normalised or scaled values).
    batch_key
        ``obs`` column of the batches to correct for (``None``: one batch).
    layer
        ``layers`` key of the counts (``None``: ``X``).
    n_latent
        Dimension of the latent.
    max_epochs
        Training epochs (``None``: scvi-tools' default, fewer for more cells).
    device
        ``"auto"`` (CUDA, then MPS, then the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or ``"mps"``.
    random_state
        Seed of scvi-tools (``scvi.settings.seed``): the same seed on the same device gives the
        same latent. The caller's torch, numpy and Python generators are restored afterwards.
    progress
        Show scvi-tools' progress bar and lightning's messages (the devices found, the seed,
        the end of training); ``False`` keeps them to warnings.
    key_added
        ``obsm`` key of the latent; it must start with ``"X_"`` (scanpy's prefix of a basis).
        The parameters and training time go to ``uns[key_added[2:]]`` (``uns["scVI"]``).
    model_kwargs, train_kwargs
        Further arguments of ``scvi.model.SCVI`` (e.g. ``n_layers``, ``gene_likelihood``) and
        of its ``train`` (e.g. ``plan_kwargs={"lr": 4e-3}``, ``batch_size``).
    return_model
        Also return the trained ``scvi.model.SCVI`` (to embed query cells with
        ``model.get_latent_representation(query)``).
    copy
        Work on a copy of ``adata`` and return it.

    Returns
    -------
    ``None``, or the copy when ``copy=True``, the model when ``return_model=True``, or
    ``(adata_copy, model)`` with both. Writes

    ``adata.obsm[key_added]``
        The latent, ``(n_obs, n_latent)`` float32.
    ``adata.uns[key_added[2:]]``
        ``params``, ``layer``, ``batch_key``, ``n_epochs``, ``device`` and ``seconds``.

    scvi-tools also registers ``adata`` (``obs["_scvi_batch"]``, ``obs["_scvi_labels"]`` and
    ``uns["_scvi_uuid"]``, ``uns["_scvi_manager_uuid"]``), as ``SCVI.setup_anndata`` always does.

    Examples
    --------
    >>> import anndata as ad, manifex as mx
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(rng.poisson(2.0, (200, 40)).astype(np.float32))
    >>> adata.obs["batch"] = np.repeat(["ctrl", "stim"], 100)
    >>> mx.pp.scvi_latent(adata, batch_key="batch", max_epochs=2, progress=False)
    >>> adata.obsm["X_scVI"].shape
    (200, 10)

    Then embed the latent: ``mx.tl.dlme(adata, use_rep="X_scVI")``. On real data, keep the raw
    counts in a layer before normalising (``adata.layers["counts"] = adata.X.copy()``) and pass
    ``layer="counts"``.
    """
    check_adata(adata)
    seed = check_random_state(random_state)
    dev = resolve_device(device)
    if not isinstance(key_added, str) or not key_added.startswith("X_") or key_added == "X_":
        raise ValueError(
            f"`key_added` must be an obsm key starting with 'X_' (e.g. 'X_scVI'), got {key_added!r}."
        )
    if isinstance(n_latent, bool) or not isinstance(n_latent, int | np.integer) or n_latent < 1:
        raise ValueError(f"`n_latent` must be a positive integer, got {n_latent!r}.")
    if max_epochs is not None and (
        isinstance(max_epochs, bool) or not isinstance(max_epochs, int | np.integer) or max_epochs < 1
    ):
        raise ValueError(f"`max_epochs` must be a positive integer or None, got {max_epochs!r}.")
    if batch_key is not None and batch_key not in adata.obs:
        raise KeyError(f"`batch_key`={batch_key!r} is not a column of adata.obs ({list(adata.obs.columns)}).")
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"`layer`={layer!r} is not among adata.layers ({list(adata.layers.keys())}).")
    _check_counts(
        adata.layers[layer] if layer is not None else adata.X,
        f"adata.layers[{layer!r}]" if layer is not None else "adata.X",
    )

    scvi = _import_scvi()
    target = copy_of(adata) if copy else adata
    accelerator, devices = _lightning_device(dev)
    model_kwargs = {"n_latent": int(n_latent), **(model_kwargs or {})}
    train_kwargs = dict(train_kwargs or {})
    start = time.perf_counter()
    with _generators_restored(dev), _quiet(not progress):
        scvi.settings.seed = seed
        scvi.model.SCVI.setup_anndata(target, layer=layer, batch_key=batch_key)
        model = scvi.model.SCVI(target, **model_kwargs)
        model.train(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            enable_progress_bar=progress,
            **train_kwargs,
        )
        latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
    seconds = time.perf_counter() - start
    target.obsm[key_added] = latent
    target.uns[key_added[2:]] = {
        "params": {"n_latent": int(n_latent), "max_epochs": max_epochs, "random_state": seed},
        "layer": layer,
        "batch_key": batch_key,
        "n_epochs": int(model.history["elbo_train"].shape[0]) if "elbo_train" in model.history else 0,
        "device": str(dev),
        "seconds": float(seconds),
    }
    logg.info(
        f"    finished scVI in {seconds:.1f}s on {dev}: added obsm[{key_added!r}], uns[{key_added[2:]!r}]"
    )
    if copy and return_model:
        return target, model
    if return_model:
        return model
    return target if copy else None


def _import_scvi() -> Any:
    """scvi-tools, imported on first use (it takes seconds to import and is an optional extra)."""
    try:
        import scvi
    except ImportError as e:  # pragma: no cover - scvi-tools is in the test extra
        raise ImportError("`mx.pp.scvi_latent` needs scvi-tools: `pip install manifex[scvi]`.") from e
    return scvi


def _check_counts(x: Any, name: str) -> None:
    """Refuse a matrix that cannot be counts: not numeric, negative or not finite values."""
    if x is None:
        raise ValueError(f"`{name}` is empty (None); scVI needs raw counts.")
    if np.dtype(x.dtype).kind not in "biuf":
        raise TypeError(f"`{name}` must hold numbers (raw counts), got dtype {x.dtype}.")
    values = x.data if sp.issparse(x) else np.asarray(x)
    if not np.isfinite(values).all():
        raise ValueError(f"`{name}` contains NaN or infinite values; scVI needs raw counts.")
    if values.size and values.min() < 0:
        raise ValueError(
            f"`{name}` has negative values: scVI needs raw counts (not log-normalised or scaled data); "
            "pass the layer that holds them with `layer=`."
        )


def _lightning_device(dev: torch.device) -> tuple[str, Any]:
    """The ``accelerator`` and ``devices`` of lightning (scvi-tools' trainer) for a torch device."""
    if dev.type == "cuda":
        return "gpu", [dev.index or 0]
    if dev.type == "mps":
        return "mps", 1
    return "cpu", "auto"


@contextlib.contextmanager
def _generators_restored(dev: torch.device) -> Iterator[None]:
    """Restore torch's, numpy's and Python's global generators after the block (scvi-tools seeds
    them all)."""
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002 (the legacy global one)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


#: Loggers of scvi-tools and of its trainer, lightning (which sets them to INFO on import).
_LOGGERS = ("scvi", "lightning", "lightning.pytorch", "lightning.fabric")


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Keep scvi-tools' and lightning's loggers to warnings inside the block (when ``enabled``)."""
    loggers = [logging.getLogger(name) for name in _LOGGERS] if enabled else []
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
