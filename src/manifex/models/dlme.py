"""DLME: Deep Local-flatness Manifold Embedding (Zang et al., ECCV 2022)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from scanpy import logging as logg

from ..augment.expression import AugmentContext, Compose, ExpressionAugmentation, expression_preset
from ..losses.dlme import dlme_loss
from ..neighbors import knn_graph
from ..nn.mlp import MLP
from ..train._data import BackedMatrix, DeviceData, incremental_pca, principal_components
from ..train._distributed import gather, world
from ..train._plan import Stage, TrainingPlan
from ..train._schedules import cosine_schedule, step_schedule
from ._base import BaseModel
from ._checks import check_common, check_dims, check_fraction, check_int, check_positive
from ._inputs import apply_scale

__all__ = ["DLME"]

#: Training budgets, schedules and losses. ``"default"`` scales the number of optimiser steps with the data size
#: (see :meth:`DLME.n_steps_for`); ``"paper"`` is the reference's 1500 epochs with its
#: learning rate halved ten times and its loss (no late exaggeration).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"lr_schedule": "cosine", "exaggeration": 4.0, "exaggeration_start": 0.75},
    "fast": {"n_epochs": 100, "lr_schedule": "cosine", "exaggeration": 4.0, "exaggeration_start": 0.75},
    "paper": {"n_epochs": 1500, "lr_schedule": "step", "exaggeration": 1.0, "exaggeration_start": 0.0},
}
LR_SCHEDULES = ("cosine", "step")
INITS = ("random", "pca")


@dataclasses.dataclass
class _Inputs:
    """What DLME's loss reads during a fit."""

    data: Any  #: the rows on the device (or read from disk per minibatch)
    context: AugmentContext  #: the augmentations' kNN graph, scale and generator
    validation_context: AugmentContext  #: the same with the held-out loss's generator
    augment: ExpressionAugmentation
    exaggeration: float = 1.0  #: the attraction weight of the current step
    #: with ``init="pca"``: the scaled principal components the warm-up stage fits (all rows)
    init_target: torch.Tensor | None = None
    anchor: float = 0.0  #: the weight of the pull toward ``init_target`` at the current step


