"""Safe model and checkpoint files: tensors in safetensors, everything else in JSON.

A file (format version 2) is one `safetensors <https://huggingface.co/docs/safetensors>`_ file.
Its tensors are the named arrays given to :func:`write_file`; its metadata holds two strings:
``"manifex"``, a JSON object ``{"format_version", "kind", "manifex_version", "header"}``, and
``"manifex_checksum"``, a SHA-256 over that JSON and every tensor's name, dtype, shape and bytes
(in name order). :func:`read_file` parses JSON and raw tensor bytes only -- nothing in a file is
ever unpickled or executed -- and refuses, with a :class:`ModelFileError` naming the file and
the problem, anything else: an empty, text, HDF5 or pickle file, another program's safetensors
file, a checkpoint where a model is expected (and vice versa), a newer format, a truncated or
damaged file. :func:`pack_state` turns nested Python / numpy / torch values into JSON plus
named arrays for such a file, :func:`fingerprint` identifies training data, and
:func:`convert_legacy_file` converts a trusted file of the old pickle-based format.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "FORMAT_VERSION",
    "ModelFileError",
    "convert_legacy_file",
    "decode_params",
    "encode_params",
    "fingerprint",
    "pack_state",
    "read_file",
    "unpack_state",
    "write_file",
]

FORMAT_VERSION = 2
_KINDS = ("model", "checkpoint")
_WHAT = {"model": "manifex model file", "checkpoint": "manifex training checkpoint"}
_TAG = "__mx__"  # marks a JSON object that encodes a non-JSON value (see pack_state)


class ModelFileError(ValueError):
    """A file that is not a readable manifex model or checkpoint file (the message says why).

    Examples
    --------
    >>> from pathlib import Path
    >>> from manifex.models._io import ModelFileError, read_file
    >>> _ = Path("notes.txt").write_text("hello")
    >>> try:
    ...     read_file("notes.txt")
    ... except ModelFileError as err:
    ...     print(err)
    notes.txt is a text file, not a manifex model file.
    """


# ---- writing and reading files -------------------------------------------------------------
def write_file(
    path: str | os.PathLike,
    *,
    kind: Literal["model", "checkpoint"],
    header: dict[str, Any],
    arrays: Mapping[str, np.ndarray | torch.Tensor],
    overwrite: bool = False,
) -> None:
    """Write one safe file: ``arrays`` as safetensors tensors, ``header`` as JSON metadata.

    Parameters
    ----------
    path
        File to write. It is written to a temporary file beside it and renamed, so a reader
        never sees a half-written file.
    kind
        ``"model"`` or ``"checkpoint"``; :func:`read_file` refuses a file of the other kind.
    header
        Plain JSON (dicts, lists, strings, numbers, booleans, ``None``; no NaN): use
        :func:`pack_state` for anything else.
    arrays
        Named numeric or boolean arrays (numpy or torch, any shape).
    overwrite
        Replace an existing file.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.models._io import read_file, write_file
    >>> write_file("w.safetensors", kind="model", header={"class": "X"}, arrays={"w": np.eye(2)})
    >>> header, arrays = read_file("w.safetensors")
    >>> header, arrays["w"].dtype
    ({'class': 'X'}, torch.float64)
    """
    path = Path(path)
    _check_kind(kind)
    if not isinstance(header, dict):
        raise TypeError(f"`header` must be a dict, got {type(header).__name__}.")
    if not isinstance(arrays, Mapping):
        raise TypeError(f"`arrays` must be a mapping of names to arrays, got {type(arrays).__name__}.")
    tensors = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"Array names must be non-empty strings, got {name!r}.")
        tensors[name] = _as_tensor(a, name)
    desc = {"format_version": FORMAT_VERSION, "kind": kind, "manifex_version": _version(), "header": header}
    try:
        text = json.dumps(desc, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`header` must hold plain JSON values only (encode arrays, numpy values and non-finite "
            f"floats with pack_state): {err}."
        ) from None
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write {path}: the directory {path.parent} does not exist.")
    from safetensors.torch import save_file

    meta = {"manifex": text, "manifex_checksum": _checksum(text, tensors)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_file(
    path: str | os.PathLike, *, kind: Literal["model", "checkpoint"] = "model"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a file written by :func:`write_file`; nothing in it is unpickled or executed.

    Parameters
    ----------
    path
        The file.
    kind
        The kind expected: ``"model"`` or ``"checkpoint"``.

    Returns
    -------
    The ``header`` and the named tensors (on the CPU), checked against the file's checksum.

    Raises
    ------
    FileNotFoundError
        No such file.
    ModelFileError
        The file is not a manifex file of this kind, or is damaged (the message says which).

    Examples
    --------
    >>> import torch
    >>> from manifex.models._io import read_file, write_file
    >>> write_file("ck.safetensors", kind="checkpoint", header={"step": 3}, arrays={"w": torch.ones(2)})
    >>> read_file("ck.safetensors", kind="checkpoint")[0]
    {'step': 3}
    >>> try:
    ...     read_file("ck.safetensors")
    ... except ValueError as err:
    ...     print(str(err).split(":")[0])
    ck.safetensors is a manifex training checkpoint, not a model file
    """
    _check_kind(kind)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such file: {path}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory, not a {_WHAT[kind]}.")
    data = path.read_bytes()
    text = _manifex_metadata(path, data, kind)
    try:
        desc = json.loads(text)
        version, file_kind, header = desc["format_version"], desc["kind"], desc["header"]
    except (ValueError, TypeError, KeyError) as err:
        raise ModelFileError(f"{path} is damaged: its manifex description cannot be read ({err}).") from None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by manifex {desc.get('manifex_version', '?')} in file format version "
            f"{version}; this manifex ({_version()}) reads format version {FORMAT_VERSION}: upgrade manifex."
        )
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} has file format version {version}, which no manifex writes.")
    if file_kind != kind:
        if file_kind == "checkpoint":
            raise ModelFileError(
                f"{path} is a manifex training checkpoint, not a model file: pass it as `checkpoint=` "
                "to resume training, or load the file written by `model.save`."
            )
        raise ModelFileError(
            f"{path} is a manifex {'model file' if file_kind == 'model' else repr(file_kind) + ' file'}, "
            f"not a training checkpoint; use another `checkpoint` path."
        )
    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as err:  # the Rust reader raises its own exception type
        raise ModelFileError(f"{path} is damaged: its tensors cannot be read ({err}).") from None
    meta = _safetensors_header(path, data, kind).get("__metadata__", {})
    if not isinstance(header, dict) or meta.get("manifex_checksum") != _checksum(text, tensors):
        raise ModelFileError(
            f"{path} is damaged: its contents do not match the checksum written with it (the file was "
            "changed or corrupted after it was saved)."
        )
    return header, tensors


