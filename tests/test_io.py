"""The safe model-file format: round trips, refusals with clear messages, no code run on load,
data fingerprints and the scikit-learn / UMAP state of N2D."""

from __future__ import annotations

import os
import pickle
import time
import warnings
from collections import OrderedDict, namedtuple
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from manifex.io import _format as _io
from manifex.io._format import (
    ModelFileError,
    decode_params,
    encode_params,
    fingerprint,
    pack_state,
    read_file,
    unpack_state,
    write_file,
)
from manifex.io._models import convert_legacy_file


def same(a, b) -> bool:
    """Exact equality of nested values, types and dtypes included (NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        )
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and (a == b or (a != a and b != b))
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    return a == b


def nested_state():
    rng = np.random.default_rng(0)
    return {
        "weights": rng.normal(size=(4, 3)).astype(np.float32),
        "counts": np.arange(6, dtype=np.uint16).reshape(2, 3),
        "big_endian": np.arange(3, dtype=">f8"),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 5), dtype=np.int64),
        "genes": np.array(["CD3E", "MS4A1", "Ωmega"]),
        "bytes": np.array([b"ab", b"c"]),
        "obj_names": np.array(["a", "bb"], dtype=object),
        "scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), np.float64("nan"), np.str_("x")],
        "floats": (1e-300, float("nan"), float("inf"), -float("inf"), -0.0),
        "ints": [0, -(2**70), True, None, "text"],
        "history": {"loss": [0.5, 0.25], "lr": (1e-3,)},
        "by_index": {0: "zero", 3: [1, 2]},
        "reserved": {"__mx__": "not a marker"},
        "tensor": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "bf16": torch.ones(3, dtype=torch.bfloat16),
        "scalar_tensor": torch.tensor(7, dtype=torch.int64),
        "gen_state": torch.Generator().manual_seed(0).get_state(),
        "path": Path("runs") / "ck.mx",
        "device": torch.device("cpu"),
        "nested": [[{"a": (np.ones(2),)}]],
    }


# ---- file round trips ----------------------------------------------------------------------
def test_file_round_trip_keeps_header_arrays_and_dtypes(tmp_path):
    arrays = {
        "modules/encoder/0.weight": torch.randn(5, 3),
        "modules/encoder/0.bias": torch.zeros(5, dtype=torch.float64),
        "half": torch.ones(2, dtype=torch.bfloat16),
        "flags": np.array([True, False, True]),
        "image": np.arange(12, dtype=np.uint8).reshape(2, 2, 3),
        "scalar": np.array(2.5, dtype=np.float32),
        "np_scalar": np.int16(-4),
        "none": np.zeros((0,), np.int32),
    }
    header = {"class": "DLME", "params": {"n_components": 2, "dims": [500, 300]}, "note": "Ωk"}
    path = tmp_path / "m.mx"
    write_file(path, kind="model", header=header, arrays=arrays)
    got_header, got = read_file(path)
    assert got_header == header
    assert sorted(got) == sorted(arrays)
    for k, v in arrays.items():
        expected = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))
        assert got[k].dtype == expected.dtype and torch.equal(got[k], expected), k
    assert [p.name for p in tmp_path.iterdir()] == ["m.mx"]  # no temporary file left


def test_pack_state_round_trips_exactly_in_memory_and_through_a_file(tmp_path):
    state = nested_state()
    js, arrays = pack_state(state, prefix="state/")
    assert all(k.startswith("state/") for k in arrays)
    assert same(unpack_state(js, arrays), state)
    write_file(tmp_path / "s.mx", kind="checkpoint", header={"state": js}, arrays=arrays)
    header, tensors = read_file(tmp_path / "s.mx", kind="checkpoint")
    back = unpack_state(header["state"], tensors)
    assert same(back, state)
    assert type(back["floats"]) is tuple and back["big_endian"].dtype == np.dtype(">f8")
    assert str(back["floats"][-1]) == "-0.0"


def test_pack_state_turns_dict_subclasses_into_dicts():
    sd = OrderedDict(w=torch.ones(2))
    js, arrays = pack_state(sd)
    back = unpack_state(js, arrays)
    assert type(back) is dict and torch.equal(back["w"], sd["w"])


def test_arrays_with_colliding_names_stay_apart():
    obj = {"a/b": np.zeros(1), "a": {"b": np.ones(1)}}
    js, arrays = pack_state(obj)
    assert len(arrays) == 2
    assert same(unpack_state(js, arrays), obj)


@pytest.mark.parametrize(
    ("value", "where", "what"),
    [
        ({"a": {"b": [1, object()]}}, "['a']['b'][1]", "builtins.object"),
        ({"aug": lambda x: x}, "['aug']", "function"),
        ({"net": torch.nn.Linear(2, 2)}, "['net']", "torch module (Linear)"),
        ({"s": {1, 2}}, "['s']", "builtins.set"),
        ({"t": namedtuple("P", "x y")(1, 2)}, "['t']", "P"),
        ({"d": np.array(["2020-01-01"], dtype="datetime64[D]")}, "['d']", "datetime64"),
        ({"o": np.array([1, "a"], dtype=object)}, "['o']", "dtype object"),
        ({(1, 2): 3}, "", "tuple"),
    ],
)
def test_pack_state_refuses_what_it_cannot_write_and_names_the_place(value, where, what):
    with pytest.raises(TypeError) as info:
        pack_state(value)
    msg = str(info.value)
    assert where in msg and what in msg and "cannot hold" in msg


def test_encode_params_round_trip_and_refusals():
    params = {
        "n_components": 2,
        "hidden_dims": (500, 500, 2000),
        "lr": 1e-3,
        "n_epochs": None,
        "device": torch.device("cpu"),
        "checkpoint": Path("ck.mx"),
        "init": np.eye(2, dtype=np.float32),
        "grad_clip_value": float("inf"),
        "preset": "default",
    }
    js = encode_params(params)
    import json

    assert json.loads(json.dumps(js, allow_nan=False)) == js  # strict JSON, arrays inline
    assert same(decode_params(js), params)
    with pytest.raises(TypeError, match=r"Parameter `augment` .*function.*cannot be saved"):
        encode_params({"n_components": 2, "augment": lambda x, g: x})
    with pytest.raises(TypeError, match=r"Parameter `backbone` is a torch module.*cannot be saved"):
        encode_params({"backbone": torch.nn.Conv2d(1, 2, 3)})


def test_unpack_state_names_a_missing_array():
    js, _ = pack_state({"w": np.ones(3)})
    with pytest.raises(ModelFileError, match="array 'w'"):
        unpack_state(js, {})


def test_write_file_refuses_an_existing_file_and_bad_input(tmp_path):
    path = tmp_path / "m.mx"
    write_file(path, kind="model", header={"v": 1}, arrays={"w": np.ones(2)})
    with pytest.raises(FileExistsError, match=r"m\.mx.*overwrite=True"):
        write_file(path, kind="model", header={"v": 2}, arrays={"w": np.ones(2)})
    with pytest.raises(TypeError, match="plain JSON"):
        write_file(path, kind="model", header={"v": np.float32(1)}, arrays={}, overwrite=True)
    with pytest.raises(TypeError, match="plain JSON"):
        write_file(path, kind="model", header={"v": float("nan")}, arrays={}, overwrite=True)
    with pytest.raises(TypeError, match=r"'w'.*dtype object"):
        write_file(path, kind="model", header={}, arrays={"w": np.array([None])}, overwrite=True)
    with pytest.raises(ValueError, match="`kind`"):
        write_file(path, kind="weights", header={}, arrays={}, overwrite=True)
    assert read_file(path)[0] == {"v": 1}  # the refused writes left the file alone
    write_file(path, kind="model", header={"v": 3}, arrays={}, overwrite=True)
    assert read_file(path)[0] == {"v": 3}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "m.mx"
    write_file(path, kind="model", header={"v": 1}, arrays={"w": np.ones(2)})

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        write_file(path, kind="model", header={"v": 2}, arrays={"w": np.ones(2)}, overwrite=True)
    monkeypatch.undo()
    assert read_file(path)[0] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.mx"]


# ---- files that are not manifex files ------------------------------------------------------
class Payload:
    """Unpickling this creates a directory: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def legacy_dict(marker: Path) -> dict:
    return {
        "format_version": 1,
        "class": "DLME",
        "params": {"n_components": 2},
        "modules": {"encoder_": {"0.weight": torch.ones(2, 2)}},
        "state": {"history_": Payload(marker)},
        "input": {},
        "extra": {},
    }


