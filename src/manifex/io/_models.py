"""Saving and loading fitted models through the safe file format of :mod:`manifex.io._format`.

A model file holds, as named tensors, every module's ``state_dict`` (``modules/<name>/<key>``)
and the arrays of the fitted state; its JSON header holds the class, the format version, the
constructor parameters, the recorded input (feature names, per-feature mean and standard
deviation, the data fingerprint, the AnnData input spec) and the rest of the fitted state.
Loading reads JSON and tensors only, checks the checksum, then builds the model from its class
registry: nothing in the file is executed.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from scanpy import logging as logg

from .._utils import resolve_device
from ._format import (
    ModelFileError,
    decode_params,
    encode_params,
    pack_state,
    read_file,
    unpack_state,
    write_file,
)
from ._input_spec import InputSpec

if TYPE_CHECKING:
    from ..models._base import BaseModel

__all__ = [
    "convert_legacy_file",
    "load_model",
    "load_model_file",
    "model_class",
    "register_model",
    "save_model",
]

#: model classes by name, filled by :func:`register_model` (``BaseModel.__init_subclass__``)
_MODEL_CLASSES: dict[str, type] = {}


def register_model(klass: type) -> type:
    """Make ``klass`` loadable from a model file under its class name (each model class is
    registered when it is defined; a second class of the same name replaces the first)."""
    _MODEL_CLASSES[klass.__name__] = klass
    return klass


def model_class(name: Any) -> type | None:
    """The registered model class called ``name``, or ``None``."""
    return _MODEL_CLASSES.get(name) if isinstance(name, str) else None


_INPUT_NAMES = (
    "n_features_in_",
    "feature_names_in_",
    "feature_mean_",
    "feature_std_",
    "data_fingerprint_",
    "input_spec_",
    "kind_",
)


def _input_record(model: BaseModel) -> dict[str, Any]:
    """What a model recorded about its input, as written to a file: the input spec as the dict of
    :meth:`InputSpec.to_dict`."""
    record = {k: getattr(model, k, None) for k in _INPUT_NAMES}
    spec = InputSpec.coerce(record["input_spec_"], name="model.input_spec_")
    record["input_spec_"] = spec.to_dict() if spec is not None else None
    return record


def _set_input_record(model: BaseModel, record: dict[str, Any]) -> None:
    """The inverse of :func:`_input_record` (the spec of an older file too: :meth:`InputSpec.from_dict`)."""
    for k, v in record.items():
        setattr(model, k, InputSpec.coerce(v, name="input_spec_") if k == "input_spec_" else v)


def _encodable_params(model: BaseModel) -> tuple[dict[str, Any], list[str]]:
    """The constructor parameters as JSON; training-only parameters that cannot be written
    (a callable augmentation) are left out and named."""
    params = model.get_params(deep=False)
    dropped: list[str] = []
    for name in model._training_only_params:
        try:
            encode_params({name: params[name]})
        except TypeError:
            dropped.append(name)
            params.pop(name)
    return encode_params(params), dropped


def save_model(model: BaseModel, path: Path, *, overwrite: bool = False) -> None:
    """Write ``model`` (fitted) to ``path``."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
    params, dropped = _encodable_params(model)
    if dropped:
        logg.warning(
            f"{type(model).__name__}.save: {', '.join(dropped)} cannot be written to a safe file (a "
            "callable); the loaded model uses the default, which only matters for training it again."
        )
    arrays: dict[str, Any] = {}
    for name in model._module_names:
        for k, t in getattr(model, name).state_dict().items():
            arrays[f"modules/{name}/{k}"] = t.detach().cpu().contiguous()
    state = {"input": _input_record(model), "state": model._get_state()}
    js, state_arrays = pack_state(state)
    for k, v in state_arrays.items():
        arrays[f"state/{k}"] = v
    header = {
        "class": type(model).__name__,
        "params": params,
        "unsaved_params": dropped,
        "modules": list(model._module_names),
        "state": js,
    }
    write_file(path, kind="model", header=header, arrays=arrays, overwrite=overwrite)


