"""Common machinery of the manifex estimators: parameters, input checks, save / load."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from .._utils import as_2d_float, resolve_device

__all__ = ["BaseModel", "NotFittedError", "load_model"]

_FORMAT_VERSION = 1


class NotFittedError(ValueError):
    """Raised when a model is used before ``fit``.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> try:
    ...     mx.models.DLME().transform(np.zeros((5, 10)))
    ... except mx.models.NotFittedError as err:
    ...     print(err)
    This DLME is not fitted yet; call `fit` first.
    """


class BaseModel:
    """Base class: scikit-learn style parameters plus torch modules and a save / load format.

    Subclasses list their torch modules in ``_module_names`` and any other fitted state
    (numpy arrays, scikit-learn objects) in ``_state_names``; both are saved by :meth:`save`.
    Every model records what it was trained on (``n_features_in_``, ``feature_names_in_``,
    per-feature ``feature_mean_`` / ``feature_std_``), which :meth:`transform` uses to align
    and check queries.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> x = np.random.default_rng(0).normal(size=(300, 20)).astype("float32")
    >>> model = mx.models.DLME(n_steps=100, progress=False).fit(x)
    >>> isinstance(model, mx.models.BaseModel), model.is_fitted
    (True, True)
    >>> model.save("dlme.pt")
    >>> same = mx.models.DLME.load("dlme.pt", device="cpu")
    """

    _module_names: ClassVar[tuple[str, ...]] = ()
    _state_names: ClassVar[tuple[str, ...]] = ()

    # ---- parameters -------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments of this model."""
        return {k: getattr(self, k) for k in self._param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # ---- fitted state -----------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """Whether the model has been fitted (or loaded from a file)."""
        return getattr(self, "n_features_in_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call `fit` first.")

    def _record_input(self, x: np.ndarray | sp.csr_matrix, feature_names: Any) -> None:
        """Remember what the model was trained on (shape, feature names, per-feature scale)."""
        self.n_features_in_ = int(x.shape[1])
        if feature_names is not None:
            names = np.asarray(feature_names, dtype=str)
            if names.shape != (x.shape[1],):
                raise ValueError(
                    f"`feature_names` has {names.size} entries but the data has {x.shape[1]} features."
                )
            if len(set(names)) != names.size:
                raise ValueError("`feature_names` must be unique.")
            self.feature_names_in_ = names
        else:
            self.feature_names_in_ = None
        mean, var = _col_mean_var(x)
        self.feature_mean_ = mean
        self.feature_std_ = np.sqrt(var)

    def _check_query(self, x: Any, feature_names: Any = None, *, name: str = "X"):
        """Validate a query matrix and align its columns to the training features by name."""
        self._check_fitted()
        x = as_2d_float(x, name=name)
        if feature_names is not None and self.feature_names_in_ is not None:
            names = np.asarray(feature_names, dtype=str)
            if names.shape != (x.shape[1],):
                raise ValueError(
                    f"`feature_names` has {names.size} entries but `{name}` has {x.shape[1]} columns."
                )
            pos = {g: i for i, g in enumerate(names)}
            missing = [g for g in self.feature_names_in_ if g not in pos]
            if missing:
                shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
                raise KeyError(
                    f"The query lacks {len(missing)} of the {self.n_features_in_} features the model "
                    f"was trained on: {shown}."
                )
            order = np.fromiter((pos[g] for g in self.feature_names_in_), dtype=np.int64)
            if not np.array_equal(order, np.arange(x.shape[1])):
                x = x[:, order]
        elif x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"`{name}` has {x.shape[1]} features but the model was trained on {self.n_features_in_}."
            )
        return x

    def fit_transform(self, X: Any, y: None = None, *, feature_names: Any = None) -> np.ndarray:
        """Fit and return the embedding of the training data (``embedding_``).

        Parameters
        ----------
        X
            Training data, as for ``fit``.
        y
            Ignored.
        feature_names
            Names of the columns, used to align a query's features in ``transform``.
        """
        return self.fit(X, feature_names=feature_names).embedding_

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
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _build_modules(self) -> None:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save parameters, weights and fitted state to one file (``torch.save`` format).

        Parameters
        ----------
        path
            File to write.
        overwrite
            Replace an existing file.
        """
        self._check_fitted()
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
        payload = {
            "format_version": _FORMAT_VERSION,
            "class": type(self).__name__,
            "params": self.get_params(),
            "modules": {
                k: {n: t.detach().cpu() for n, t in getattr(self, k).state_dict().items()}
                for k in self._module_names
            },
            "state": {k: getattr(self, k, None) for k in self._state_names},
            "input": {
                "n_features_in_": self.n_features_in_,
                "feature_names_in_": self.feature_names_in_,
                "feature_mean_": self.feature_mean_,
                "feature_std_": self.feature_std_,
                "input_spec_": getattr(self, "input_spec_", None),
            },
            "extra": self._extra_state(),
        }
        torch.save(payload, path)

    def _block_network(self) -> Any:
        """The network whose blocks ``transform(..., layer=k)`` reads (``forward_to``, ``n_blocks``);
        ``None`` for models without one."""
        return None

    def _check_layer(self, layer: Any) -> int:
        """Validate a ``layer`` argument against :meth:`_block_network`."""
        network = self._block_network()
        if network is None:
            raise ValueError(f"{type(self).__name__} cannot return a block's output (`layer`).")
        n = network.n_blocks
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not 0 <= layer < n:
            raise ValueError(f"`layer` must be an integer block index in 0..{n - 1}, got {layer!r}.")
        return int(layer)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "auto") -> BaseModel:
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        path
            The file. Only load files you trust: the format is pickle-based.
        device
            Where to put the networks (``"auto"``, ``"cpu"``, ``"cuda"``, ...).
        """
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
        if not isinstance(payload, dict) or "class" not in payload:
            raise ValueError(f"{path} is not a manifex model file.")
        klass = _registry().get(payload["class"])
        if klass is None or (cls is not BaseModel and not issubclass(klass, cls)):
            raise TypeError(f"{path} holds a {payload['class']}, not a {cls.__name__}.")
        params = dict(payload["params"])
        params["device"] = device
        model = klass(**params)
        for k, v in payload["input"].items():
            setattr(model, k, v)
        for k, v in payload["state"].items():
            setattr(model, k, v)
        model._set_extra_state(payload["extra"])
        model.device_ = resolve_device(device)
        model._build_modules()
        for k in klass._module_names:
            module = getattr(model, k)
            module.load_state_dict(payload["modules"][k])
            module.to(model.device_).eval()
        return model


