"""t-SimCNE: contrastive 2-d maps of images (Böhm, Berens & Kobak, ICLR 2023), and of expression data."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from scanpy import logging as logg
from torch import nn

from .._utils import make_generator, seeded
from ..losses.infonce import cauchy_infonce
from ..neighbors import knn_graph
from ..nn.resnet import projection_head
from ..train._data import BackedMatrix, StreamData, incremental_pca
from ..train._distributed import convert_sync_batchnorm, gather, world
from ..train._loop import EarlyStopping, cosine_with_warmup, held_out_loss, split_validation, train
from ._base import BaseModel, as_matrix
from ._images import BackedImages, is_backed_images, prepare_images
from ._tsimcne_parts import (
    Net,
    augmentation_for,
    embed_rows,
    feature_dim,
    make_backbone_for,
    make_views,
    profile_steps,
    validate_params,
)

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


class TSimCNE(BaseModel):
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
        self.mlp_dims = tuple(mlp_dims)
        self.augment = augment
        self.n_neighbors = n_neighbors
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.n_epochs = tuple(n_epochs) if n_epochs is not None else None
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
    def _validate_params(self) -> None:
        validate_params(self, PRESETS)

    @property
    def epochs(self) -> tuple[int, int, int]:
        """The ``(stage 1, stage 2, stage 3)`` epochs this model trains for."""
        return tuple(int(e) for e in (self.n_epochs or PRESETS[self.preset]["n_epochs"]))  # type: ignore[return-value]

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

    # ---- input ------------------------------------------------------------------------------
    def _prepare_fit_input(self, X: Any):
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        ndim = getattr(X, "ndim", None)
        if ndim is None and hasattr(X, "shape"):  # e.g. a backed sparse dataset
            ndim = len(X.shape)
        if ndim is None:
            X = np.asarray(X)
            ndim = X.ndim
        if ndim == 2:
            self.kind_ = "expression"
            self.image_shape_ = None
            self.pixel_range_ = None
            x = as_matrix(X, name="X")
            self._check_n_rows(x.shape[0])
            return x
        if is_backed_images(X):  # on disk: checked in one pass, then read per minibatch
            u8 = X
            if not isinstance(X, BackedImages) or (
                self.pixel_range is not None and X.pixel_range != tuple(float(v) for v in self.pixel_range)
            ):
                u8 = BackedImages(X, name="X", pixel_range=self.pixel_range)
            rng, dtype, peak = u8.pixel_range, u8.dtype, u8.max_value
        else:
            u8, rng = prepare_images(X, name="X", pixel_range=self.pixel_range)
            dtype, peak = np.asarray(X).dtype, int(u8.max())
        if self.pixel_range is None and dtype == np.uint8 and peak <= 1:
            logg.warning(
                "t-SimCNE: uint8 images whose values are all 0 or 1 are read as 0–255, i.e. nearly "
                "black; for masks pass `pixel_range=(0, 1)` (or bool images)."
            )
        if u8.shape[0] < 2:
            raise ValueError("t-SimCNE needs at least 2 images.")
        self.kind_ = "image"
        _, c, h, w = u8.shape
        self.image_shape_ = (int(h), int(w), int(c))
        self.pixel_range_ = tuple(float(v) for v in rng)
        return u8

    def _prepare_query(self, X: Any, feature_names: Any = None):
        if self.kind_ == "expression":
            return super()._prepare_query(X, feature_names)
        if feature_names is not None:
            raise ValueError("`feature_names` apply to expression data, not to images.")
        standard = tuple(self.pixel_range_) in ((0.0, 1.0), (0.0, 255.0))
        reference = None if standard else self.pixel_range_
        if is_backed_images(X):
            u8 = BackedImages(X, name="X", pixel_range=self.pixel_range, reference_range=reference)
        else:
            u8, _ = prepare_images(X, name="X", pixel_range=self.pixel_range, reference_range=reference)
        if u8.shape[1:] != (self.image_shape_[2], self.image_shape_[0], self.image_shape_[1]):
            h, w, c = self.image_shape_
            raise ValueError(
                f"The model was trained on {h}×{w} images with {c} channel(s), got "
                f"{u8.shape[2]}×{u8.shape[3]} with {u8.shape[1]}."
            )
        return u8

    def _input_space(self, x: Any) -> np.ndarray:
        if isinstance(x, BackedImages):
            raise ValueError("space='input' would load on-disk images whole; read them in chunks.")
        if self.kind_ == "image":
            return x.reshape(x.shape[0], -1).astype(np.float32) / np.float32(255.0)
        return super()._input_space(x)

    def _device_data(self, x: Any, device: torch.device) -> Any:
        if isinstance(x, BackedImages):  # read from disk per minibatch
            return StreamData(x, device)
        return torch.from_numpy(x).to(device) if self.kind_ == "image" else self._rows_on_device(x, device)

    # ---- fitting ----------------------------------------------------------------------------
    def _fit(self, x: Any, *, device: torch.device, seed: int) -> None:
        n = x.shape[0]
        augment = self._augmentation()
        train_rows, val_rows = split_validation(
            n, self.validation_fraction if self.early_stopping else 0.0, seed, min_train=2
        )
        n_train = len(train_rows)
        rows = torch.as_tensor(train_rows, device=device)
        batch = min(self.effective_batch_size, n_train)
        per_epoch = max(1, n_train // batch) if n_train > batch else 1
        lr = self._learning_rate(batch)
        gen = make_generator(seed, device)
        # images: (n, C, H, W) uint8 on the device, the only copy (or read per minibatch from disk)
        data = self._device_data(x, device)

        knn = None
        if self.kind_ == "expression":
            rep = x
            if isinstance(x, BackedMatrix):  # on disk: neighbours on an out-of-core PCA
                rep = incremental_pca(x, 50) if x.shape[1] > 50 else x.read(np.arange(n))
            knn, self.knn_info_ = knn_graph(
                rep, min(self.n_neighbors, n - 1), device=device, random_state=seed
            )
        w = world()
        aug_gen = make_generator(seed + w.rank, device) if w.distributed else gen
        views = make_views(self, data, augment, knn, aug_gen, device)
        logg.info(f"t-SimCNE: {n} {self.kind_} rows of shape {x.shape[1:]} on {device}")

        with seeded(seed, device):
            self._build_modules(out_dim=self.pretrain_dim)
            fresh_out = nn.Linear(self.head_hidden, self.n_components)
        self.net_ = convert_sync_batchnorm(self.net_.to(device), device, world())
        net = self.net_
        fresh_out.to(device)
        timing = {"augment": 0.0}

        def loss_of(idx: torch.Tensor, g: torch.Generator, training: bool = False) -> torch.Tensor:
            t0 = time.perf_counter()
            a, b = views(idx, g)
            if training:
                timing["augment"] += time.perf_counter() - t0
            za, zb = net(torch.cat([a, b])).float().chunk(2)
            if training and w.distributed:  # several processes: negatives from the global batch
                za, zb = gather(za), gather(zb)
            return cauchy_infonce(za, zb)

        def step(i: torch.Tensor) -> torch.Tensor:
            return loss_of(rows[i], aug_gen, training=True)

        stopper = None
        if len(val_rows):
            vrows = torch.as_tensor(val_rows, device=device)
            vgen = make_generator(seed + 1, device)

            def validate() -> float:
                return held_out_loss(lambda idx: loss_of(idx, vgen), vrows, batch, vgen, seed + 1)

            stopper = EarlyStopping(validate, every=per_epoch, patience=self.patience)

        ckpt = self._checkpoint_file(x, phases=_STAGES)

        def stage_record(h: dict[str, Any], epochs: int, stage_lr: float) -> dict[str, Any]:
            """A stage's history with its budget, learning rate and throughput."""
            seen = h["n_steps"] * batch
            return {
                **h,
                "epochs": int(epochs),
                "base_lr": float(stage_lr),
                "augment_seconds": float(timing["augment"]),
                "images_per_second": float(seen / h["seconds"]) if h["seconds"] > 0 else float("nan"),
            }

        histories: dict[str, dict[str, Any]] = {}
        for stage, (name, epochs) in enumerate(zip(_STAGES, self.epochs, strict=True)):
            if stage == 1:
                net.head[2] = fresh_out
            if ckpt is not None and ckpt.position(name) == "before":
                histories[name] = ckpt.histories[name]
                continue
            for p in net.parameters():
                p.requires_grad_(stage != 1)
            for p in net.head[2].parameters():
                p.requires_grad_(True)
            params = [p for p in net.parameters() if p.requires_grad]
            stage_lr = lr * (self.effective_finetune_lr_factor if stage == 2 else 1.0)
            opt = torch.optim.SGD(params, lr=stage_lr, momentum=self.momentum, weight_decay=self.weight_decay)
            n_steps = epochs * per_epoch
            warm = 0 if stage == 1 else min(self.warmup_epochs * per_epoch, n_steps // 10)
            timing["augment"] = 0.0
            restored = ckpt.state_for(name) if ckpt is not None else None
            h = train(
                step,
                modules=[net],
                optimizer=opt,
                n=n_train,
                batch_size=batch,
                n_steps=n_steps,
                device=device,
                generator=gen,
                lr_lambda=cosine_with_warmup(n_steps, warm),
                grad_clip_value=self.grad_clip_value,
                amp=self.amp,
                progress=self.progress,
                desc=f"t-SimCNE {stage + 1}/3 ({name})",
                early_stopping=stopper,
                checkpoint=ckpt,
                phase=name,
                record=lambda d, e=epochs, r=stage_lr: stage_record(d, e, r),
                rank_generator=aug_gen,
            ).as_dict()
            if restored is not None and restored["done"] and name in ckpt.histories:
                histories[name] = ckpt.histories[name]  # finished before: its record as written
                continue
            histories[name] = stage_record(h, epochs, stage_lr)
        for p in net.parameters():
            p.requires_grad_(True)
        net.eval()
        self.history_ = {
            **histories,
            "loss": np.concatenate([np.asarray(histories[s]["loss"], dtype=np.float64) for s in _STAGES]),
            "n_steps": int(sum(histories[s]["n_steps"] for s in _STAGES)),
            "seconds": float(sum(histories[s]["seconds"] for s in _STAGES)),
            "batch_size": int(batch),
            "steps_per_epoch": int(per_epoch),
            "n_validation": len(val_rows),
        }
        self.embedding_, self.features_ = self._embed(data, both=True)

    def _block_network(self) -> nn.Module:
        return self.net_.backbone

    def _transform(self, x: Any, *, space: str, block: int | None) -> np.ndarray:
        data = self._device_data(x, self.device_)
        return self._embed(data, latent=space == "latent", block=block)

    def _embed(self, data: Any, *, latent: bool = False, both: bool = False, block: int | None = None):
        return embed_rows(self, data, latent=latent, both=both, block=block)

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
        return profile_steps(self, self._prepare_query(X), n_steps=n_steps)

    # ---- modules ----------------------------------------------------------------------------
    def _build_modules(self, out_dim: int | None = None) -> None:
        """Build backbone + head; the head's output is ``out_dim`` (default: the final map)."""
        backbone = make_backbone_for(self)
        self.feature_dim_ = feature_dim(self, backbone)
        head = projection_head(self.feature_dim_, self.head_hidden, out_dim or self.n_components)
        self.net_ = Net(backbone, head)

    def _augmentation(self) -> Callable:
        return augmentation_for(self)