def load_model_file(path: Path, *, device: str | torch.device, expected: type[BaseModel] | None) -> BaseModel:
    """Read a model written by :func:`save_model`; refuse other classes than ``expected``."""
    dev = resolve_device(device)
    header, arrays = read_file(path, kind="model")
    name = header.get("class")
    klass = model_class(name)
    if klass is None:
        raise ModelFileError(f"{path} holds an unknown model class {name!r}.")
    if expected is not None and not issubclass(klass, expected):
        raise TypeError(f"{path} holds a {name}, not a {expected.__name__}.")
    try:
        params = decode_params(header["params"])
        state = unpack_state(
            header["state"], {k[len("state/") :]: v for k, v in arrays.items() if k.startswith("state/")}
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: the model description is damaged ({err}).") from err
    allowed = set(inspect.signature(klass.__init__).parameters) - {"self"}
    unknown = set(params) - allowed
    if unknown:
        raise ModelFileError(f"{path}: unknown parameters for {name}: {', '.join(sorted(unknown))}.")
    params["device"] = device
    try:
        model = klass(**params)
        model._validate_params()
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: the saved parameters are not valid for {name} ({err}).") from err
    try:
        _set_input_record(model, state["input"])
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: the recorded input is damaged ({err}).") from err
    model._set_state(state["state"])
    model.device_ = dev
    model._build_modules()
    for mname in klass._module_names:
        module = getattr(model, mname)
        prefix = f"modules/{mname}/"
        sd = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sd)
        except RuntimeError as err:
            raise ModelFileError(f"{path}: the weights of {mname} do not fit the network ({err}).") from err
        module.to(dev).eval()
    return model


_LEGACY_RENAMES = {("N2D", "n_components"): "n_latent"}


def convert_legacy_file(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Convert a model file of the old pickle-based format (format version 1) to the safe format.

    **This runs code from** ``src``: the old format is a pickle, which can execute anything
    when it is read. Use it only on files you trust (ones you wrote yourself); the new file
    is then safe to share and to load.

    Parameters
    ----------
    src
        The old file (written by ``model.save`` of a manifex that wrote ``torch.save`` files).
    dst
        The new file.
    overwrite
        Replace ``dst`` if it exists.

    Examples
    --------
    >>> import numpy as np, torch, manifex as mx
    >>> from manifex.models import convert_legacy_file
    >>> x = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")
    >>> m = mx.models.DLME(n_steps=10, progress=False).fit(x)
    >>> legacy = {"format_version": 1, "class": "DLME", "params": m.get_params(), "extra": {},
    ...           "modules": {k: getattr(m, k).state_dict() for k in m._module_names},
    ...           "state": {"history_": m.history_, "scale_": m.scale_},
    ...           "input": {k: getattr(m, k) for k in ("n_features_in_", "feature_names_in_",
    ...                     "feature_mean_", "feature_std_", "input_spec_")}}
    >>> torch.save(legacy, "old.pt")
    >>> convert_legacy_file("old.pt", "new.mx")
    >>> np.allclose(mx.models.load_model("new.mx", device="cpu").transform(x), m.transform(x), atol=1e-5)
    True
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"No such file: {src}")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass `overwrite=True` to replace it.")
    payload = torch.load(src, map_location="cpu", weights_only=False)  # trusted by the caller
    need = ("class", "params", "modules", "state", "input")
    if (
        not isinstance(payload, dict)
        or payload.get("format_version") != 1
        or any(k not in payload for k in need)
    ):
        raise ModelFileError(
            f"{src} is not a legacy manifex model file (format version 1 with {', '.join(need)})."
        )
    name = payload["class"]
    klass = model_class(name)
    if klass is None:
        raise ModelFileError(f"{src} holds an unknown model class {name!r}.")
    allowed = set(inspect.signature(klass.__init__).parameters) - {"self"}
    params = {}
    for k, v in dict(payload["params"]).items():
        k = _LEGACY_RENAMES.get((name, k), k)
        if k in allowed:
            params[k] = v
    params["device"] = "cpu"
    model = klass(**params)
    _set_input_record(model, payload["input"])
    for k, v in {**payload["state"], **(payload.get("extra") or {})}.items():
        setattr(model, k, v)
    if getattr(model, "kind_", None) is None:
        model.kind_ = "expression"
    model.device_ = torch.device("cpu")
    model._build_modules()
    for k, sd in payload["modules"].items():
        getattr(model, k).load_state_dict(sd)
        getattr(model, k).eval()
    model.save(dst, overwrite=overwrite)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "auto") -> Any:
    """Load any manifex model saved with ``model.save(path)``; nothing in the file is executed.

    The file holds tensors (safetensors) and a JSON description; it is checked (format, class,
    checksum) before anything is built. Files of the old pickle-based format are refused: convert
    one you trust with :func:`manifex.models.convert_legacy_file`.

    Parameters
    ----------
    path
        The file.
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
    >>> model = mx.tl.dlme(adata, n_steps=200, return_model=True, progress=False)
    >>> model.save("pbmc_dlme.mx")
    >>> model = mx.models.load_model("pbmc_dlme.mx")
    >>> query = adata[:100].copy()
    >>> mx.tl.embed(query, model, reference=adata)
    >>> query.obsm["X_dlme"].shape
    (100, 2)
    """
    return load_model_file(Path(path), device=device, expected=None)