@pytest.mark.parametrize("style", ["torch_zip", "torch_legacy", "pickle"])
def test_a_pickle_file_with_a_payload_is_refused_without_running_it(tmp_path, style):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "model.pt"
    if style == "torch_zip":
        torch.save(legacy_dict(marker), path)
    elif style == "torch_legacy":
        torch.save(legacy_dict(marker), path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(legacy_dict(marker), protocol=4))
    assert not marker.exists()
    with pytest.raises(ModelFileError) as info:
        read_file(path)
    msg = str(info.value)
    assert str(path) in msg and "legacy manifex model file" in msg and "unpickling can run code" in msg
    assert "mx.models.convert_legacy_file(" in msg
    assert not marker.exists()


def test_a_pickle_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload_ran"
    torch.save({"stage": 0, "net": Payload(marker)}, tmp_path / "ck.pt")
    with pytest.raises(
        ModelFileError, match=r"ck\.pt is a pickle-based file .*delete it .*`checkpoint` path"
    ):
        read_file(tmp_path / "ck.pt", kind="checkpoint")
    assert not marker.exists()


def test_load_model_refuses_a_payload_without_running_it(tmp_path):
    import manifex as mx

    marker = tmp_path / "payload_ran"
    path = tmp_path / "model.pt"
    torch.save(legacy_dict(marker), path)
    with pytest.raises(ModelFileError, match="legacy manifex model file"):
        mx.models.load_model(path)
    assert not marker.exists()


