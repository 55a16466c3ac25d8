"""Plain-data encodings for safe files: nested values as JSON plus named arrays, estimator
parameters as JSON, and fingerprints of training data.

Nothing here reads or writes files (:mod:`manifex.io._format` does); :func:`unpack_state` and
:func:`decode_params` only build values of the types listed in :func:`pack_state` -- never an
object named by the data.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["ModelFileError", "decode_params", "encode_params", "fingerprint", "pack_state", "unpack_state"]

_TAG = "__mx__"  # marks a JSON object that encodes a non-JSON value (see pack_state)


class ModelFileError(ValueError):
    """A file that is not a readable manifex model or checkpoint file (the message says why).

    Examples
    --------
    >>> from pathlib import Path
    >>> import manifex as mx
    >>> _ = Path("notes.txt").write_text("hello")
    >>> try:
    ...     mx.models.load_model("notes.txt")
    ... except mx.models.ModelFileError as err:
    ...     print(err)
    notes.txt is a text file, not a manifex model file.
    """


# ---- nested values <-> JSON + named arrays -------------------------------------------------
class _Unencodable(TypeError):
    def __init__(self, where: str, obj: Any, why: str = ""):
        self.where, self.obj = where, obj
        super().__init__(
            f"{'The value at ' + where if where else 'The value'} is {_describe(obj)}{why}, which a safe file cannot hold (only dicts, "
            "lists, tuples, None, booleans, numbers, strings, paths, numpy arrays and scalars and torch "
            "tensors can)."
        )


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.nn.Module):
        return f"a torch module ({type(obj).__name__})"
    if callable(obj) and not isinstance(obj, type):
        return f"a function or callable object ({getattr(obj, '__qualname__', type(obj).__qualname__)})"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def pack_state(obj: Any, *, prefix: str = "") -> tuple[Any, dict[str, np.ndarray | torch.Tensor]]:
    """Encode a nested value as plain JSON plus named arrays, exactly reversible by :func:`unpack_state`.

    Dicts (string or integer keys; a dict subclass such as ``OrderedDict`` comes back as a
    dict), lists, tuples, ``None``, booleans, ints, floats (NaN and infinities included),
    strings, paths, :class:`torch.device`, numpy scalars, numpy arrays (numeric and boolean ones
    become named arrays, string arrays JSON lists) and torch tensors (named arrays) are encoded;
    anything else raises :class:`TypeError` naming its place, e.g. ``state['gmm_']``.

    Parameters
    ----------
    obj
        The value.
    prefix
        Put before every array name (e.g. ``"state/"``).

    Returns
    -------
    The JSON value and the arrays, named after their place (``a/b/0``).

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.io._format import pack_state, unpack_state
    >>> js, arrays = pack_state({"mean": np.zeros(3, "float32"), "shape": (8, 8), "loss": float("nan")})
    >>> sorted(arrays), js["shape"]
    (['mean'], {'__mx__': 'tuple', 'items': [8, 8]})
    >>> unpack_state(js, arrays)["shape"]
    (8, 8)
    """
    arrays: dict[str, np.ndarray | torch.Tensor] = {}
    return _pack(obj, (), arrays, str(prefix)), arrays


def unpack_state(json_obj: Any, arrays: Mapping[str, np.ndarray | torch.Tensor]) -> Any:
    """Decode what :func:`pack_state` produced (``arrays`` may come back as torch tensors).

    Parameters
    ----------
    json_obj
        The JSON value.
    arrays
        The arrays, by name (as written; numpy or torch).

    Returns
    -------
    The original value: same types, dtypes and shapes.

    Examples
    --------
    >>> import torch
    >>> from manifex.io._format import pack_state, unpack_state
    >>> js, arrays = pack_state([torch.ones(2, dtype=torch.bfloat16), None])
    >>> unpack_state(js, arrays)
    [tensor([1., 1.], dtype=torch.bfloat16), None]
    """
    try:
        return _unpack(json_obj, arrays, ())
    except RecursionError:
        raise ModelFileError("A saved state is nested too deeply to be read.") from None


def encode_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Estimator constructor arguments as plain JSON (arrays inline), reversible by :func:`decode_params`.

    Parameters
    ----------
    params
        ``model.get_params()``.

    Returns
    -------
    A JSON object.

    Raises
    ------
    TypeError
        A parameter that cannot be written (a callable augmentation, a torch module as backbone):
        a model with such a parameter cannot be saved to a safe file.

    Examples
    --------
    >>> from manifex.io._format import decode_params, encode_params
    >>> js = encode_params({"n_components": 2, "hidden_dims": (64, 32), "lr": 1e-3})
    >>> decode_params(js)
    {'n_components': 2, 'hidden_dims': (64, 32), 'lr': 0.001}
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"`params` must be a dict, got {type(params).__name__}.")
    out = {}
    for name, value in params.items():
        if not isinstance(name, str):
            raise TypeError(f"Parameter names must be strings, got {name!r}.")
        try:
            out[name] = _pack(value, (), None, "")
        except _Unencodable as err:
            inner = f" (at {err.where})" if err.where else ""
            raise TypeError(
                f"Parameter `{name}`{inner} is {_describe(err.obj)}: it cannot be written to a safe model "
                "file, so a model with this parameter cannot be saved (parameters must be numbers, strings, "
                "booleans, None, arrays, or lists / tuples / dicts of them)."
            ) from None
    return out


def decode_params(json_obj: Mapping[str, Any]) -> dict[str, Any]:
    """Decode what :func:`encode_params` produced.

    Parameters
    ----------
    json_obj
        The JSON object.

    Returns
    -------
    The parameters.

    Examples
    --------
    >>> from manifex.io._format import decode_params, encode_params
    >>> decode_params(encode_params({"device": "cpu", "n_epochs": None}))
    {'device': 'cpu', 'n_epochs': None}
    """
    if not isinstance(json_obj, Mapping):
        raise ModelFileError(f"Saved parameters must be a JSON object, got {type(json_obj).__name__}.")
    try:
        return {k: _unpack(v, {}, (k,)) for k, v in json_obj.items()}
    except RecursionError:
        raise ModelFileError("Saved parameters are nested too deeply to be read.") from None


def _where(path: tuple) -> str:
    return "".join(f"[{p!r}]" for p in path)


def _pack(obj: Any, path: tuple, arrays: dict | None, prefix: str) -> Any:
    """``arrays=None``: put arrays inline (base64) instead of naming them."""
    t = type(obj)
    if obj is None or t is bool or t is str:
        return obj
    if t is int:
        return obj
    if t is float:
        return obj if math.isfinite(obj) else {_TAG: "float", "value": repr(obj)}
    if isinstance(obj, np.generic):
        dt = obj.dtype
        if dt.kind not in "biufUS":
            raise _Unencodable(_where(path), obj, f" of dtype {dt}")
        value = obj.item()
        if dt.kind == "S":
            value = value.decode("latin-1")
        return {_TAG: "scalar", "dtype": dt.str, "value": _pack(value, path, arrays, prefix)}
    if isinstance(obj, PurePath):
        return {_TAG: "path", "value": str(obj)}
    if t is torch.device:
        return {_TAG: "device", "value": str(obj)}
    if t is np.ndarray:
        return _pack_array(obj, path, arrays, prefix)
    if isinstance(obj, torch.Tensor) and obj.layout == torch.strided:
        tensor = obj.detach().cpu()
        if arrays is None:
            return {
                _TAG: "tensor",
                "dtype": str(tensor.dtype)[6:],
                "shape": list(tensor.shape),
                "b64": _b64(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()),
            }
        return {
            _TAG: "tensor",
            "dtype": str(tensor.dtype)[6:],
            "shape": list(tensor.shape),
            "name": _name(path, arrays, prefix, tensor),
        }
    if isinstance(obj, dict):
        for k in obj:
            if (type(k) is not str and type(k) is not int) or isinstance(k, bool):
                raise _Unencodable(_where(path), k, " used as a dict key")
        items = {k: _pack(v, (*path, k), arrays, prefix) for k, v in obj.items()}
        if all(type(k) is str for k in obj) and _TAG not in obj:
            return items
        return {_TAG: "dict", "items": [[k, v] for k, v in items.items()]}
    if t is list or t is tuple:
        items = [_pack(v, (*path, i), arrays, prefix) for i, v in enumerate(obj)]
        return items if t is list else {_TAG: "tuple", "items": items}
    raise _Unencodable(_where(path), obj)


def _pack_array(a: np.ndarray, path: tuple, arrays: dict | None, prefix: str) -> Any:
    dt = a.dtype
    if dt.kind in "biuf":
        if arrays is None:
            data = np.ascontiguousarray(a, dtype=dt.newbyteorder("<"))
            return {_TAG: "ndarray", "dtype": dt.str, "shape": list(a.shape), "b64": _b64(data)}
        native = np.ascontiguousarray(a, dtype=dt.newbyteorder("="))
        return {
            _TAG: "ndarray",
            "dtype": dt.str,
            "shape": list(a.shape),
            "name": _name(path, arrays, prefix, native),
        }
    if dt.kind in "US" or (dt.kind == "O" and all(isinstance(v, str) for v in a.flat)):
        flat = [v.decode("latin-1") if dt.kind == "S" else str(v) for v in a.flat]
        return {_TAG: "strarray", "dtype": dt.str, "shape": list(a.shape), "data": flat}
    raise _Unencodable(_where(path), a, f" of dtype {dt}")


def _name(path: tuple, arrays: dict, prefix: str, value: Any) -> str:
    base = prefix + ("/".join(str(p) for p in path) or "value")
    name, i = base, 1
    while name in arrays:
        name, i = f"{base}~{i}", i + 1
    arrays[name] = value
    return name


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(a.tobytes()).decode("ascii")


def _unpack(js: Any, arrays: Mapping[str, Any], path: tuple) -> Any:
    if js is None or type(js) in (bool, int, float, str):
        return js
    if isinstance(js, list):
        return [_unpack(v, arrays, (*path, i)) for i, v in enumerate(js)]
    if not isinstance(js, dict):
        raise ModelFileError(f"Unexpected {type(js).__name__} in a saved state at {_where(path)}.")
    tag = js.get(_TAG)
    if tag is None:
        return {k: _unpack(v, arrays, (*path, k)) for k, v in js.items()}
    try:
        if tag == "dict":
            return {k: _unpack(v, arrays, (*path, k)) for k, v in js["items"]}
        if tag == "tuple":
            return tuple(_unpack(v, arrays, (*path, i)) for i, v in enumerate(js["items"]))
        if tag == "float":
            return float(js["value"])
        if tag == "scalar":
            value = _unpack(js["value"], arrays, path)
            dt = np.dtype(js["dtype"])
            return np.array(value.encode("latin-1") if dt.kind == "S" else value, dtype=dt)[()]
        if tag == "path":
            return Path(js["value"])
        if tag == "device":
            return torch.device(js["value"])
        if tag == "strarray":
            dt = np.dtype(js["dtype"])
            data = [v.encode("latin-1") for v in js["data"]] if dt.kind == "S" else js["data"]
            out = np.empty(len(data), dtype=dt)
            out[:] = data
            return out.reshape(js["shape"])
        if tag in ("ndarray", "tensor"):
            return _unpack_array(js, arrays, tag)
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise ModelFileError(
            f"A saved value at {_where(path) or 'the top level'} is damaged ({err!r})."
        ) from None
    raise ModelFileError(f"Unknown saved value type {tag!r} at {_where(path) or 'the top level'}.")


def _unpack_array(js: dict, arrays: Mapping[str, Any], tag: str) -> np.ndarray | torch.Tensor:
    shape = tuple(js["shape"])
    if tag == "ndarray":
        dt = np.dtype(js["dtype"])
        if "b64" in js:
            a = (
                np.frombuffer(base64.b64decode(js["b64"]), dtype=dt.newbyteorder("<"))
                .astype(dt)
                .reshape(shape)
            )
        else:
            a = _stored(arrays, js["name"])
            a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            a = a.astype(dt, copy=False)
        if a.shape != shape:
            raise ModelFileError(f"Array {js.get('name')!r} has shape {a.shape}, not {shape} as recorded.")
        return a
    dtype = getattr(torch, js["dtype"])
    if not isinstance(dtype, torch.dtype):
        raise ModelFileError(f"Unknown tensor dtype {js['dtype']!r} in a saved state.")
    if "b64" in js:
        raw = torch.frombuffer(bytearray(base64.b64decode(js["b64"])), dtype=torch.uint8)
        t = raw.view(dtype) if raw.numel() else torch.zeros(0, dtype=dtype)
    else:
        t = _stored(arrays, js["name"])
        t = torch.from_numpy(t) if isinstance(t, np.ndarray) else t
    if t.dtype != dtype or t.numel() != math.prod(shape):
        raise ModelFileError(f"Tensor {js.get('name')!r} does not match its recorded dtype and shape.")
    return t.reshape(shape)


def _stored(arrays: Mapping[str, Any], name: str) -> Any:
    if name not in arrays:
        raise ModelFileError(f"The saved state refers to array {name!r}, which the file does not hold.")
    return arrays[name]


# ---- data fingerprints ---------------------------------------------------------------------
def fingerprint(x: Any) -> str:
    """A short identifier of a data matrix: its shape, dtype and values.

    Hashes the shape, the dtype, up to 1,000 evenly spaced rows in full, and per column the
    float64 sum and a sum weighted by a pseudo-random weight of each row's position -- so a
    change of any value, a row or column permutation, or another dtype (the same values as
    float64 instead of float32) changes it. The storage does not: C or Fortran order, dense,
    CSR or CSC of the same values give the same fingerprint (the sums are computed in one
    fixed order, exactly). Reads the data once, in chunks: about 0.1 s for 1,000,000 × 50
    float32 values.

    Parameters
    ----------
    x
        Dense array (any dimensions: images ``(n, H, W[, C])`` count as ``n`` rows), scipy
        sparse matrix, torch tensor, or anything array-like (a backed AnnData matrix is read in
        row chunks).

    Returns
    -------
    ``"mxfp1:<rows>x<columns...>:<dtype>:<hash>"``.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.io._format import fingerprint
    >>> x = np.arange(12, dtype="float32").reshape(4, 3)
    >>> fingerprint(x)[:18]
    'mxfp1:4x3:float32:'
    >>> fingerprint(x) == fingerprint(np.asfortranarray(x)), fingerprint(x) == fingerprint(x[::-1])
    (True, False)
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    if sp.issparse(x):
        x = x.tocsr() if x.format != "csr" else x
        if not x.has_canonical_format:
            x = x.copy()
            x.sum_duplicates()
    elif isinstance(x, np.ndarray) or not all(hasattr(x, a) for a in ("shape", "dtype", "__getitem__")):
        x = np.asarray(x)
    shape, dtype = tuple(int(s) for s in x.shape), np.dtype(x.dtype)
    if len(shape) < 1 or dtype.kind not in "biuf":
        raise TypeError(f"`x` must be a numeric array with rows, got shape {shape} and dtype {dtype}.")
    n, d = shape[0], math.prod(shape[1:])
    h = hashlib.blake2b(f"mxfp1|{shape}|{dtype.newbyteorder('<').str}".encode(), digest_size=16)
    n_rows = min(n, 1000, max(16, 8_000_000 // max(d, 1)))
    sample = np.unique(np.linspace(0, n - 1, n_rows).round().astype(np.int64)) if n else np.zeros(0, np.int64)
    little = dtype.newbyteorder("<")
    for i in range(0, len(sample), 256):
        rows = _rows2d(x[sample[i : i + 256]], d)
        rows = np.ascontiguousarray(rows.toarray() if sp.issparse(rows) else rows, dtype=little)
        if dtype.kind == "f":
            rows = rows + rows.dtype.type(0)  # -0.0 -> 0.0: sparse storage drops negative zeros
        h.update(rows.tobytes())
    sums, wsums = np.zeros(d), np.zeros(d)
    step = max(1, 4_000_000 // max(d, 1))
    for a in range(0, n, step):
        chunk = _rows2d(x[a : a + step], d)
        idx = np.arange(a, a + chunk.shape[0], dtype=np.uint64)
        w = ((idx * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2.0**32 + 2.0**-33
        if sp.issparse(chunk):  # bincount adds in row order from 0, exactly like the dense sum
            vals = chunk.data.astype(np.float64)
            rows_of = np.repeat(np.arange(chunk.shape[0]), np.diff(chunk.indptr))
            sums += np.bincount(chunk.indices, weights=vals, minlength=d)
            wsums += np.bincount(chunk.indices, weights=vals * w[rows_of], minlength=d)
        else:
            c = np.ascontiguousarray(chunk, dtype=np.float64)
            sums += c.sum(0)
            c *= w[:, None]
            wsums += c.sum(0)
    h.update(sums.tobytes())
    h.update(wsums.tobytes())
    return f"mxfp1:{'x'.join(map(str, shape))}:{dtype.name}:{h.hexdigest()}"


def _rows2d(rows: Any, d: int) -> Any:
    if sp.issparse(rows):
        rows = rows.tocsr()
        if not rows.has_canonical_format:
            rows.sum_duplicates()
        return rows
    rows = np.asarray(rows)
    return rows.reshape(rows.shape[0], d)
