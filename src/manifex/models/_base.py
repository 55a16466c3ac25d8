"""The estimator contract every manifex model fills in.

A model is a scikit-learn transformer (``get_params`` / ``set_params`` / :func:`sklearn.base.clone`,
its tags in ``__sklearn_tags__``; checked by scikit-learn's estimator checks in
``tests/test_sklearn_checks.py``)
whose :meth:`BaseModel.fit` is a template:

1. ``_validate_params()`` -- the constructor arguments, before any work;
2. ``_prepare_fit_input(X)`` -- validate and convert the data (and set ``kind_``);
3. record the input: shape, feature names, per-feature mean / standard deviation, a fingerprint
   of the data, the AnnData input spec a ``tl`` function passes;
4. resolve the device and the seed, build the networks under the seed, once
   (``_build_training_modules``; ``_build_modules`` builds them for a loaded model);
5. ``_fit(x, device, seed)`` -- a :class:`~manifex.train._plan.TrainingPlan` owns the held-out
   split, the random generators, early stopping, the checkpoint file, histories and timings;
   the model declares what differs, in three hooks:

   - ``_training_inputs(x, plan)`` -- what its loss reads (the rows on the device, a kNN graph,
     the augmentations' context);
   - ``_stages(inputs, plan)`` -- its :class:`~manifex.train._plan.Stage` s: the networks each
     trains, the loss of a minibatch, the held-out loss, the optimiser and its schedule
     (:mod:`torch.optim.lr_scheduler`), the step budget;
   - ``_finish_fit(inputs, plan)`` -- the history, and the embedding of the training data
     (``embedding_``; N2D's UMAP and mixture).

Every model answers one :meth:`BaseModel.transform` with ``space="embedding" | "latent" |
"input"`` (N2D adds ``"manifold"``) and ``block=`` for one block of its network. Models are saved
to safe files (:mod:`manifex.io._format`): tensors in safetensors, everything else in JSON.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from .._utils import check_random_state, resolve_device, seeded
from ..io._format import encode_params, fingerprint
from ..io._input_spec import InputSpec
from ..io._models import load_model_file, register_model, save_model
from ..train._checkpoint import CheckpointFile
from ..train._data import BackedMatrix, DeviceData, StreamData
from ..train._distributed import convert_sync_batchnorm, world
from ..train._plan import Stage, TrainingPlan
from ._contract import NotFittedError, check_space
from ._images import BackedImages
from ._inputs import apply_scale, as_matrix, col_mean_var

__all__ = ["BaseModel", "NotFittedError"]


class BaseModel(TransformerMixin, BaseEstimator):
    """Base class of the manifex estimators: the ``fit`` template, ``transform``, save / load.

    Subclasses implement ``_validate_params``, ``_build_modules``, the training hooks
    ``_training_inputs``, ``_stages`` and ``_finish_fit`` (see the module docstring) and
    ``_transform``, list their torch modules in ``_module_names`` and any other fitted state
    (arrays, plain values) in ``_state_names``; both are saved by :meth:`save`. Every fitted model records
    what it was trained on (``n_features_in_``, ``feature_names_in_``, per-feature
    ``feature_mean_`` / ``feature_std_``, ``data_fingerprint_``, ``input_spec_``), which
    :meth:`transform` uses to align and check queries.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> from sklearn.base import clone
    >>> x = np.random.default_rng(0).normal(size=(300, 20)).astype("float32")
    >>> model = mx.models.DLME(n_steps=100, progress=False).fit(x)
    >>> isinstance(model, mx.models.BaseModel), model.is_fitted
    (True, True)
    >>> clone(model).set_params(n_steps=50).get_params()["n_steps"]
    50
    >>> model.transform(x[:5], space="latent").shape
    (5, 80)
    >>> model.save("dlme.pt")
    >>> same = mx.models.load_model("dlme.pt", device="cpu")
    >>> bool(np.allclose(same.transform(x[:5]), model.transform(x[:5]), atol=1e-5))
    True
    """

    _module_names: ClassVar[tuple[str, ...]] = ()
    _state_names: ClassVar[tuple[str, ...]] = ()
    #: spaces :meth:`transform` accepts besides :data:`SPACES`
    _extra_spaces: ClassVar[tuple[str, ...]] = ()
    #: parameters that play no part in inference: saved when they can be, else left at default
    _training_only_params: ClassVar[tuple[str, ...]] = ()
    #: parameters that do not change what training computes (left out of checkpoint identity)
    _runtime_params: ClassVar[tuple[str, ...]] = ("device", "progress", "checkpoint", "checkpoint_every")
    #: names of the training stages, in order (the phases of a checkpoint file)
    _stage_names: ClassVar[tuple[str, ...]] = ("train",)
    #: fewest training rows a held-out split may leave
    _min_train_rows: ClassVar[int] = 20

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_model(cls)  # loadable by name from a model file (manifex.io)

    def __sklearn_tags__(self):
        """scikit-learn's estimator tags: a transformer that reads scipy sparse matrices (as CSR,
        never densified whole) and returns float32 whatever the input dtype."""
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # ---- fitted state -----------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """Whether the model has been fitted (or loaded from a file)."""
        return getattr(self, "n_features_in_", None) is not None

    def __sklearn_is_fitted__(self) -> bool:
        return self.is_fitted

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call `fit` first (or load a saved "
                "model with `mx.models.load_model`)."
            )

    # ---- the fit template -------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: None = None,
        *,
        feature_names: Any = None,
        input_spec: InputSpec | Mapping[str, Any] | None = None,
    ) -> BaseModel:
        """Train on ``X``.

        Parameters
        ----------
        X
            Training data: cells × features (dense or scipy sparse), or images for
            :class:`TSimCNE`.
        y
            Ignored.
        feature_names
            Names of the columns, used to align the features of a query in :meth:`transform`.
        input_spec
            What AnnData input ``X`` came from (set by the ``mx.tl`` functions; read by
            :func:`manifex.tl.embed` to prepare a query the same way): an
            :class:`~manifex.io.InputSpec`, or a dict of its fields, kept as
            ``input_spec_``.

        Returns
        -------
        The fitted model.
        """

        self._validate_params()
        spec = InputSpec.coerce(input_spec)
        x = self._prepare_fit_input(X)
        self._record_input(x, feature_names)
        self.input_spec_ = spec
        if isinstance(x, BackedImages):  # fingerprinted in its pass over the images
            self.data_fingerprint_ = x.fingerprint
        elif not isinstance(x, BackedMatrix):  # a backed matrix is fingerprinted in _record_input
            self.data_fingerprint_ = fingerprint(x)
        device = resolve_device(self.device)
        seed = check_random_state(self.random_state)
        self.device_ = device
        with seeded(seed, device):
            self._build_training_modules()
        w = world()
        for name in self._module_names:  # SyncBatchNorm with several CUDA processes
            setattr(self, name, convert_sync_batchnorm(getattr(self, name).to(device), device, w))
        self._fit(x, device=device, seed=seed)
        return self

    def fit_transform(self, X: Any, y: None = None, **fit_params: Any) -> np.ndarray:
        """Fit and return the embedding of the training data (``embedding_``), without a second
        pass over ``X``.

        Parameters
        ----------
        X, y
            As for :meth:`fit`.
        **fit_params
            ``feature_names`` and ``input_spec``, as for :meth:`fit`.
        """
        return self.fit(X, y, **fit_params).embedding_

    def _prepare_fit_input(self, X: Any) -> Any:
        """Validate and convert the training data (hook; default: a cells × features matrix, in
        memory, or on disk for a backed AnnData's ``X`` / layer)."""
        self.kind_ = "expression"
        x = as_matrix(X, name="X")
        self._check_n_rows(x.shape[0])
        return x

    def _check_n_rows(self, n: int) -> None:
        k = getattr(self, "n_neighbors", None)
        if k is not None and n <= k:
            raise ValueError(
                f"`X` has {n} sample(s) (rows); `n_neighbors`={k} needs more than {k}: lower "
                "`n_neighbors` or use more cells."
            )
        if n < self._min_rows():
            raise ValueError(f"`X` has {n} sample(s) (rows); at least {self._min_rows()} are needed.")

    def _min_rows(self) -> int:
        """Fewest rows :meth:`fit` accepts: a kNN graph needs ``n_neighbors + 1``, a training
        minibatch (batch normalisation, a contrastive or similarity loss) two."""
        return max(2, int(getattr(self, "n_neighbors", 0)) + 1)

    def _record_input(self, x: Any, feature_names: Any) -> None:
        """Remember what the model was trained on (shape, feature names, per-feature scale)."""
        if getattr(self, "kind_", "expression") == "image":
            self.n_features_in_ = int(np.prod(x.shape[1:]))
            if feature_names is not None:
                raise ValueError("`feature_names` apply to expression data, not to images.")
            self.feature_names_in_ = None
            self.feature_mean_ = None
            self.feature_std_ = None
            return
        if feature_names is not None:
            names = np.asarray(feature_names, dtype=str)
            if names.shape != (x.shape[1],):
                raise ValueError(
                    f"`feature_names` has {names.size} entries but the data has {x.shape[1]} features."
                )
            if len(set(names.tolist())) != names.size:
                raise ValueError("`feature_names` must be unique.")
        else:
            names = None
        if isinstance(x, BackedMatrix):
            mean, var, self.data_fingerprint_ = x.stats()
        else:
            mean, var = col_mean_var(x)
        self.n_features_in_ = int(x.shape[1])
        self.feature_names_in_ = names
        self.feature_mean_ = mean
        self.feature_std_ = np.sqrt(var)

    def _build_modules(self) -> None:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def _build_training_modules(self) -> None:
        """Build the networks a fit trains (hook; default: :meth:`_build_modules`, which builds
        the networks of a loaded model)."""
        self._build_modules()

    # ---- training: the plan runs the stages the model declares --------------------------------
    def _fit(self, x: Any, *, device: torch.device, seed: int) -> None:
        """Train on ``x``: a :class:`~manifex.train._plan.TrainingPlan` runs the model's stages."""
        plan = TrainingPlan(
            x.shape[0],
            device=device,
            seed=seed,
            batch_size=self._training_batch_size(),
            validation_fraction=self._validation_fraction(x.shape[0]),
            min_train=self._min_train_rows,
            patience=self.patience,
            checkpoint=self._checkpoint_file(self._stage_names),
            amp=self.amp,
            progress=self.progress,
        )
        inputs = self._training_inputs(x, plan)
        for stage in self._stages(inputs, plan):
            plan.run(stage)
        self._finish_fit(inputs, plan)

    def _training_batch_size(self) -> int:
        """The minibatch size asked for (hook)."""
        return int(self.batch_size)

    def _validation_fraction(self, n: int) -> float:
        """Share of the ``n`` rows held out for early stopping (hook; 0 without it)."""
        return float(self.validation_fraction) if self.early_stopping else 0.0

    def _training_inputs(self, x: Any, plan: TrainingPlan) -> Any:  # pragma: no cover
        """What the loss reads during the fit (the rows on the device, a kNN graph, ...)."""
        raise NotImplementedError

    def _stages(self, inputs: Any, plan: TrainingPlan) -> list[Stage]:  # pragma: no cover
        """The training stages, in the order of :attr:`_stage_names`."""
        raise NotImplementedError

    def _finish_fit(self, inputs: Any, plan: TrainingPlan) -> None:  # pragma: no cover
        """After the stages: the history, the embedding of the training data, ..."""
        raise NotImplementedError

    def _checkpoint_file(self, phases: tuple[str, ...] = ("train",)):
        """The :class:`~manifex.train._checkpoint.CheckpointFile` of this fit, already read (an existing
        file is checked against this data and these parameters), or ``None``."""
        if getattr(self, "checkpoint", None) is None:
            return None

        params = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in self.get_params().items()
            if k not in self._runtime_params
        }
        try:
            params = encode_params(params)
        except TypeError:
            params = {k: repr(v) for k, v in params.items()}
        ckpt = CheckpointFile(
            self.checkpoint,
            fingerprint=self.data_fingerprint_,
            # the device type too: a generator state of one device cannot be restored on another
            params={"class": type(self).__name__, "device_type": self.device_.type, **params},
            phases=phases,
            every_epochs=int(getattr(self, "checkpoint_every", 10)),
        )
        ckpt.read()  # validates an existing file before any training
        return ckpt

    # ---- transform --------------------------------------------------------------------------
    def transform(
        self, X: Any, *, feature_names: Any = None, space: str = "embedding", block: int | None = None
    ) -> np.ndarray:
        """Embed new data with the trained model.

        Parameters
        ----------
        X
            Query data prepared like the training data (same features, or images of the training
            size and channel count).
        feature_names
            Column names of ``X``; when the model knows its training feature names, the columns are
            aligned by name (order does not matter; missing features raise ``KeyError``).
        space
            ``"embedding"``: the map (what the ``tl`` function writes to ``obsm``).
            ``"latent"``: the network's internal representation (DLME's ``z``, t-SimCNE's backbone
            features, N2D's autoencoder code). ``"input"``: what the network reads, without the
            network (the aligned features before any internal standardisation; images flattened
            and scaled to [0, 1]) -- the baseline every learnt space should beat. N2D also
            offers ``"manifold"``, the UMAP manifold its mixture clusters.
        block
            With ``space="latent"``: the output of this block of the network instead (0-based,
            flattened to ``(n, d)``).

        Returns
        -------
        ``(n, d)`` float32 array.
        """
        self._check_fitted()
        check_space(space, block, self)
        if block is not None:
            block = self._check_block(block)
        x = self._prepare_query(X, feature_names)
        if space == "input":
            return self._input_space(x)
        out = np.asarray(self._transform(x, space=space, block=block), dtype=np.float32)
        return out.reshape(out.shape[0], -1)

    def _prepare_query(self, X: Any, feature_names: Any) -> Any:
        """Validate a query and align its columns to the training features by name."""
        x = as_matrix(X, name="X")
        if isinstance(x, BackedMatrix):
            if x.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {x.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input (the number it was trained on)."
                )
            if (
                feature_names is not None
                and self.feature_names_in_ is not None
                and not np.array_equal(np.asarray(feature_names, dtype=str), self.feature_names_in_)
            ):
                raise ValueError(
                    "A backed (on-disk) query must have the training features in the training order; "
                    "subset it to `model.feature_names_in_` first, or load it into memory."
                )
            return x
        if feature_names is not None and self.feature_names_in_ is not None:
            names = np.asarray(feature_names, dtype=str)
            if names.shape != (x.shape[1],):
                raise ValueError(
                    f"`feature_names` has {names.size} entries but `X` has {x.shape[1]} columns."
                )
            pos = {g: i for i, g in enumerate(names.tolist())}
            missing = [g for g in self.feature_names_in_.tolist() if g not in pos]
            if missing:
                shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
                raise KeyError(
                    f"The query lacks {len(missing)} of the {self.n_features_in_} features the model "
                    f"was trained on: {shown}."
                )
            order = np.fromiter((pos[g] for g in self.feature_names_in_.tolist()), dtype=np.int64)
            if not np.array_equal(order, np.arange(x.shape[1])):
                x = x[:, order]
        elif x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (the number it was trained on)."
            )
        return x

    def _input_space(self, x: Any) -> np.ndarray:
        if isinstance(x, BackedMatrix):
            raise ValueError("space='input' would load a backed (on-disk) query whole; read it in chunks.")
        out = x.toarray() if sp.issparse(x) else np.asarray(x)
        return out.astype(np.float32, copy=False)

    def _transform(self, x: Any, *, space: str, block: int | None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _rows_on_device(x: Any, device: torch.device, scale: np.ndarray | None = None) -> Any:
        """Minibatch access to a training / query matrix: on the device (:class:`DeviceData`),
        or read from disk per minibatch for a backed one (:class:`~manifex.train._data.StreamData`)."""
        if isinstance(x, BackedMatrix):
            return StreamData(x, device, scale=scale)
        return DeviceData(apply_scale(x, scale), device)

    def _block_network(self) -> Any:
        """The network whose blocks ``transform(..., block=k)`` reads (``forward_to``, ``n_blocks``)."""
        return None

    def _check_block(self, block: Any) -> int:
        network = self._block_network()
        if network is None:
            raise ValueError(f"{type(self).__name__} has no network blocks to read (`block`).")
        n = network.n_blocks
        if isinstance(block, bool) or not isinstance(block, int | np.integer) or not 0 <= block < n:
            raise ValueError(f"`block` must be an integer block index in 0..{n - 1}, got {block!r}.")
        return int(block)

    # ---- budgets ----------------------------------------------------------------------------
    def _step_budget(
        self, n: int, *, preset_epochs: int | None, scale: float, epoch_range: tuple[int, int], min_steps: int
    ) -> int:
        """Optimiser steps for ``n`` cells: explicit ``n_steps``, else ``n_epochs`` or the preset's
        epochs, else ``clip(scale / n, *epoch_range)`` epochs and at least ``min_steps`` steps."""
        if self.n_steps is not None:
            return int(self.n_steps)
        per_epoch = max(1, n // min(self.batch_size, n))
        epochs = self.n_epochs if self.n_epochs is not None else preset_epochs
        if epochs is not None:
            return int(epochs * per_epoch)
        epochs = float(np.clip(scale / n, *epoch_range))
        return int(max(min_steps, round(epochs * per_epoch)))

    # ---- persistence ------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        """Fitted state besides the modules and the recorded input (hook; plain data only)."""
        return {k: getattr(self, k, None) for k in self._state_names}

    def _set_state(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save the fitted model to one safe file (safetensors tensors + a JSON description).

        Parameters
        ----------
        path
            File to write (any extension; ``.mx`` or ``.safetensors`` are good choices).
        overwrite
            Replace an existing file.
        """
        self._check_fitted()
        save_model(self, Path(path), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "auto") -> BaseModel:
        """Load a model written by :meth:`save`, refusing a file that holds another class
        (:func:`manifex.models.load_model` loads any); nothing in the file is executed.

        Parameters
        ----------
        path
            The model file.
        device
            Where the networks go: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device.
        """
        return load_model_file(Path(path), device=device, expected=cls)