def _h5ad(path: Path) -> None:
    import anndata as ad

    ad.AnnData(np.zeros((3, 2), dtype=np.float32)).write_h5ad(path)


def _foreign_safetensors(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(path), metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_text("n_components: 2\nclass: DLME\n"), "is a text file"),
        (lambda p: p.write_text("{" * 20), "is a text file"),
        (_h5ad, "is an HDF5 file"),
        (lambda p: np.savez(p, a=np.ones(2)), "is a zip archive"),
        (_foreign_safetensors, "safetensors file without manifex metadata"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "unknown format"),
    ],
    ids=["empty", "text", "braces", "h5ad", "npz", "foreign-safetensors", "random"],
)
def test_files_that_are_not_models_are_named_and_explained(tmp_path, make, message):
    path = tmp_path / "thing.bin"
    make(path)
    if not path.exists():  # np.savez appends .npz
        path = tmp_path / "thing.bin.npz"
    with pytest.raises(ModelFileError) as info:
        read_file(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.mx"):
        read_file(tmp_path / "nothere.mx")
    with pytest.raises(ModelFileError, match="is a directory"):
        read_file(tmp_path)


def test_model_and_checkpoint_files_are_not_confused(tmp_path):
    write_file(tmp_path / "ck.mx", kind="checkpoint", header={}, arrays={})
    write_file(tmp_path / "m.mx", kind="model", header={}, arrays={})
    with pytest.raises(ModelFileError, match=r"ck\.mx is a manifex training checkpoint, not a model file"):
        read_file(tmp_path / "ck.mx", kind="model")
    with pytest.raises(ModelFileError, match=r"m\.mx is a manifex model file, not a training checkpoint"):
        read_file(tmp_path / "m.mx", kind="checkpoint")


def test_a_newer_format_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(_io, "FORMAT_VERSION", 3)
    write_file(tmp_path / "new.mx", kind="model", header={}, arrays={"w": np.ones(2)})
    monkeypatch.undo()
    with pytest.raises(ModelFileError, match=r"new\.mx was written .* format version 3.*upgrade manifex"):
        read_file(tmp_path / "new.mx")


def _real_file(path: Path) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {f"modules/net/{i}.weight": rng.normal(size=(64, 64)).astype(np.float32) for i in range(4)}
    header = {"class": "DLME", "params": {"n": 2, "names": [f"gene{i}" for i in range(300)]}}
    write_file(path, kind="model", header=header, arrays=arrays)
    return path.read_bytes()


@pytest.mark.parametrize("where", ["start", "header", "header_end", "data", "middle", "end"])
def test_4kib_of_random_bytes_anywhere_are_detected(tmp_path, where):
    path = tmp_path / "m.mx"
    data = bytearray(_real_file(path))
    header_len = int.from_bytes(data[:8], "little")
    offset = {
        "start": 0,
        "header": 100,
        "header_end": header_len - 2000,
        "data": 8 + header_len + 10,
        "middle": len(data) // 2,
        "end": len(data) - 4096,
    }[where]
    assert 0 <= offset <= len(data) - 4096
    data[offset : offset + 4096] = np.random.default_rng(1).bytes(4096)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as info:
        read_file(path)
    assert str(path) in str(info.value)
    assert any(w in str(info.value) for w in ("damaged", "unknown format", "truncated"))


def test_one_changed_byte_of_weights_or_description_fails_the_checksum(tmp_path):
    path = tmp_path / "m.mx"
    data = _real_file(path)
    flipped = bytearray(data)
    flipped[-100] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(ModelFileError, match="do not match the checksum"):
        read_file(path)
    edited = data.replace(b'\\"gene17\\"', b'\\"gene71\\"')  # the description stays valid JSON
    assert edited != data
    path.write_bytes(edited)
    with pytest.raises(ModelFileError, match="do not match the checksum"):
        read_file(path)


@pytest.mark.parametrize("keep", [1, 7, 8, 60, "half", "minus1"])
def test_truncated_files_are_refused(tmp_path, keep):
    path = tmp_path / "m.mx"
    data = _real_file(path)
    n = {"half": len(data) // 2, "minus1": len(data) - 1}.get(keep, keep)
    path.write_bytes(data[:n])
    with pytest.raises(ModelFileError) as info:
        read_file(path)
    if keep in (8, 60, "half", "minus1"):
        assert "is truncated" in str(info.value)


# ---- fingerprints --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).normal(size=(5000, 20)).astype(np.float32)


def test_fingerprint_identifies_values_not_storage(data):
    fp = fingerprint(data)
    assert fp.startswith("mxfp1:5000x20:float32:") and fp == fingerprint(data.copy())
    sparse = np.where(data > 1.0, data, 0.0).astype(np.float32)
    fs = fingerprint(sparse)
    assert fs == fingerprint(sp.csr_matrix(sparse)) == fingerprint(sp.csc_matrix(sparse))
    assert fs == fingerprint(np.asfortranarray(sparse)) == fingerprint(torch.from_numpy(sparse))
    assert fingerprint(data[:3].tolist()) == fingerprint(data[:3].astype(np.float64))  # array-like


def test_fingerprint_changes_with_any_change(data):
    fp = fingerprint(data)
    sampled = np.unique(np.linspace(0, 4999, 1000).round().astype(int))
    unsampled = np.setdiff1d(np.arange(5000), sampled)
    changed = data.copy()
    changed[sampled[10], 3] += 0.5  # a sampled row
    assert fingerprint(changed) != fp
    changed = data.copy()
    changed[unsampled[7], 3] = np.nextafter(changed[unsampled[7], 3], np.float32(np.inf))  # one ulp
    assert fingerprint(changed) != fp
    swapped = data.copy()
    swapped[[unsampled[0], unsampled[1]]] = swapped[[unsampled[1], unsampled[0]]]  # rows no sample reads
    assert fingerprint(swapped) != fp
    assert fingerprint(data[:, ::-1]) != fp  # a column permutation
    assert fingerprint(data.astype(np.float64)) != fp  # same values, other dtype: another fingerprint
    assert fingerprint(data[:4999]) != fp


def test_fingerprint_of_images_and_refusals():
    images = np.random.default_rng(0).integers(0, 256, size=(50, 8, 8), dtype=np.uint8)
    fp = fingerprint(images)
    assert fp.startswith("mxfp1:50x8x8:uint8:")
    assert fingerprint(images.astype(np.float32) / 255) != fp
    with pytest.raises(TypeError, match="numeric array"):
        fingerprint(np.array(["a", "b"]))


def test_fingerprint_is_cheap_at_a_million_rows():
    x = np.random.default_rng(0).random((1_000_000, 50), dtype=np.float32)
    t0 = time.perf_counter()
    fingerprint(x)
    assert time.perf_counter() - t0 < 1.5  # about 0.1 s on one core


# ---- legacy files --------------------------------------------------------------------------
def test_convert_legacy_file(tmp_path, blobs):
    import manifex as mx

    x, _ = blobs
    model = mx.models.DLME(n_steps=30, progress=False, device="cpu").fit(x)
    legacy = {
        "format_version": 1,
        "class": "DLME",
        "params": model.get_params(),
        "modules": {k: getattr(model, k).state_dict() for k in ("encoder_", "projector_")},
        "state": {"history_": model.history_, "scale_": model.scale_},
        "input": {
            k: getattr(model, k)
            for k in ("n_features_in_", "feature_names_in_", "feature_mean_", "feature_std_", "input_spec_")
        },
        "extra": {},
    }
    old, new = tmp_path / "old.pt", tmp_path / "new.mx"
    torch.save(legacy, old)
    with pytest.raises(ModelFileError, match="convert_legacy_file"):
        mx.models.load_model(old)
    convert_legacy_file(old, new)
    loaded = mx.models.load_model(new, device="cpu")
    np.testing.assert_allclose(loaded.transform(x[:50]), model.transform(x[:50]), atol=1e-6)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_legacy_file(old, new)
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a legacy manifex model file"):
        convert_legacy_file(tmp_path / "other.pt", tmp_path / "x.mx")


# ---- scikit-learn and UMAP state -----------------------------------------------------------
def _through_a_file(state, tmp_path):
    js, arrays = pack_state(state)
    write_file(tmp_path / "s.mx", kind="model", header={"s": js}, arrays=arrays, overwrite=True)
    header, tensors = read_file(tmp_path / "s.mx")
    return unpack_state(header["s"], tensors)


def test_gmm_state_round_trip(tmp_path, blobs):
    from sklearn.mixture import GaussianMixture

    from manifex.io._sklearn_state import gmm_from_state, gmm_state

    x, _ = blobs
    gmm = GaussianMixture(3, covariance_type="full", random_state=0).fit(x[:, :4])
    back = gmm_from_state(_through_a_file(gmm_state(gmm), tmp_path))
    for k in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        assert np.array_equal(getattr(back, k), getattr(gmm, k)), k
    assert (back.converged_, back.n_iter_, back.lower_bound_) == (
        gmm.converged_,
        gmm.n_iter_,
        gmm.lower_bound_,
    )
    q = x[:, :4] + 0.3
    # the same arrays through the same code: equal to the last bit
    assert np.array_equal(back.predict_proba(q), gmm.predict_proba(q))
    assert back.get_params() == gmm.get_params()


def _umap_round_trip(tmp_path, **kwargs):
    import umap

    from manifex.io._sklearn_state import umap_from_state, umap_state

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    query = rng.normal(size=(15, 5)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_neighbors=10, n_epochs=30, random_state=0, n_jobs=1, **kwargs).fit(x)
        back = umap_from_state(_through_a_file(umap_state(reducer), tmp_path))
        # seeded, single-threaded transform on identical state: equal to the last bit
        assert np.array_equal(back.transform(query), reducer.transform(query))
        assert np.array_equal(back.transform(x), reducer.transform(x))  # the training data itself
    return reducer, back


def test_umap_state_round_trip_small_data(tmp_path):
    _, back = _umap_round_trip(tmp_path)
    assert back._small_data and not hasattr(back, "_knn_search_index")


@pytest.mark.slow
def test_umap_state_round_trip_with_a_search_index(tmp_path):
    # from 4,096 training points on UMAP searches a pynndescent index; force it on tiny data
    _, back = _umap_round_trip(tmp_path, force_approximation_algorithm=True)
    assert back._knn_search_index is not None and not back._small_data


def test_umap_state_refuses_a_callable_metric():
    import umap

    from manifex.io._sklearn_state import umap_state

    reducer = umap.UMAP(metric=lambda a, b: 0.0)
    reducer.embedding_ = np.zeros((2, 2))
    reducer._raw_data = np.zeros((2, 2))
    with pytest.raises(TypeError, match="callable `metric`"):
        umap_state(reducer)