def _manifex_metadata(path: Path, data: bytes, kind: str) -> str:
    """Recognise the file type from its bytes; return the ``"manifex"`` metadata string."""
    what = _WHAT[kind]
    if not data:
        raise ModelFileError(f"{path} is empty (0 bytes), not a {what}; was it written completely?")
    if data.startswith(b"\x89HDF\r\n\x1a\n"):
        raise ModelFileError(
            f"{path} is an HDF5 file (an AnnData .h5ad file?), not a {what}; read AnnData files with "
            "anndata.read_h5ad."
        )
    if data.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            names = []
        if any(n.endswith("data.pkl") for n in names) or not names:
            raise ModelFileError(_legacy_message(path))
        raise ModelFileError(f"{path} is a zip archive (an .npz or .zip file?), not a {what}.")
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ModelFileError(_legacy_message(path))
    st = _safetensors_header(path, data, kind)
    meta = st.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get("manifex"), str):
        raise ModelFileError(
            f"{path} is a safetensors file without manifex metadata: not a {what} (another program "
            "wrote it)."
        )
    return meta["manifex"]


def _safetensors_header(path: Path, data: bytes, kind: str) -> dict[str, Any]:
    what = _WHAT[kind]
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if len(data) < 8 or data[8:9] != b"{":
        try:
            sample = data[:4096].decode("utf-8")
        except UnicodeDecodeError:
            sample = None
        if sample is not None and "\x00" not in sample:
            raise ModelFileError(f"{path} is a text file, not a {what}.")
        raise ModelFileError(
            f"{path} is not a {what}: its contents are of an unknown format (it does not start like a "
            "safetensors file). Is it damaged, or another kind of file?"
        )
    if 8 + n > len(data):
        raise ModelFileError(
            f"{path} is truncated: it has {len(data)} bytes, fewer than its header alone announces "
            f"({8 + n}); the file was not written or copied completely."
        )
    try:
        st = json.loads(data[8 : 8 + n].decode("utf-8"))
        end = max([v["data_offsets"][1] for k, v in st.items() if k != "__metadata__"] or [0])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise ModelFileError(f"{path} is damaged: its header cannot be read ({err}).") from None
    if not isinstance(end, int) or 8 + n + end != len(data):
        if isinstance(end, int) and 8 + n + end > len(data):
            raise ModelFileError(
                f"{path} is truncated: it has {len(data)} bytes where its header announces {8 + n + end}; "
                "the file was not written or copied completely."
            )
        raise ModelFileError(f"{path} is damaged: its length does not match its header.")
    return st


