"""Safe model and checkpoint files: tensors in safetensors, everything else in JSON.

A file (format version 2) is one `safetensors <https://huggingface.co/docs/safetensors>`_ file.
Its tensors are the named arrays given to :func:`write_file`; its metadata holds two strings:
``"manifex"``, a JSON object ``{"format_version", "kind", "manifex_version", "header"}``, and
``"manifex_checksum"``, a SHA-256 over that JSON and every tensor's name, dtype, shape and bytes
(in name order). :func:`read_file` parses JSON and raw tensor bytes only -- nothing in a file is
ever unpickled or executed -- and refuses, with a :class:`ModelFileError` naming the file and
the problem, anything else: an empty, text, HDF5 or pickle file, another program's safetensors
file, a checkpoint where a model is expected (and vice versa), a newer format, a truncated or
damaged file. :func:`convert_legacy_file` converts a trusted file of the old pickle-based format.
The encodings that fill a file (:func:`pack_state`, :func:`encode_params`, :func:`fingerprint`)
live in :mod:`manifex.io._encode` and are exported here too.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ._encode import (
    ModelFileError,
    decode_params,
    encode_params,
    fingerprint,
    pack_state,
    unpack_state,
)

__all__ = [
    "FORMAT_VERSION",
    "ModelFileError",
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
    >>> from manifex.io._format import read_file, write_file
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
    >>> from manifex.io._format import read_file, write_file
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
    meta = _manifex_metadata(path, data, kind)
    text = meta["manifex"]
    try:
        desc = json.loads(text)
        version, file_kind, header = desc["format_version"], desc["kind"], desc["header"]
    except (ValueError, TypeError, KeyError, RecursionError) as err:
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
    if not isinstance(header, dict) or meta.get("manifex_checksum") != _checksum(text, tensors):
        raise ModelFileError(
            f"{path} is damaged: its contents do not match the checksum written with it (the file was "
            "changed or corrupted after it was saved)."
        )
    return header, tensors


def _manifex_metadata(path: Path, data: bytes, kind: str) -> dict[str, str]:
    """Recognise the file type from its bytes; return the safetensors metadata of a manifex file."""
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
            raise ModelFileError(_legacy_message(path, kind))
        raise ModelFileError(f"{path} is a zip archive (an .npz or .zip file?), not a {what}.")
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ModelFileError(_legacy_message(path, kind))
    st = _safetensors_header(path, data, kind)
    meta = st.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get("manifex"), str):
        raise ModelFileError(
            f"{path} is a safetensors file without manifex metadata: not a {what} (another program wrote it)."
        )
    return meta


def _safetensors_header(path: Path, data: bytes, kind: str) -> dict[str, Any]:
    what = _WHAT[kind]
    n = int.from_bytes(data[:8], "little")
    # a safetensors file starts with its header's length (little-endian u64, < 2**48) and "{"
    if len(data) < 8 or data[6:8] != b"\0\0" or data[8:9] not in (b"{", b""):
        head = data[:4096]
        try:
            sample = head.decode("utf-8")
        except UnicodeDecodeError as err:  # a character cut at the end of the sample is fine
            sample = head[: err.start].decode("utf-8") if err.start > len(head) - 4 else ""
        if sample and "".join(sample.split()).isprintable():
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
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as err:
        raise ModelFileError(f"{path} is damaged: its header cannot be read ({err}).") from None
    if not isinstance(end, int) or 8 + n + end != len(data):
        if isinstance(end, int) and 8 + n + end > len(data):
            raise ModelFileError(
                f"{path} is truncated: it has {len(data)} bytes where its header announces {8 + n + end}; "
                "the file was not written or copied completely."
            )
        raise ModelFileError(f"{path} is damaged: its length does not match its header.")
    return st


def _legacy_message(path: Path, kind: str) -> str:
    if kind == "checkpoint":
        return (
            f"{path} is a pickle-based file (a checkpoint of an older manifex, or another torch.save / "
            "pickle file). It is not loaded, because unpickling can run code hidden in the file: delete "
            "it (training starts over) or choose another `checkpoint` path."
        )
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
    if isinstance(a, np.generic):
        a = np.asarray(a)
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


# ---- legacy files --------------------------------------------------------------------------