class DLME(BaseModel):
    """Deep Local-flatness Manifold Embedding as a scikit-learn style estimator.

    A parametric network ``x → z → y`` is trained so that Student-t similarities between
    outputs ``y`` (heavy tails, ν_y = 0.01) match those between latent codes ``z``
    (ν_z = 100, nearly Gaussian), with each cell paired with a kNN-mix augmentation of itself
    (formulas: :doc:`/methods/dlme`). The trained encoder embeds new cells with
    :meth:`transform`.

    Parameters
    ----------
    n_components
        Output dimension (2 for a map).
    n_neighbors
        K of the kNN graph used by the kNN-mix augmentation. Larger K mixes toward farther cells,
        which merges small clusters; smaller K keeps fine structure but is noisier.
    encoder_dims
        Widths of the encoder ``f`` (each Linear + BatchNorm + LeakyReLU(0.1)); the last is the
        dimension of ``z`` on which input similarities are computed.
    projector_dims
        Hidden widths of the projector ``g``; a plain Linear to ``n_components`` follows.
    nu_z, nu_y
        Degrees of freedom of the Student-t kernels on ``z`` and on the output. Lowering ``nu_y``
        makes tails heavier and pushes clusters further apart.
    aug_near_rate
        Divides the smallest batch distance to give ρ, the distance shift of augmented points.
    exaggeration
        Weight of the attractive term of the loss (:func:`manifex.losses.dlme_loss`); 1 is the
        paper's loss. Above 1 neighbours are pulled together harder than the rest is pushed
        apart, as t-SNE's exaggeration: clusters become more compact. ``None``: the preset's
        (4 for ``"default"`` and ``"fast"``, 1 for ``"paper"``).
    exaggeration_start
        Fraction of the step budget after which ``exaggeration`` applies; before it the weight
        is 1. 0 applies it throughout; 0.75 exaggerates the last quarter only, as t-SNE's
        *late* exaggeration, which compacts clusters after the layout has formed. ``None``:
        the preset's (0.75 for ``"default"`` and ``"fast"``). With ``early_stopping`` the
        loss must not change during training: unset values then mean the paper's loss (or
        ``exaggeration`` throughout), and ``exaggeration_start`` > 0 is refused.
    augment
        ``"knn_mix"`` (the reference), ``"default"`` (kNN-mix + mild dropout and noise),
        ``"strong"``, or a callable ``aug(x, idx, ctx)`` / list of them
        (see :mod:`manifex.augment`).
    batch_size
        Cells per step (B); the loss works on a 2B × 2B matrix.
    lr, weight_decay
        AdamW settings.
    lr_schedule
        ``"cosine"`` (decay to zero over the run) or ``"step"`` (the reference's: halved ten
        times, evenly over the run); ``None`` takes the preset's (``"step"`` for ``"paper"``,
        else ``"cosine"``). At a budget of a few thousand steps the reference's schedule spends
        its second half below 1/32 of the learning rate: on MNIST's 10,000 test digits cosine
        decay scored mean6 0.852 against 0.824 at the same 2,640 steps (see the parameter guide).
    n_epochs
        ``None`` chooses the budget from the data size (:meth:`n_steps_for`); otherwise the number
        of passes over the data.
    n_steps
        Exact number of optimiser steps; overrides ``n_epochs``.
    init
        ``"random"`` (the reference's) or ``"pca"``: a warm-up stage (``"init"``) first fits the
        output by mean squared error to the leading principal components of the input as DLME
        sees it (after ``standardize``), so the map starts from the data's large-scale geometry
        as with PCA initialisation of t-SNE / UMAP (Kobak & Linderman 2021); then the DLME stage.
        Measured effect on the global layout: see the parameter guide.
    init_scale
        With ``init="pca"``: the standard deviation of the first principal component in the
        warm-up's target (the other components keep their ratio to it).
    init_steps
        With ``init="pca"``: optimiser steps of the warm-up stage, in addition to the DLME budget;
        ``None``: a tenth of the DLME budget (at least 50).
    init_anchor
        With ``init="pca"``: weight of a pull of each minibatch's outputs toward their scaled
        principal components (the warm-up's mean squared error) added to the DLME loss, decayed
        linearly from ``init_anchor`` to 0 over the first half of the budget. 0 (default): the
        DLME stage is free once the warm-up is done.
    preset
        ``"default"``, ``"fast"`` (100 epochs) or ``"paper"`` (the reference's 1500 epochs, step
        schedule and loss without exaggeration). Explicit ``n_epochs`` / ``n_steps``,
        ``lr_schedule`` and ``exaggeration`` / ``exaggeration_start`` win over the preset.
    knn_method
        How the kNN graph is built (:func:`manifex.neighbors.knn_graph`): ``"auto"`` (exact
        search on the training device up to 20,000 cells on a CPU and 1,000,000 on a GPU, faiss
        above), ``"exact"``, ``"faiss"`` or ``"pynndescent"``. The backend, its time and, for
        approximate search, its recall against exact kNN on a sample are in ``knn_info_``.
    early_stopping
        Hold out ``validation_fraction`` of the cells, measure the loss on them once per epoch
        and stop after ``patience`` epochs without improvement, keeping the best weights (the
        step budget is then an upper bound). Off by default: DLME's budget is fixed.
    validation_fraction, patience
        Share of held-out cells and checks without improvement, with ``early_stopping``.
    standardize
        Scale each input feature to unit variance before training (stored and reapplied in
        :meth:`transform`). Off by default: PCA coordinates keep their variance ordering.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    amp
        Train in mixed precision (bfloat16 autocast) on CUDA. Off by default: the networks are
        small MLPs whose steps are bound by kernel launches, not arithmetic, so autocast only adds
        cast kernels (on an H200 a step took 4–17% longer with it; see the GPU benchmark).
    random_state
        Seed for weights, batching, augmentation and the kNN search.
    checkpoint
        File to save the training state to every ``checkpoint_every`` epochs and at the end. If
        it exists when :meth:`fit` starts, training resumes from it; a file written for other
        data (by fingerprint) or other parameters is refused.
    checkpoint_every
        Epochs between checkpoints.
    progress
        Show a progress bar (``None``: follow ``scanpy.settings.verbosity``). When the output is
        not a terminal, at most one line per epoch is printed.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> x = np.random.default_rng(0).normal(size=(200, 10)).astype("float32")
    >>> y = mx.models.DLME(n_steps=20, progress=False).fit_transform(x)
    >>> y.shape
    (200, 2)
    """

    _module_names: ClassVar[tuple[str, ...]] = ("encoder_", "projector_")
    _state_names: ClassVar[tuple[str, ...]] = ("history_", "scale_", "timings_", "knn_info_")
    _training_only_params: ClassVar[tuple[str, ...]] = ("augment",)

    @property
    def _stage_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("init", "train") if self.init == "pca" else ("train",)

    def __init__(
        self,
        n_components: int = 2,
        *,
        n_neighbors: int = 15,
        encoder_dims: Sequence[int] = (500, 300, 80),
        projector_dims: Sequence[int] = (500, 80),
        nu_z: float = 100.0,
        nu_y: float = 0.01,
        aug_near_rate: float = 1e5,
        exaggeration: float | None = None,
        exaggeration_start: float | None = None,
        augment: str | ExpressionAugmentation | Sequence[ExpressionAugmentation] = "knn_mix",
        batch_size: int = 300,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_schedule: Literal["cosine", "step"] | None = None,
        n_epochs: int | None = None,
        n_steps: int | None = None,
        init: Literal["random", "pca"] = "random",
        init_scale: float = 1.0,
        init_steps: int | None = None,
        init_anchor: float = 0.0,
        preset: Literal["default", "fast", "paper"] = "default",
        knn_method: str = "auto",
        standardize: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 5,
        device: str | torch.device = "auto",
        amp: bool = False,
        random_state: int = 0,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        progress: bool | None = None,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.encoder_dims = encoder_dims
        self.projector_dims = projector_dims
        self.nu_z = nu_z
        self.nu_y = nu_y
        self.aug_near_rate = aug_near_rate
        self.exaggeration = exaggeration
        self.exaggeration_start = exaggeration_start
        self.augment = augment
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.n_epochs = n_epochs
        self.n_steps = n_steps
        self.init = init
        self.init_scale = init_scale
        self.init_steps = init_steps
        self.init_anchor = init_anchor
        self.preset = preset
        self.knn_method = knn_method
        self.standardize = standardize
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
    def _validate_params(self) -> None:
        check_int(self, "n_components", 1)
        check_int(self, "n_neighbors", 1)
        check_int(self, "batch_size", 2)
        if self.knn_method not in ("auto", "exact", "faiss", "pynndescent"):
            raise ValueError(
                f"`knn_method` must be 'auto', 'exact', 'faiss' or 'pynndescent', got {self.knn_method!r}."
            )
        check_int(self, "n_epochs", 1, allow_none=True)
        check_int(self, "n_steps", 1, allow_none=True)
        if self.init not in INITS:
            raise ValueError(f"`init` must be 'random' or 'pca', got {self.init!r}.")
        check_positive(self, "init_scale")
        check_int(self, "init_steps", 1, allow_none=True)
        check_positive(self, "init_anchor", allow_zero=True)
        if self.init_anchor and self.init != "pca":
            raise ValueError("`init_anchor` pulls the map toward the PCs of `init='pca'`; set `init='pca'`.")
        check_int(self, "patience", 1)
        check_int(self, "checkpoint_every", 1)
        check_dims(self, "encoder_dims")
        check_dims(self, "projector_dims")
        if self.preset not in PRESETS:
            raise ValueError(f"`preset` must be one of {sorted(PRESETS)}, got {self.preset!r}.")
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"`lr_schedule` must be 'cosine', 'step' or None, got {self.lr_schedule!r}.")
        for name in ("nu_z", "nu_y", "aug_near_rate", "lr"):
            check_positive(self, name)
        check_positive(self, "exaggeration", allow_none=True)
        check_positive(self, "weight_decay", allow_zero=True)
        check_fraction(self, "validation_fraction")
        if self.exaggeration_start is not None:
            check_fraction(self, "exaggeration_start")
        if self.exaggeration_start and self.early_stopping:
            raise ValueError(
                "`exaggeration_start` > 0 changes the loss during training, so its values before and "
                "after the switch cannot be compared; use it with `early_stopping=False`."
            )
        check_common(self)

    def _augmentation(self) -> ExpressionAugmentation:
        if isinstance(self.augment, str):
            return expression_preset(self.augment)
        if callable(self.augment):
            return self.augment
        if isinstance(self.augment, Sequence):
            return Compose(self.augment)
        raise TypeError("`augment` must be a preset name, a callable or a list of callables.")

    def n_steps_for(self, n: int) -> int:
        """The optimiser-step budget used for ``n`` cells.

        Explicit ``n_steps`` wins, then ``n_epochs`` (or the preset's), else the default:
        like UMAP's epochs, a fixed number of passes over small data and fewer over large data —
        ``clip(1_000_000 / n, 10, 80)`` epochs (80 up to 12,500 cells, 10 from 100,000 on), and
        at least 300 steps. A cell needs a number of visits to be placed, so the budget grows with
        the data up to 12,500 cells (640 steps for pbmc3k, 2,640 for MNIST's 10,000 test digits)
        instead of the 2,000 steps the rule gave every set below 60,000 cells before: measured in
        ``benchmarks/results/dlme_defaults.md``.
        """
        return self._step_budget(
            n,
            preset_epochs=PRESETS[self.preset].get("n_epochs"),
            scale=1_000_000,
            epoch_range=(10, 80),
            min_steps=300,
        )

    @property
    def effective_lr_schedule(self) -> str:
        """``lr_schedule``, or the preset's when it is ``None``."""
        return self.lr_schedule or PRESETS[self.preset]["lr_schedule"]

    @property
    def effective_exaggeration(self) -> tuple[float, float]:
        """``(exaggeration, exaggeration_start)`` used in training: the parameters, or the
        preset's where they are ``None``. With ``early_stopping`` the loss must stay the same
        throughout: the start is 0 and an unset weight is 1 (the paper's loss)."""
        preset = PRESETS[self.preset]
        if self.early_stopping:
            return float(1.0 if self.exaggeration is None else self.exaggeration), 0.0
        alpha = preset["exaggeration"] if self.exaggeration is None else self.exaggeration
        start = preset["exaggeration_start"] if self.exaggeration_start is None else self.exaggeration_start
        return float(alpha), float(start)

    def _build_modules(self) -> None:
        encoder_dims = tuple(self.encoder_dims)
        self.encoder_ = MLP(self.n_features_in_, encoder_dims)
        self.projector_ = MLP(encoder_dims[-1], tuple(self.projector_dims), self.n_components)

    # ---- training: inputs, loss, optimiser and schedule, the one stage -------------------------
    def _training_inputs(self, x: Any, plan: TrainingPlan) -> _Inputs:
        augment = self._augmentation()
        n, device = x.shape[0], plan.device
        std = self.feature_std_
        self.scale_ = (
            np.where(std > 0, 1.0 / np.maximum(std, 1e-12), 1.0).astype(np.float32)
            if self.standardize
            else None
        )
        backed = isinstance(x, BackedMatrix)
        x_in = x if backed else apply_scale(x, self.scale_)
        # on disk: the augmentations' kNN graph is built on an out-of-core PCA of the rows
        knn_rep = x_in
        if backed:
            knn_rep = incremental_pca(x, 50, scale=self.scale_) if x.shape[1] > 50 else x.read(np.arange(n))
        logg.info(f"DLME: {n} cells × {x.shape[1]} features, kNN (K={self.n_neighbors}) ...")
        with plan.timed("knn_s"):
            knn, self.knn_info_ = knn_graph(
                knn_rep, self.n_neighbors, method=self.knn_method, device=device, random_state=plan.seed
            )
        if backed:
            self.knn_info_["space"] = "incremental PCA" if x.shape[1] > 50 else "input"
        # in memory x_in is already scaled; on disk each minibatch is scaled as it is read
        data = self._rows_on_device(x_in, device, self.scale_ if backed else None)
        scale = self.scale_ if self.scale_ is not None else 1.0
        ctx = AugmentContext(
            data=data,
            knn=torch.as_tensor(knn, device=device),
            feature_std=torch.as_tensor(std * scale, device=device),
            generator=plan.augment_generator,
        )
        if plan.n_validation:
            logg.info(f"    early stopping on {plan.n_validation} held-out cells")
        vctx = dataclasses.replace(ctx, generator=plan.validation_generator)
        inputs = _Inputs(data, ctx, vctx, augment)
        if self.init == "pca":
            with plan.timed("init_pca_s"):
                pcs = knn_rep  # on disk with > 50 features: the kNN graph's incremental PCA
                if not (backed and x.shape[1] > 50):  # x_in is scaled in memory, x on disk is not
                    pcs = principal_components(
                        x_in, self.n_components, scale=self.scale_ if backed else None, random_state=plan.seed
                    )
                inputs.init_target = torch.as_tensor(self._init_target(pcs), device=device)
        return inputs

    def _init_target(self, pcs: np.ndarray) -> np.ndarray:
        """``n_components`` leading PCs scaled so that the first has std ``init_scale``
        (components beyond the data's rank are 0)."""
        n, k = pcs.shape[0], min(pcs.shape[1], self.n_components)
        target = np.zeros((n, self.n_components), dtype=np.float32)
        sd = float(pcs[:, 0].std()) if k else 0.0
        if k and sd > 0:
            target[:, :k] = pcs[:, :k] * (self.init_scale / sd)
        return target

    def _loss(self, inputs: _Inputs, idx: torch.Tensor, *, held_out: bool = False) -> torch.Tensor:
        """The loss of the cells ``idx`` and their augmented views; with several processes, of
        the global batch (originals, then views)."""
        ctx = inputs.validation_context if held_out else inputs.context
        xb = inputs.data[idx]
        xa = inputs.augment(xb, idx, ctx)
        z = self.encoder_(torch.cat([xb, xa])).float()
        y = self.projector_(z).float()
        anchor = None
        if not held_out and inputs.anchor > 0:  # the pull of the originals toward their PCs
            anchor = inputs.anchor * torch.nn.functional.mse_loss(y[: len(idx)], inputs.init_target[idx])
        if not held_out and world().distributed:
            z = torch.cat([gather(t) for t in z.chunk(2)])
            y = torch.cat([gather(t) for t in y.chunk(2)])
        loss = dlme_loss(
            z,
            y,
            nu_z=self.nu_z,
            nu_y=self.nu_y,
            aug_near_rate=self.aug_near_rate,
            exaggeration=inputs.exaggeration,
        )
        return loss if anchor is None else loss + anchor

    def _init_loss(self, inputs: _Inputs, idx: torch.Tensor) -> torch.Tensor:
        """The warm-up's loss: mean squared error of the outputs of the cells ``idx`` to their
        scaled principal components."""
        y = self.projector_(self.encoder_(inputs.data[idx])).float()
        return torch.nn.functional.mse_loss(y, inputs.init_target[idx])

    def _optimizer(self, n_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        params = list(self.encoder_.parameters()) + list(self.projector_.parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.effective_lr_schedule == "step":
            return opt, step_schedule(opt, n_steps, n_drops=10, factor=0.5)
        return opt, cosine_schedule(opt, n_steps)

    def _stages(self, inputs: _Inputs, plan: TrainingPlan) -> list[Stage]:
        n_steps = self.n_steps_for(plan.n_train)
        weight, start = self.effective_exaggeration
        switch = round(start * n_steps)

        anchor_steps = max(1, n_steps // 2)

        def before_step(step: int) -> None:  # the attraction weight: 1 before the switch
            inputs.exaggeration = weight if step >= switch else 1.0
            if self.init == "pca":  # the pull toward the PCs, decayed to 0 over the first half
                inputs.anchor = self.init_anchor * max(0.0, 1.0 - step / anchor_steps)

        held_out = partial(self._loss, inputs, held_out=True)
        stages = []
        if self.init == "pca":
            init_steps = self.init_steps if self.init_steps is not None else max(50, n_steps // 10)
            stages.append(
                Stage(
                    "init",
                    modules=[self.encoder_, self.projector_],
                    loss=partial(self._init_loss, inputs),
                    optimizer=partial(self._optimizer, init_steps),
                    n_steps=init_steps,
                    desc="DLME PCA init",
                    timing="init_s",
                )
            )
        stages.append(
            Stage(
                "train",
                modules=[self.encoder_, self.projector_],
                loss=partial(self._loss, inputs),
                optimizer=partial(self._optimizer, n_steps),
                n_steps=n_steps,
                desc="DLME",
                validation_loss=lambda rows: plan.held_out_loss(held_out, rows),
                before_step=before_step,
                timing="train_s",
            )
        )
        return stages

    def _finish_fit(self, inputs: _Inputs, plan: TrainingPlan) -> None:
        self.history_ = plan.history()
        with plan.timed("embed_s"):
            self.embedding_ = self._embed(inputs.data)
        self.timings_ = plan.timings

    def _block_network(self) -> MLP:
        return self.encoder_

    def _transform(self, x: Any, *, space: str, block: int | None) -> np.ndarray:
        data = self._rows_on_device(x, self.device_, self.scale_)
        return self._embed(data, latent=space == "latent", block=block)

    @torch.no_grad()
    def _embed(self, data: DeviceData, *, latent: bool = False, block: int | None = None) -> np.ndarray:
        self.encoder_.eval()
        self.projector_.eval()
        out = []
        for xb in data.batches(4096):
            if block is not None:
                out.append(self.encoder_.forward_to(xb, block).float().cpu())
                continue
            z = self.encoder_(xb)
            out.append((z if latent else self.projector_(z)).float().cpu())
        return torch.cat(out).numpy()
