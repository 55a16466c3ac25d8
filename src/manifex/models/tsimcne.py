"""t-SimCNE: contrastive 2-d maps of images (Böhm, Berens & Kobak, ICLR 2023), and of expression data."""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch
from scanpy import logging as logg
from torch import nn

from .._utils import check_random_state, make_generator
from ..losses.infonce import cauchy_infonce
from ..neighbors import knn_graph, knn_indices
from ..nn.resnet import projection_head
from ..train._data import BackedMatrix, incremental_pca
from ..train._distributed import gather, world
from ..train._plan import Stage, TrainingPlan
from ..train._schedules import cosine_schedule
from ._base import BaseModel
from ._checks import check_common, check_dims, check_fraction, check_int, check_positive, check_stage_epochs
from ._images import ImagesOrMatrix, prepare_images
from ._tsimcne_net import Net, backbone_for, feature_width, time_steps
from ._tsimcne_views import augmentation_for, make_views

__all__ = ["PRESETS", "TSimCNE", "prepare_images"]  # prepare_images: see _images

#: Training budgets: ``n_epochs`` = (stage 1, stage 2, stage 3) epochs, the batch size used
#: when ``batch_size`` is not given and the stage-3 learning-rate factor used when
#: ``finetune_lr_factor`` is not given (1/1000, the paper's, unless stated). ``"quick"`` is a
#: smoke-test / demo budget, ``"cpu"`` the documented CPU budget for small images (USPS, MNIST:
#: see ``benchmarks/results/tsimcne.md``), ``"default"`` a budget for a GPU, ``"paper"`` the full
#: budget of the paper. ``"cpu"`` and ``"default"`` hold the same schedule: on the 2-core CPU of
#: the benchmarks a step of the small ResNet trains about 2,600 images/s on one thread, so 500
#: epochs of the 10,000 MNIST test digits take about half an hour, and the shorter schedule the
#: ``"cpu"`` preset used before (60 / 5 / 60 epochs, stage 3 at the full learning rate) mapped
#: MNIST below UMAP (kNN 0.897 against 0.928).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"n_epochs": (20, 5, 10), "batch_size": 256},
    "cpu": {"n_epochs": (400, 25, 75), "batch_size": 512},
    "default": {"n_epochs": (400, 25, 75), "batch_size": 512},
    "paper": {"n_epochs": (1000, 50, 450), "batch_size": 512},
}

_STAGES = ("pretrain", "linear", "finetune")


@dataclasses.dataclass
class _Inputs:
    """What t-SimCNE's loss reads during a fit."""

    data: Any  #: the rows or images on the device (or read from disk per minibatch)
    views: Callable  #: ``views(idx, generator)``: two augmented views of the rows ``idx``
    map_layer: torch.nn.Linear  #: the 2-d output layer that replaces stage 1's head output
    augment_seconds: float = 0.0  #: time spent in augmentation during the current stage