def _legacy_message(path: Path) -> str:
    return (
        f"{path} is a pickle-based file: a legacy manifex model file (format version 1) or another "
        "torch.save / pickle file. It is not loaded, because unpickling can run code hidden in the "
        "file. If you trust it (you wrote it yourself), convert it once with "
        f"mx.models.convert_legacy_file({str(path)!r}, 'new_file.mx') and load the new file."
    )


def _check_kind(kind: Any) -> None:
    if kind not in _KINDS:
        raise ValueError(f"`kind` must be 'model' or 'checkpoint', got {kind!r}.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("manifex")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _as_tensor(a: Any, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        if a.layout != torch.strided:
            raise TypeError(f"Array {name!r} is a {a.layout} tensor; only dense tensors can be written.")
        # a copy: safetensors refuses tensors that share memory (views of one another)
        return a.detach().to("cpu").resolve_conj().resolve_neg().contiguous().clone()
    if isinstance(a, np.ndarray) and a.dtype.kind in "biuf":
        try:
            return torch.from_numpy(np.array(a, dtype=a.dtype.newbyteorder("="), order="C"))
        except TypeError:
            pass
    dtype = getattr(a, "dtype", None)
    raise TypeError(
        f"Array {name!r} is a {type(a).__name__}{f' of dtype {dtype}' if dtype is not None else ''}; only "
        "numeric or boolean numpy arrays and torch tensors can be written."
    )


def _checksum(text: str, tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256(b"manifex file v2\0")
    h.update(text.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].contiguous().reshape(-1)
        raw = t.view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
        h.update(f"\0{name}\0{t.dtype}\0{list(tensors[name].shape)}\0{raw.size}\0".encode())
        h.update(raw.data)
    return "sha256:" + h.hexdigest()


# ---- nested values <-> JSON + named arrays -------------------------------------------------
class _Unencodable(TypeError):
    def __init__(self, where: str, obj: Any, why: str = ""):
        self.where, self.obj = where, obj
        super().__init__(
            f"{where or 'The value'} is {_describe(obj)}{why}, which a safe file cannot hold (only dicts, "
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
    >>> from manifex.models._io import pack_state, unpack_state
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
    >>> from manifex.models._io import pack_state, unpack_state
    >>> js, arrays = pack_state([torch.ones(2, dtype=torch.bfloat16), None])
    >>> unpack_state(js, arrays)
    [tensor([1., 1.], dtype=torch.bfloat16), None]
    """
    return _unpack(json_obj, arrays, ())


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
    >>> from manifex.models._io import decode_params, encode_params
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
    >>> from manifex.models._io import decode_params, encode_params
    >>> decode_params(encode_params({"device": "cpu", "n_epochs": None}))
    {'device': 'cpu', 'n_epochs': None}
    """
    if not isinstance(json_obj, Mapping):
        raise ModelFileError(f"Saved parameters must be a JSON object, got {type(json_obj).__name__}.")
    return {k: _unpack(v, {}, (k,)) for k, v in json_obj.items()}


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
            return {_TAG: "tensor", "dtype": str(tensor.dtype)[6:], "shape": list(tensor.shape),
                    "b64": _b64(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())}
        return {_TAG: "tensor", "dtype": str(tensor.dtype)[6:], "shape": list(tensor.shape),
                "name": _name(path, arrays, prefix, tensor)}
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
        return {_TAG: "ndarray", "dtype": dt.str, "shape": list(a.shape), "name": _name(path, arrays, prefix, native)}
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
        raise ModelFileError(f"A saved value at {_where(path) or 'the top level'} is damaged ({err!r}).") from None
    raise ModelFileError(f"Unknown saved value type {tag!r} at {_where(path) or 'the top level'}.")


def _unpack_array(js: dict, arrays: Mapping[str, Any], tag: str) -> np.ndarray | torch.Tensor:
    shape = tuple(js["shape"])
    if tag == "ndarray":
        dt = np.dtype(js["dtype"])
        if "b64" in js:
            a = np.frombuffer(base64.b64decode(js["b64"]), dtype=dt.newbyteorder("<")).astype(dt).reshape(shape)
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
    >>> from manifex.models._io import fingerprint
    >>> x = np.arange(12, dtype="float32").reshape(4, 3)
    >>> fingerprint(x)[:22]
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
        rows = rows.toarray() if sp.issparse(rows) else rows
        h.update(np.ascontiguousarray(rows, dtype=little).tobytes())
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
    return np.asarray(rows).reshape(-1, d)


# ---- legacy files --------------------------------------------------------------------------
_LEGACY_RENAMES = {("N2D", "n_components"): "n_latent"}


def convert_legacy_file(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Convert a model file of the old pickle-based format (manifex < 0.2) to the safe format.

    **This runs code from** ``src``: the old format is a pickle, which can execute anything
    when it is read. Use it only on files you trust (ones you wrote yourself); the new file
    is then safe to share and to load.

    Parameters
    ----------
    src
        The old file (written by ``model.save`` of an older manifex).
    dst
        The new file.
    overwrite
        Replace ``dst`` if it exists.

    Examples
    --------
    >>> import numpy as np, torch, manifex as mx
    >>> from manifex.models._io import convert_legacy_file
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
    if not isinstance(payload, dict) or payload.get("format_version") != 1 or any(k not in payload for k in need):
        raise ModelFileError(f"{src} is not a legacy manifex model file (format version 1 with {', '.join(need)}).")
    from . import _base

    name = payload["class"]
    klass = _base._registry().get(name)
    if klass is None:
        raise ModelFileError(f"{src} holds an unknown model class {name!r}.")
    import inspect

    allowed = set(inspect.signature(klass.__init__).parameters) - {"self"}
    params = {}
    for k, v in dict(payload["params"]).items():
        k = _LEGACY_RENAMES.get((name, k), k)
        if k in allowed:
            params[k] = v
    params["device"] = "cpu"
    model = klass(**params)
    for k, v in {**payload["input"], **payload["state"], **(payload.get("extra") or {})}.items():
        setattr(model, k, v)
    if getattr(model, "kind_", None) is None:
        model.kind_ = "expression"
    model.device_ = torch.device("cpu")
    model._build_modules()
    for k, sd in payload["modules"].items():
        getattr(model, k).load_state_dict(sd)
        getattr(model, k).eval()
    model.save(dst, overwrite=overwrite)
