"""DLME: Deep Local-flatness Manifold Embedding (Zang et al., ECCV 2022)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from scanpy import logging as logg

from .._neighbors import knn_indices
from .._train import DeviceData, step_decay, train
from .._utils import as_2d_float, check_random_state, make_generator, resolve_device, seeded
from ..augment.expression import AugmentContext, Compose, ExpressionAugmentation, expression_preset
from ..losses.dlme import dlme_loss
from ..nn.mlp import MLP
from ._base import BaseModel

__all__ = ["DLME"]

#: Training budgets. ``"default"`` scales the number of optimiser steps with the data size
#: (see :meth:`DLME.n_steps_for`); ``"paper"`` is the reference's 1500 epochs.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {"n_epochs": 100},
    "paper": {"n_epochs": 1500},
}


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
    augment
        ``"knn_mix"`` (the reference), ``"default"`` (kNN-mix + mild dropout and noise),
        ``"strong"``, or a callable ``aug(x, idx, ctx)`` / list of them
        (see :mod:`manifex.augment`).
    batch_size
        Cells per step (B); the loss works on a 2B × 2B matrix.
    lr, weight_decay
        AdamW settings. The learning rate is halved ten times, evenly over the run.
    n_epochs
        ``None`` chooses the budget from the data size (:meth:`n_steps_for`); otherwise the number
        of passes over the data.
    n_steps
        Exact number of optimiser steps; overrides ``n_epochs``.
    preset
        ``"default"``, ``"fast"`` (100 epochs) or ``"paper"`` (1500 epochs as in the reference).
        Explicit ``n_epochs`` / ``n_steps`` win over the preset.
    knn_method
        ``"auto"`` (exact up to 10,000 cells, pynndescent above), ``"exact"`` or ``"pynndescent"``.
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
    progress
        Show a progress bar.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> x = np.random.default_rng(0).normal(size=(200, 10)).astype("float32")
    >>> y = mx.models.DLME(n_steps=20, progress=False).fit_transform(x)
    >>> y.shape
    (200, 2)
    """

    _module_names: ClassVar[tuple[str, ...]] = ("encoder_", "projector_")
    _state_names: ClassVar[tuple[str, ...]] = ("history_", "scale_")

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
        augment: str | ExpressionAugmentation | Sequence[ExpressionAugmentation] = "knn_mix",
        batch_size: int = 300,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        n_epochs: int | None = None,
        n_steps: int | None = None,
        preset: Literal["default", "fast", "paper"] = "default",
        knn_method: str = "auto",
        standardize: bool = False,
        device: str | torch.device = "auto",
        amp: bool = False,
        random_state: int = 0,
        progress: bool = True,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.encoder_dims = tuple(encoder_dims)
        self.projector_dims = tuple(projector_dims)
        self.nu_z = nu_z
        self.nu_y = nu_y
        self.aug_near_rate = aug_near_rate
        self.augment = augment
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_epochs = n_epochs
        self.n_steps = n_steps
        self.preset = preset
        self.knn_method = knn_method
        self.standardize = standardize
        self.device = device
        self.amp = amp
        self.random_state = random_state
        self.progress = progress
        self.n_features_in_ = None

    # -----------------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        if not isinstance(self.n_components, int | np.integer) or self.n_components < 1:
            raise ValueError(f"`n_components` must be a positive integer, got {self.n_components!r}.")
        if not isinstance(self.n_neighbors, int | np.integer) or self.n_neighbors < 1:
            raise ValueError(f"`n_neighbors` must be a positive integer, got {self.n_neighbors!r}.")
        if not isinstance(self.batch_size, int | np.integer) or self.batch_size < 2:
            raise ValueError(f"`batch_size` must be an integer ≥ 2, got {self.batch_size!r}.")
        if self.preset not in PRESETS:
            raise ValueError(f"`preset` must be one of {sorted(PRESETS)}, got {self.preset!r}.")
        for name in ("nu_z", "nu_y", "aug_near_rate", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)!r}.")
        if self.n_epochs is not None and self.n_epochs < 1:
            raise ValueError(f"`n_epochs` must be ≥ 1, got {self.n_epochs!r}.")
        if self.n_steps is not None and self.n_steps < 1:
            raise ValueError(f"`n_steps` must be ≥ 1, got {self.n_steps!r}.")
        check_random_state(self.random_state)

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
        like UMAP's epochs, many passes over small data and fewer over large data —
        ``clip(600_000 / n, 10, 500)`` epochs, and at least 1,500 steps in total.
        """
        return self._step_budget(
            n,
            preset_epochs=PRESETS[self.preset].get("n_epochs"),
            scale=600_000,
            epoch_range=(10, 500),
            min_steps=1500,
        )

    def _build_modules(self) -> None:
        self.encoder_ = MLP(self.n_features_in_, self.encoder_dims)
        self.projector_ = MLP(self.encoder_dims[-1], self.projector_dims, self.n_components)

    # -----------------------------------------------------------------------------------------
    def fit(self, X: Any, y: None = None, *, feature_names: Any = None) -> DLME:
        """Train on ``X`` (cells × features, dense or scipy sparse).

        Parameters
        ----------
        X
            Input data, e.g. PCA coordinates or log-normalised HVG expression.
        y
            Ignored.
        feature_names
            Names of the columns, used to align the genes of a query in :meth:`transform`.
        """
        self._validate_params()
        x = as_2d_float(X, name="X", min_rows=max(20, self.n_neighbors + 1))
        augment = self._augmentation()
        device = resolve_device(self.device)
        seed = check_random_state(self.random_state)
        n = x.shape[0]
        self._record_input(x, feature_names)
        self.scale_ = (
            np.where(self.feature_std_ > 0, 1.0 / np.maximum(self.feature_std_, 1e-12), 1.0).astype(
                np.float32
            )
            if self.standardize
            else None
        )
        x_in = _apply_scale(x, self.scale_)

        logg.info(f"DLME: {n} cells × {x.shape[1]} features, kNN (K={self.n_neighbors}) ...")
        t0 = time.perf_counter()
        knn = knn_indices(x_in, self.n_neighbors, method=self.knn_method, random_state=seed)
        self.timings_ = {"knn_s": time.perf_counter() - t0}

        with seeded(seed, device):
            self._build_modules()
        self.encoder_.to(device)
        self.projector_.to(device)
        data = DeviceData(x_in, device)
        std = torch.as_tensor(
            self.feature_std_ * (self.scale_ if self.scale_ is not None else 1.0), device=device
        )
        gen = make_generator(seed, device)
        ctx = AugmentContext(
            data=data, knn=torch.as_tensor(knn, device=device), feature_std=std, generator=gen
        )
        batch = min(self.batch_size, n)
        n_steps = self.n_steps_for(n)
        nu_z, nu_y, rate = self.nu_z, self.nu_y, self.aug_near_rate
        enc, proj = self.encoder_, self.projector_

        def step(idx: torch.Tensor) -> torch.Tensor:
            xb = data[idx]
            xa = augment(xb, idx, ctx)
            z = enc(torch.cat([xb, xa]))
            y = proj(z)
            return dlme_loss(z.float(), y.float(), nu_z=nu_z, nu_y=nu_y, aug_near_rate=rate)

        params = list(enc.parameters()) + list(proj.parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        self.history_ = train(
            step,
            modules=[enc, proj],
            optimizer=opt,
            n=n,
            batch_size=batch,
            n_steps=n_steps,
            device=device,
            generator=gen,
            lr_lambda=step_decay(n_steps, 10, 0.5),
            amp=self.amp,
            progress=self.progress,
            desc="DLME",
        ).as_dict()
        self.device_ = device
        self.timings_["train_s"] = self.history_["seconds"]
        t0 = time.perf_counter()
        self.embedding_ = self._embed(data)
        self.timings_["embed_s"] = time.perf_counter() - t0
        return self

    def _block_network(self) -> MLP:
        return self.encoder_

    def transform(
        self, X: Any, *, feature_names: Any = None, return_latent: bool = False, layer: int | None = None
    ) -> np.ndarray:
        """Embed new cells with the trained network.

        Parameters
        ----------
        X
            Query data, same kind of preprocessing as the training data.
        feature_names
            Column names of ``X``; when the model knows its training feature names, the columns
            are aligned by name (order does not matter; missing features raise ``KeyError``).
        return_latent
            Return the ``z`` codes (dimension ``encoder_dims[-1]``) instead of the output.
        layer
            Return the output of encoder block ``layer`` instead (0-based; the last block is
            ``z``).
        """
        x = self._check_query(X, feature_names)
        if layer is not None:
            layer = self._check_layer(layer)
        data = DeviceData(_apply_scale(x, self.scale_), self.device_)
        return self._embed(data, return_latent=return_latent, layer=layer)

    @torch.no_grad()
    def _embed(
        self, data: DeviceData, *, return_latent: bool = False, layer: int | None = None
    ) -> np.ndarray:
        self.encoder_.eval()
        self.projector_.eval()
        out = []
        for xb in data.batches(4096):
            if layer is not None:
                out.append(self.encoder_.forward_to(xb, layer).float().cpu())
                continue
            z = self.encoder_(xb)
            out.append((z if return_latent else self.projector_(z)).float().cpu())
        return torch.cat(out).numpy()


def _apply_scale(x: np.ndarray | sp.csr_matrix, scale: np.ndarray | None):
    if scale is None:
        return x
    if sp.issparse(x):
        return sp.csr_matrix(x.multiply(scale[None, :]), dtype=np.float32)
    return (x * scale[None, :]).astype(np.float32)
