"""Saving and loading fitted models through the safe file format of :mod:`manifex.models._io`.

A model file holds, as named tensors, every module's ``state_dict`` (``modules/<name>/<key>``)
and the arrays of the fitted state; its JSON header holds the class, the format version, the
constructor parameters, the recorded input (feature names, per-feature mean and standard
deviation, the data fingerprint, the AnnData input spec) and the rest of the fitted state.
Loading reads JSON and tensors only, checks the checksum, then builds the model from its class
registry: nothing in the file is executed.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from scanpy import logging as logg

from .._utils import resolve_device

if TYPE_CHECKING:
    from ._base import BaseModel

__all__ = ["load_model_file", "save_model"]

_INPUT_NAMES = (
    "n_features_in_",
    "feature_names_in_",
    "feature_mean_",
    "feature_std_",
    "data_fingerprint_",
    "input_spec_",
    "kind_",
)


def _encodable_params(model: BaseModel) -> tuple[dict[str, Any], list[str]]:
    """The constructor parameters as JSON; training-only parameters that cannot be written
    (a callable augmentation) are left out and named."""
    from ._io import encode_params

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
    from ._io import pack_state, write_file

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
    state = {
        "input": {k: getattr(model, k, None) for k in _INPUT_NAMES},
        "state": model._get_state(),
    }
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


def load_model_file(path: Path, *, device: str | torch.device, expected: type[BaseModel]) -> BaseModel:
    """Read a model written by :func:`save_model`; refuse other classes than ``expected``."""
    from ._base import BaseModel, _registry
    from ._io import ModelFileError, decode_params, read_file, unpack_state

    dev = resolve_device(device)
    header, arrays = read_file(path, kind="model")
    name = header.get("class")
    klass = _registry().get(name) if isinstance(name, str) else None
    if klass is None:
        raise ModelFileError(f"{path} holds an unknown model class {name!r}.")
    if expected is not BaseModel and not issubclass(klass, expected):
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
    for k, v in state["input"].items():
        setattr(model, k, v)
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