class TSimCNE(ImagesOrMatrix, BaseModel):
    """t-SimCNE: a contrastive network trained to output a 2-d map directly.

    Two augmented views of each image are pulled together and all other images pushed apart
    with an InfoNCE loss that uses the Cauchy similarity ``1 / (1 + d²)`` (a t-SNE-like kernel),
    in three stages: (1) the whole network with a 128-d output, (2) a fresh linear 2-d output
    layer on the frozen network, (3) the whole network at ``lr / 1000``. SGD with momentum 0.9,
    weight decay 5e-4, ``lr = 0.03 · batch_size / 256``, linear warm-up in stages 1 and 3,
    cosine decay in each stage, gradient clipping by value at 4 (formulas and parameter guide:
    :doc:`/methods/tsimcne`).

    **Images** (``X`` of shape ``(n, H, W)`` or ``(n, H, W, C)``, uint8 or float) are kept on the
    training device as one uint8 tensor; each minibatch is converted to floats in [0, 1] and
    augmented there (:mod:`manifex.augment.image`). The backbone is the CIFAR-style ResNet-18
    (512-d features) from 32 px up, and a small ResNet (128-d features) below
    (:func:`manifex.nn.make_backbone`).

    **Expression data** (``X`` of shape ``(n, features)``, e.g. PCA coordinates) is a variant
    not in the paper: the backbone is an MLP (``mlp_dims``) and the two views come from the
    expression augmentations (kNN-mix toward a neighbour, feature dropout, Gaussian noise;
    :func:`manifex.augment.expression_preset` ``"default"``).

    Parameters
    ----------
    n_components
        Dimension of the final map (2).
    backbone
        ``"auto"``, ``"small"``, ``"resnet18"`` (images), ``"mlp"`` (expression; chosen
        automatically for 2-d input), or your own :class:`torch.nn.Module` mapping a batch to
        ``(B, d)`` features.
    pretrain_dim
        Output dimension of stage 1 (128 in the paper).
    head_hidden
        Width of the head's hidden layer (1024 in the paper).
    mlp_dims
        Hidden widths of the MLP backbone for expression data.
    augment
        ``"auto"`` (images: ``"natural"`` for RGB, ``"digits"`` for other channel counts;
        expression: ``"default"``), an image preset (``"natural"``, ``"digits"``,
        ``"microscopy"``, ``"none"``), an expression preset (``"knn_mix"``, ``"default"``,
        ``"strong"``), or a callable: ``aug(x, generator)`` for images (``x`` float in [0, 1],
        ``(B, C, H, W)``), ``aug(x, idx, ctx)`` for expression data.
    n_neighbors
        Neighbours for the kNN-based expression augmentations.
    batch_size
        Images per step; ``None`` takes the preset's (512 for ``"cpu"``, ``"default"`` and
        ``"paper"``, while the paper itself uses 1024; 256 for ``"quick"``, which gives more
        steps per epoch).
    lr
        Base learning rate; ``None`` → ``0.03 · batch_size / 256``.
    momentum, weight_decay
        SGD settings.
    n_epochs
        ``(stage 1, stage 2, stage 3)`` epochs; overrides ``preset``.
    preset
        ``"quick"`` (20, 5, 10, batches of 256), ``"cpu"`` and ``"default"`` (400, 25, 75) or
        ``"paper"`` (1000, 50, 450) epochs (batches of 512).
    warmup_epochs
        Linear warm-up in stages 1 and 3, at most 10% of the stage.
    finetune_lr_factor
        Stage 3 runs at ``lr × finetune_lr_factor``. ``None``: 1/1000 as in the paper. On a
        short stage 1 the 2-d stage needs full-rate steps (see the parameter guide).
    grad_clip_value
        Clip gradients by value.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    amp
        Mixed precision on CUDA.
    random_state
        Seed of weights, batching and augmentations. Same seed + same device → same map.
    pixel_range
        ``(lo, hi)`` pixel values mapped to black and white; ``None`` infers it from the values
        and dtype (uint8: 0–255; bool or values within [0, 1]: 0–1; values within [0, 255]:
        0–255; else the training images' own min and max), the same way for queries
        (:func:`~manifex.models.tsimcne.prepare_images`).
    early_stopping
        Hold out ``validation_fraction`` of the training data and stop a stage after
        ``patience`` epochs without improvement of its held-out loss, keeping the best weights.
        Off by default (the paper trains a fixed budget).
    validation_fraction, patience
        Share of held-out data and checks without improvement, with ``early_stopping``.
    checkpoint
        File to save the training state to every ``checkpoint_every`` epochs and at the end of
        each stage. If it exists when :meth:`fit` starts, training resumes from it; a file
        written for other data (by fingerprint) or other parameters is refused.
    checkpoint_every
        Epochs between checkpoints.
    progress
        Show a progress bar per stage (``None``: follow ``scanpy.settings.verbosity``; at most
        one line per epoch when the output is not a terminal).

    Attributes
    ----------
    embedding_
        The map of the training data, ``(n, n_components)``.
    features_
        Backbone features of the training data, ``(n, feature_dim_)`` (not saved by :meth:`save`).
    history_
        Per stage: loss per epoch, learning rate, steps, seconds, images/s and the time spent in
        augmentation.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> from sklearn.datasets import load_digits
    >>> images = load_digits().images.astype("float32") / 16  # (1797, 8, 8)
    >>> model = mx.models.TSimCNE(n_epochs=(2, 1, 1), batch_size=256, progress=False)
    >>> model.fit_transform(images).shape
    (1797, 2)
    """

    _module_names: ClassVar[tuple[str, ...]] = ("net_",)
    _stage_names: ClassVar[tuple[str, ...]] = _STAGES
    _min_train_rows: ClassVar[int] = 2
    _training_only_params: ClassVar[tuple[str, ...]] = ("augment",)
    _state_names: ClassVar[tuple[str, ...]] = (
        "history_",
        "kind_",
        "image_shape_",
        "pixel_range_",
        "backbone_name_",
        "feature_dim_",
    )

    def __init__(
        self,
        n_components: int = 2,
        *,
        backbone: str | nn.Module = "auto",
        pretrain_dim: int = 128,
        head_hidden: int = 1024,
        mlp_dims: Sequence[int] = (512, 512, 256),
        augment: str | Callable = "auto",
        n_neighbors: int = 15,
        batch_size: int | None = None,
        lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        n_epochs: Sequence[int] | None = None,
        preset: str = "default",
        warmup_epochs: int = 10,
        finetune_lr_factor: float | None = None,
        grad_clip_value: float | None = 4.0,
        device: str | torch.device = "auto",
        pixel_range: tuple[float, float] | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 5,
        amp: bool = True,
        random_state: int = 0,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        progress: bool | None = None,
    ):
        self.n_components = n_components
        self.backbone = backbone
        self.pretrain_dim = pretrain_dim
        self.head_hidden = head_hidden
        self.mlp_dims = mlp_dims
        self.augment = augment
        self.n_neighbors = n_neighbors
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.n_epochs = n_epochs
        self.preset = preset
        self.warmup_epochs = warmup_epochs
        self.finetune_lr_factor = finetune_lr_factor
        self.grad_clip_value = grad_clip_value
        self.device = device
        self.amp = amp
        self.random_state = random_state
        self.pixel_range = pixel_range
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.progress = progress

    # ---- parameters -------------------------------------------------------------------------
    def __sklearn_tags__(self):
        """As :class:`BaseModel`'s, and images: ``X`` may be 3-d ``(n, H, W)`` (or 4-d with channels)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def _validate_params(self) -> None:
        for name in (
            "n_components",
            "pretrain_dim",
            "head_hidden",
            "n_neighbors",
            "checkpoint_every",
            "patience",
        ):
            check_int(self, name, 1)
        check_int(self, "batch_size", 2, allow_none=True)
        check_int(self, "warmup_epochs", 0)
        if self.preset not in PRESETS:
            raise ValueError(f"`preset` must be one of {sorted(PRESETS)}, got {self.preset!r}.")
        check_dims(self, "mlp_dims")
        check_stage_epochs(self)
        check_positive(self, "lr", allow_none=True)
        check_positive(self, "weight_decay", allow_zero=True)
        check_positive(self, "finetune_lr_factor", allow_none=True)
        check_positive(self, "grad_clip_value", allow_none=True)
        check_fraction(self, "momentum")
        check_fraction(self, "validation_fraction")
        if self.pixel_range is not None:
            pr = self.pixel_range
            if (
                not isinstance(pr, tuple | list)
                or len(pr) != 2
                or not all(isinstance(v, int | float | np.integer | np.floating) for v in pr)
                or not pr[1] > pr[0]
            ):
                raise ValueError(f"`pixel_range` must be (lo, hi) with hi > lo, or None; got {pr!r}.")
        if not isinstance(self.backbone, nn.Module) and self.backbone not in {
            "auto",
            "small",
            "resnet18",
            "mlp",
        }:
            raise ValueError(
                f"`backbone` must be 'auto', 'small', 'resnet18', 'mlp' or an nn.Module, got {self.backbone!r}."
            )
        if not (callable(self.augment) or isinstance(self.augment, str)):
            raise TypeError("`augment` must be a preset name or a callable.")
        check_common(self)

    @property
    def epochs(self) -> tuple[int, int, int]:
        """The ``(stage 1, stage 2, stage 3)`` epochs this model trains for."""
        epochs = self.n_epochs if self.n_epochs is not None else PRESETS[self.preset]["n_epochs"]
        return tuple(int(e) for e in epochs)  # type: ignore[return-value]

    @property
    def effective_batch_size(self) -> int:
        """``batch_size``, or the preset's when it is ``None``."""
        return int(self.batch_size if self.batch_size is not None else PRESETS[self.preset]["batch_size"])

    @property
    def effective_finetune_lr_factor(self) -> float:
        """``finetune_lr_factor``, or the preset's when it is ``None`` (1/1000 as in the paper)."""
        if self.finetune_lr_factor is not None:
            return float(self.finetune_lr_factor)
        return float(PRESETS[self.preset].get("finetune_lr_factor", 1e-3))

    def _learning_rate(self, batch: int) -> float:
        return float(self.lr) if self.lr is not None else 0.03 * batch / 256

    # ---- training: inputs, loss, the three stages ---------------------------------------------
    def _training_batch_size(self) -> int:
        return self.effective_batch_size

    def _training_inputs(self, x: Any, plan: TrainingPlan) -> _Inputs:
        augment = self._augmentation()
        # images: (n, C, H, W) uint8 on the device, the only copy (or read per minibatch from disk)
        data = self._device_data(x, plan.device)
        knn = None
        if self.kind_ == "expression":
            rep = x
            if isinstance(x, BackedMatrix):  # on disk: neighbours on an out-of-core PCA
                rep = incremental_pca(x, 50) if x.shape[1] > 50 else x.read(np.arange(x.shape[0]))
            k = min(self.n_neighbors, x.shape[0] - 1)
            knn, self.knn_info_ = knn_graph(rep, k, device=plan.device, random_state=plan.seed)
        views = make_views(
            self.kind_,
            data,
            augment,
            knn=knn,
            feature_std=self.feature_std_,
            generator=plan.augment_generator,
            device=plan.device,
        )
        logg.info(f"t-SimCNE: {x.shape[0]} {self.kind_} rows of shape {x.shape[1:]} on {plan.device}")
        map_layer = self._map_layer.to(plan.device)  # built with the network (_build_training_modules)
        del self._map_layer
        return _Inputs(data, views, map_layer)

    def _loss(self, inputs: _Inputs, g: torch.Generator, idx: torch.Tensor, *, training: bool = True):
        """Cauchy InfoNCE of two views of the rows ``idx`` (augmented with ``g``); in training
        with several processes, with the negatives of the global batch."""
        t0 = time.perf_counter()
        a, b = inputs.views(idx, g)
        if training:
            inputs.augment_seconds += time.perf_counter() - t0
        za, zb = self.net_(torch.cat([a, b])).float().chunk(2)
        if training and world().distributed:
            za, zb = gather(za), gather(zb)
        return cauchy_infonce(za, zb)

    def _start_stage(self, inputs: _Inputs, stage: int) -> None:
        inputs.augment_seconds = 0.0
        if stage == 1:  # the 2-d output layer in place of stage 1's
            self.net_.head[2] = inputs.map_layer

    def _optimizer(self, stage: int, lr: float, n_steps: int, warmup: int):
        """SGD over what the stage trains (stage 2: the output layer only), warm-up and cosine decay."""
        for p in self.net_.parameters():
            p.requires_grad_(stage != 1)
        for p in self.net_.head[2].parameters():
            p.requires_grad_(True)
        params = [p for p in self.net_.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return opt, cosine_schedule(opt, n_steps, warmup)

    def _stage_record(self, inputs: _Inputs, epochs: int, lr: float, batch: int, h: dict) -> dict:
        """A stage's history with its budget, learning rate and throughput."""
        ips = h["n_steps"] * batch / h["seconds"] if h["seconds"] > 0 else float("nan")
        return {
            **h,
            "epochs": int(epochs),
            "base_lr": float(lr),
            "augment_seconds": float(inputs.augment_seconds),
            "images_per_second": float(ips),
        }

    def _stages(self, inputs: _Inputs, plan: TrainingPlan) -> list[Stage]:
        lr, per_epoch = self._learning_rate(plan.batch_size), plan.steps_per_epoch
        held_out = partial(self._loss, inputs, plan.validation_generator, training=False)
        stages = []
        for i, (name, epochs) in enumerate(zip(_STAGES, self.epochs, strict=True)):
            n_steps = epochs * per_epoch
            warmup = 0 if i == 1 else min(self.warmup_epochs * per_epoch, n_steps // 10)
            stage_lr = lr * (self.effective_finetune_lr_factor if i == 2 else 1.0)
            stages.append(
                Stage(
                    name,
                    modules=[self.net_],
                    loss=partial(self._loss, inputs, plan.augment_generator),
                    optimizer=partial(self._optimizer, i, stage_lr, n_steps, warmup),
                    n_steps=n_steps,
                    desc=f"t-SimCNE {i + 1}/3 ({name})",
                    validation_loss=lambda rows: plan.held_out_loss(held_out, rows),
                    start=partial(self._start_stage, inputs, i),
                    grad_clip_value=self.grad_clip_value,
                    record=partial(self._stage_record, inputs, epochs, stage_lr, plan.batch_size),
                )
            )
        return stages

    def _finish_fit(self, inputs: _Inputs, plan: TrainingPlan) -> None:
        for p in self.net_.parameters():
            p.requires_grad_(True)
        self.net_.eval()
        self.history_ = plan.history(batch_size=plan.batch_size, steps_per_epoch=plan.steps_per_epoch)
        self.embedding_, self.features_ = self._embed(inputs.data, both=True)

    def _block_network(self) -> nn.Module:
        return self.net_.backbone

    def _transform(self, x: Any, *, space: str, block: int | None) -> np.ndarray:
        data = self._device_data(x, self.device_)
        return self._embed(data, latent=space == "latent", block=block)

    def _embed(self, data: Any, *, latent: bool = False, both: bool = False, block: int | None = None) -> Any:
        images = self.kind_ == "image"
        return self.net_.embed(
            data, images=images, device=self.device_, latent=latent, both=both, block=block
        )

    def profile(self, X: Any, *, n_steps: int = 5) -> dict[str, float]:
        """Time the augmentation and a whole training step on a copy of the fitted network.

        Runs ``n_steps`` stage-1 style steps (two views, forward, loss, backward, SGD step) on
        minibatches of ``X`` and reports mean seconds for the augmentation and for the step.

        Parameters
        ----------
        X
            Data like the training data (images or cells).
        n_steps
            Timed steps (after one warm-up step).

        Returns
        -------
        ``{"augment_s", "step_s", "augment_fraction", "images_per_s"}`` per step.
        """
        self._check_fitted()
        x = self._prepare_query(X)
        device = self.device_
        gen = make_generator(check_random_state(self.random_state), device)
        knn = None
        if self.kind_ == "expression":
            knn = knn_indices(x, min(self.n_neighbors, x.shape[0] - 1), random_state=0)
        views = make_views(
            self.kind_,
            self._device_data(x, device),
            self._augmentation(),
            knn=knn,
            feature_std=self.feature_std_,
            generator=gen,
            device=device,
        )
        net = copy.deepcopy(self.net_).to(device).train()
        batch = min(self.effective_batch_size, x.shape[0])
        return time_steps(
            net,
            views,
            n_rows=x.shape[0],
            batch_size=batch,
            momentum=self.momentum,
            generator=gen,
            n_steps=n_steps,
        )

    # ---- modules ----------------------------------------------------------------------------
    def _build_modules(self, out_dim: int | None = None) -> None:
        """Build backbone + head; the head's output is ``out_dim`` (default: the final map)."""
        backbone = backbone_for(
            self.backbone,
            kind=self.kind_,
            n_features=self.n_features_in_,
            mlp_dims=tuple(self.mlp_dims),
            image_shape=self.image_shape_,
        )
        self.feature_dim_ = feature_width(backbone, self.image_shape_)
        head = projection_head(self.feature_dim_, self.head_hidden, out_dim or self.n_components)
        self.net_ = Net(backbone, head)

    def _build_training_modules(self) -> None:
        """The network with stage 1's head (``pretrain_dim`` outputs), and the 2-d output layer that
        takes the place of the head's output from stage 2 on, built once, in this order."""
        self._build_modules(out_dim=self.pretrain_dim)
        self._map_layer = nn.Linear(self.head_hidden, self.n_components)

    def _augmentation(self) -> Callable:
        channels = self.image_shape_[2] if self.kind_ == "image" else None
        return augmentation_for(self.augment, kind=self.kind_, channels=channels)