def load_model(path: str | os.PathLike, *, device: str | torch.device = "auto") -> BaseModel:
    """Load any manifex model saved with ``model.save(path)``.

    Parameters
    ----------
    path
        The file. Only load files you trust: the format is pickle-based.
    device
        Where to put the networks (``"auto"``, ``"cpu"``, ``"cuda"``, ...).

    Returns
    -------
    The fitted model, of the class it was saved from (:class:`DLME`, :class:`TSimCNE`,
    :class:`N2D`).

    Examples
    --------
    >>> import scanpy as sc, manifex as mx
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> model = mx.tl.dlme(adata, return_model=True, progress=False)
    >>> model.save("pbmc_dlme.pt")
    >>> model = mx.models.load_model("pbmc_dlme.pt")
    >>> query = adata[:100].copy()
    >>> mx.tl.embed(query, model, reference=adata)
    """
    return BaseModel.load(path, device=device)


def _registry() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    stack = list(BaseModel.__subclasses__())
    while stack:
        c = stack.pop()
        out[c.__name__] = c
        stack.extend(c.__subclasses__())
    return out


def _col_mean_var(x: np.ndarray | sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    if sp.issparse(x):
        mean = np.asarray(x.mean(0)).ravel()
        sq = np.asarray(x.multiply(x).mean(0)).ravel()
        var = np.maximum(sq - mean**2, 0.0)
    else:
        mean = x.mean(0, dtype=np.float64)
        var = x.var(0, dtype=np.float64)
    return mean.astype(np.float32), var.astype(np.float32)
