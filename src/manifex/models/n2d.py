"""N2D: (Not Too) Deep clustering (McConville, Santos-Rodriguez, Piechocki, Craddock, 2019)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from scanpy import logging as logg
from sklearn.base import ClusterMixin
from torch import nn

from ..nn.mlp import MLP
from ..train._data import DeviceData
from ..train._plan import Stage, TrainingPlan
from ._base import BaseModel
from ._n2d_checks import check_n_cells, check_params, min_cells
from ._n2d_umap import ManifoldClustering

__all__ = ["N2D"]

#: Autoencoder budgets. ``"default"`` scales the number of optimiser steps with the data size
#: (see :meth:`N2D.n_steps_for`); ``"paper"`` is the reference's 1000 epochs.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {"n_epochs": 10},
    "paper": {"n_epochs": 1000},
}

#: Early stopping needs at least this many cells (10% of them are held out).
MIN_CELLS_EARLY_STOPPING = 200

#: Number of components tried when ``n_clusters`` is not given, and the code size then used.
DEFAULT_K_RANGE = (2, 20)
DEFAULT_CODE_DIM = 10


class N2D(ClusterMixin, ManifoldClustering, BaseModel):
    """N2D clustering: autoencoder, then UMAP on the code, then a Gaussian mixture.

    1. An autoencoder ``D → 500 → 500 → 2000 → k → 2000 → 500 → 500 → D`` (ReLU, linear
       bottleneck and linear output, Glorot-uniform weights as in the reference) is trained with
       the mean squared reconstruction error and Adam.
    2. UMAP (``n_neighbors=20``, ``min_dist=0``, ``k`` components) embeds the ``k``-d code:
       the *manifold*, on which clusters are compact.
    3. A full-covariance Gaussian mixture with ``k`` components clusters the manifold
       (labels and probabilities). A separate 2-d UMAP of the code gives a map to look at.

    New cells are encoded by the trained network, placed on the fitted UMAP manifold with
    ``UMAP.transform`` and assigned by the fitted mixture (:meth:`predict`,
    :meth:`predict_proba`); nothing is refitted.

    **Reproducibility.** The reference seeds neither the network nor the batching and fits its
    mixture once (``n_init=1``), so reruns scatter (users report MNIST ACC ≈ 0.84 against the
    published 0.979). Here every random step is seeded from ``random_state``: weight
    initialisation, the minibatch order (a generator on the training device), UMAP (its
    nearest-neighbour descent, spectral initialisation and SGD; a seeded UMAP runs
    single-threaded, which is what makes it deterministic) and the mixture, so the same
    ``random_state`` on the same device gives the same clusters. The mixture is the step most
    sensitive to its start: on a ``min_dist=0`` manifold the classes are tight, separated
    blobs, and a single k-means initialisation can put two centres in one blob and one centre
    across two blobs. ``gmm_n_init`` restarts (different k-means initialisations, the fit with
    the highest likelihood kept) guard against that; ``benchmarks/bench_n2d.py`` reports the
    reference's single start on the same manifold beside it. ``gmm_reg_covar`` keeps the
    covariance of very tight blobs invertible.

    **Choosing k.** With ``n_clusters=None`` the code and manifold have ``n_latent`` (10)
    dimensions, a mixture is fitted for every ``k`` in ``k_range`` and the ``k`` with the lowest
    Bayesian information criterion is kept; the curve is stored in ``bic_``. BIC on a
    ``min_dist=0`` UMAP manifold tends to favour more components than there are classes when
    classes are elongated, so pass ``n_clusters`` when you know it.

    Parameters
    ----------
    n_clusters
        Number of clusters ``k``. ``None`` chooses it by BIC over ``k_range``.
    n_latent
        Size of the autoencoder code. Default: ``n_clusters`` (the reference), or 10 when
        ``n_clusters`` is not given.
    manifold_dim
        Dimension of the UMAP manifold that is clustered. Default: ``n_latent``.
    hidden_dims
        Widths of the encoder's hidden layers (the decoder mirrors them).
    n_neighbors, min_dist, metric
        UMAP settings for the manifold and the 2-d map.
    k_range
        Inclusive range ``(k_min, k_max)`` searched when ``n_clusters`` is ``None``.
    gmm_n_init
        Mixture restarts (k-means initialisations); the fit with the best likelihood is kept.
    gmm_reg_covar
        Added to the diagonal of every covariance.
    umap_subsample
        Above this many cells, both UMAPs are fitted on a seeded random subsample of this size
        and the other cells are placed (see ``placement``); the mixture is still fitted on
        every cell. A seeded UMAP runs single-threaded, and its cost grows faster than the
        number of cells: at 1M cells a full fit takes hours. ``None`` always fits on every cell.
    placement
        How the cells outside ``umap_subsample`` are placed on the fitted UMAPs.
        ``"nearest"``: at the position of their nearest subsample cell in code space, found by
        :func:`~manifex.neighbors.knn_query` (exact on ``device`` while small, else a faiss
        index at recall ≥ 0.95; backend, time and sampled recall in ``knn_info_``); one search
        serves both UMAPs.
        ``"transform"``: umap-learn's ``UMAP.transform`` (a neighbour query, then a third of the
        fit's epochs of optimisation: about 1.3 ms per cell on one CPU thread, twice, so
        about 35 minutes for 800,000 cells). ``"auto"``: ``"nearest"`` for the Euclidean
        metric, else ``"transform"``. On MNIST and USPS with subsamples of 20–54 % (three
        seeds, ``benchmarks/results/n2d_placement.md``) ``"nearest"`` clustered within 0.007
        ACC / NMI of ``"transform"`` in three settings and 0.08 ACC better in the fourth; an
        average over the neighbours' positions was 0.1 worse (it lands between clusters). The
        2-d map then shows the subsample's positions only. New cells (:meth:`transform`,
        :meth:`predict`) are placed as the fitted cells were: at their nearest subsample cell
        after ``"nearest"`` (so the training cells map back onto their own positions), by
        ``UMAP.transform`` after ``"transform"`` or a fit without subsample.
    map_2d
        Also compute a 2-d UMAP of the code for plotting (``embedding_``).
    batch_size, lr
        Adam settings of the autoencoder (reference: 256, 1e-3).
    n_epochs
        ``None`` chooses the budget from the data size (:meth:`n_steps_for`); otherwise the
        number of passes over the data.
    n_steps
        Exact number of optimiser steps; overrides ``n_epochs`` and the preset.
    preset
        ``"default"`` (budget that scales with the data size), ``"fast"`` (10 epochs) or
        ``"paper"`` (1000 epochs, as the reference). Explicit ``n_epochs``/``n_steps`` win.
    early_stopping
        Hold out ``validation_fraction`` of the cells (at least 20; needs 200 cells or more),
        check their reconstruction error once per epoch, stop after ``patience`` epochs without
        improvement and keep the best weights, so the budget becomes an upper bound. On small
        data (pbmc3k: 2,638 cells) the autoencoder otherwise memorises the training cells within
        a few hundred steps (held-out error rises from 2.33 at step 200 to 2.83 at step 800) and
        its code loses the cluster structure. The held-out cells are still encoded, clustered
        and returned. ``False`` trains on every cell for the whole budget, as the reference.
    validation_fraction
        Share of cells held out for early stopping.
    patience
        Epochs without a better held-out error before training stops.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    amp
        Train in mixed precision (bfloat16 autocast) on CUDA. Off by default: the networks are
        small MLPs whose steps are bound by kernel launches, not arithmetic, so autocast only adds
        cast kernels (on an H200 training took about 30% longer with it; see the GPU benchmark).
    random_state
        Seed of every random step (see above).
    progress
        Show a progress bar while training the autoencoder.

    Attributes
    ----------
    labels_
        Cluster of each training cell, ``(n,)`` int.
    proba_
        Mixture responsibilities of the training cells, ``(n, k)``.
    code_, manifold_, embedding_
        Autoencoder code, UMAP manifold and 2-d map of the training cells.
    n_clusters_
        The number of clusters used (given or chosen).
    bic_
        ``{"k": ..., "bic": ...}`` when ``k`` was chosen, else ``None``.
    history_
        Autoencoder loss per epoch, steps and seconds; with early stopping also the held-out
        loss per epoch (``val_loss``), the step whose weights were kept (``best_step``) and
        ``stopped_early``.
    knn_info_
        With ``umap_subsample`` and ``placement="nearest"``: how the nearest subsample cells
        were found (backend, seconds, sampled recall; see
        :func:`~manifex.neighbors.knn_query`), else ``None``.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> rng = np.random.default_rng(0)
    >>> x = np.vstack([rng.normal(c, 0.3, size=(60, 8)) for c in (0, 4, 8)]).astype("float32")
    >>> model = mx.models.N2D(n_clusters=3, n_steps=50, progress=False, device="cpu").fit(x)
    >>> model.labels_.shape, model.embedding_.shape
    ((180,), (180, 2))
    """

    _module_names: ClassVar[tuple[str, ...]] = ("encoder_", "decoder_")
    _extra_spaces: ClassVar[tuple[str, ...]] = ("manifold",)
    _state_names: ClassVar[tuple[str, ...]] = (
        "history_",
        "umap_",
        "umap2d_",
        "gmm_",
        "labels_",
        "n_clusters_",
        "code_dim_",
        "bic_",
        "timings_",
        "knn_info_",
    )

    def __init__(
        self,
        n_clusters: int | None = None,
        *,
        n_latent: int | None = None,
        manifold_dim: int | None = None,
        hidden_dims: Sequence[int] = (500, 500, 2000),
        n_neighbors: int = 20,
        min_dist: float = 0.0,
        metric: str = "euclidean",
        k_range: tuple[int, int] = DEFAULT_K_RANGE,
        gmm_n_init: int = 10,
        gmm_reg_covar: float = 1e-4,
        umap_subsample: int | None = 200_000,
        placement: Literal["auto", "nearest", "transform"] = "auto",
        map_2d: bool = True,
        batch_size: int = 256,
        lr: float = 1e-3,
        n_epochs: int | None = None,
        n_steps: int | None = None,
        preset: Literal["default", "fast", "paper"] = "default",
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        patience: int = 5,
        device: str | torch.device = "auto",
        amp: bool = False,
        random_state: int = 0,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        progress: bool | None = None,
    ):
        self.n_clusters = n_clusters
        self.n_latent = n_latent
        self.manifold_dim = manifold_dim
        self.hidden_dims = hidden_dims
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.k_range = k_range
        self.gmm_n_init = gmm_n_init
        self.gmm_reg_covar = gmm_reg_covar
        self.umap_subsample = umap_subsample
        self.placement = placement
        self.map_2d = map_2d
        self.batch_size = batch_size
        self.lr = lr
        self.n_epochs = n_epochs
        self.n_steps = n_steps
        self.preset = preset
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.amp = amp
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.progress = progress

    # -----------------------------------------------------------------------------------------
    def __sklearn_tags__(self):
        """A clusterer (``fit_predict``, ``predict``, ``labels_``) and a transformer whose output
        is float32 (``ClusterMixin`` clears the preserved dtypes; every map here is float32)."""
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def _validate_params(self) -> None:
        check_params(self, PRESETS)

    _min_rows = min_cells  # the fewest cells fit accepts: n_neighbors + 1, and the clusters + 1
    _check_n_rows = check_n_cells

    def n_steps_for(self, n: int) -> int:
        """The autoencoder's optimiser-step budget for ``n`` cells.

        Explicit ``n_steps`` wins, then ``n_epochs`` (or the preset's), else the default:
        ``clip(200_000 / n, 10, 300)`` epochs and at least 800 steps — about 20 epochs
        (a few minutes on a laptop CPU) for 10,000 images, more passes over small data.
        """
        return self._step_budget(
            n,
            preset_epochs=PRESETS[self.preset].get("n_epochs"),
            scale=200_000,
            epoch_range=(10, 300),
            min_steps=800,
        )

    def _code_dim(self) -> int:
        if self.n_latent is not None:
            return int(self.n_latent)
        return int(self.n_clusters) if self.n_clusters is not None else DEFAULT_CODE_DIM

    # -----------------------------------------------------------------------------------------
    def _prepare_fit_input(self, X: Any) -> Any:
        self.code_dim_ = None  # chosen in _build_modules; a loaded model keeps its own
        return super()._prepare_fit_input(X)

    def _build_modules(self) -> None:
        if getattr(self, "code_dim_", None) is None:  # a fit; a loaded model has its own
            self.code_dim_ = self._code_dim()
        d, h, k = self.n_features_in_, list(self.hidden_dims), self.code_dim_
        self.encoder_ = MLP(d, h, k, batchnorm=False, activation="relu")
        self.decoder_ = MLP(k, h[::-1], d, batchnorm=False, activation="relu")
        for m in (*self.encoder_.modules(), *self.decoder_.modules()):
            if isinstance(m, nn.Linear):  # Keras' Dense default, as in the reference
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    # ---- training: the autoencoder, then the UMAPs and the mixture (ManifoldClustering) ---------
    def _validation_fraction(self, n: int) -> float:
        return (
            float(self.validation_fraction) if self.early_stopping and n >= MIN_CELLS_EARLY_STOPPING else 0.0
        )

    def _training_inputs(self, x: Any, plan: TrainingPlan) -> Any:
        n_val = plan.n_validation
        logg.info(
            f"N2D: {x.shape[0]} cells × {x.shape[1]} features; autoencoder ≤ {self.n_steps_for(x.shape[0])} "
            f"steps, code dimension {self.code_dim_}"
            + (f", early stopping on {n_val} held-out cells" if n_val else "")
        )
        return self._rows_on_device(x, plan.device)

    def _loss(self, data: Any, idx: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error of the cells ``idx``."""
        xb = data[idx]
        return torch.nn.functional.mse_loss(self.decoder_(self.encoder_(xb)).float(), xb.float())

    def _held_out_error(self, data: Any, rows: torch.Tensor) -> float:
        """Mean squared reconstruction error of every held-out cell."""
        total = 0.0
        for s in range(0, len(rows), 1024):
            xb = data[rows[s : s + 1024]].float()
            total += float(
                torch.nn.functional.mse_loss(self.decoder_(self.encoder_(xb)).float(), xb, reduction="sum")
            )
        return total / (len(rows) * data.shape[1])

    def _optimizer(self) -> tuple[torch.optim.Optimizer, None]:
        params = list(self.encoder_.parameters()) + list(self.decoder_.parameters())
        return torch.optim.Adam(params, lr=self.lr), None

    def _stages(self, data: Any, plan: TrainingPlan) -> list[Stage]:
        return [
            Stage(
                "train",
                modules=[self.encoder_, self.decoder_],
                loss=partial(self._loss, data),
                optimizer=self._optimizer,
                n_steps=self.n_steps_for(data.shape[0]),
                desc="N2D autoencoder",
                validation_loss=partial(self._held_out_error, data),
                timing="autoencoder",
            )
        ]

    def _finish_fit(self, data: Any, plan: TrainingPlan) -> None:
        """The code of every cell, then its UMAP manifold, the mixture and the 2-d map."""
        self.history_ = plan.history()
        self.code_ = code = self._encode(data)
        self._fit_clusters(code, plan)
        self.timings_ = plan.timings

    def _transform(self, x: Any, *, space: str, block: int | None) -> np.ndarray:
        data = self._rows_on_device(x, self.device_)
        if block is not None:
            return self._encode(data, block=block)
        code = self._encode(data)
        if space == "latent":
            return code
        return self._place(code, space)

    def _block_network(self) -> MLP:
        return self.encoder_

    @torch.no_grad()
    def _encode(self, data: DeviceData, *, block: int | None = None) -> np.ndarray:
        self.encoder_.eval()
        enc = self.encoder_
        out = [
            (enc(xb) if block is None else enc.forward_to(xb, block)).float().cpu()
            for xb in data.batches(4096)
        ]
        return torch.cat(out).numpy().astype(np.float32)
