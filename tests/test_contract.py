"""The estimator contract every model fills in (DLME, t-SimCNE on images and on expression, N2D).

scikit-learn compatibility, one ``transform(X, space=, block=)``, parameter checks made before any
work, and save / load through the safe model file. Tiny data, CPU, a few steps each.
"""

from __future__ import annotations

import inspect
import io
import warnings

import numpy as np
import pytest
import scanpy as sc
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

import manifex as mx
from manifex.models import DLME, N2D, NotFittedError, TSimCNE

DLME_FAST = {
    "encoder_dims": (32, 24, 16),
    "projector_dims": (32, 16),
    "n_steps": 30,
    "batch_size": 64,
    "device": "cpu",
    "progress": False,
}
TS_IMG_FAST = {"n_epochs": (1, 1, 1), "batch_size": 64, "device": "cpu", "progress": False}
TS_EXPR_FAST = {
    "mlp_dims": (32, 24, 16),
    "head_hidden": 32,
    "pretrain_dim": 16,
    "n_epochs": (2, 1, 1),
    "batch_size": 64,
    "device": "cpu",
    "progress": False,
}
N2D_FAST = {"n_clusters": 3, "hidden_dims": (32, 24, 48), "n_steps": 30, "device": "cpu", "progress": False}


def _blobs(n_per: int = 80, d: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(3, d))
    y = np.repeat(np.arange(3), n_per)
    return (centres[y] + rng.normal(size=(y.size, d))).astype(np.float32), y


@pytest.fixture(scope="module")
def expr():
    x, _ = _blobs()
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    return x, names


@pytest.fixture(scope="module")
def images():
    d = load_digits()
    return (d.images[:128] * 255 / 16).astype(np.uint8)  # (128, 8, 8) uint8


@pytest.fixture(scope="module")
def fitted(expr, images):
    """One fitted model of each kind, trained once for the module."""
    x, names = expr
    return {
        "dlme": DLME(**DLME_FAST).fit(x, feature_names=names),
        "tsimcne_images": TSimCNE(**TS_IMG_FAST).fit(images),
        "tsimcne_expression": TSimCNE(**TS_EXPR_FAST).fit(x, feature_names=names),
        "n2d": N2D(**N2D_FAST).fit(x, feature_names=names),
    }


def _data(kind, expr, images):
    return images if kind == "tsimcne_images" else expr[0]


UNFITTED = {
    "dlme": lambda: DLME(**DLME_FAST),
    "tsimcne_images": lambda: TSimCNE(**TS_IMG_FAST),
    "tsimcne_expression": lambda: TSimCNE(**TS_EXPR_FAST),
    "n2d": lambda: N2D(**N2D_FAST),
}
KINDS = list(UNFITTED)


def _same_params(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, list | tuple) and isinstance(vb, list | tuple):
            assert tuple(va) == tuple(vb), k
        else:
            assert va == vb, k


# ---- scikit-learn compatibility ---------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_get_params_lists_exactly_the_constructor_arguments(kind):
    model = UNFITTED[kind]()
    names = set(inspect.signature(type(model).__init__).parameters) - {"self"}
    assert set(model.get_params()) == names
    assert set(model.get_params(deep=False)) == names


@pytest.mark.parametrize("kind", KINDS)
def test_clone_gives_an_unfitted_copy_with_equal_params(kind, fitted):
    model = fitted[kind]
    copy = clone(model)
    assert type(copy) is type(model)
    assert not copy.is_fitted
    assert not hasattr(copy, "embedding_")
    _same_params(copy.get_params(), model.get_params())
    with pytest.raises(NotFittedError):
        copy.transform(np.zeros((3, 20), np.float32))


def test_clone_refits_to_the_same_embedding(expr):
    x, _ = expr
    a = DLME(**DLME_FAST).fit(x)
    b = clone(a).fit(x)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)


@pytest.mark.parametrize("kind", KINDS)
def test_set_params_updates_and_rejects_unknown_names(kind):
    model = UNFITTED[kind]()
    assert model.set_params(random_state=7) is model
    assert model.get_params()["random_state"] == 7 and model.random_state == 7
    with pytest.raises(ValueError, match="not_a_parameter"):
        model.set_params(not_a_parameter=1)


@pytest.mark.parametrize("kind", KINDS)
def test_check_is_fitted(kind, fitted):
    with pytest.raises(SkNotFittedError):
        check_is_fitted(UNFITTED[kind]())
    check_is_fitted(fitted[kind])  # does not raise


def test_a_model_runs_as_the_last_step_of_a_pipeline(expr):
    x, _ = expr
    pipe = make_pipeline(StandardScaler(), DLME(**DLME_FAST))
    y = pipe.fit_transform(x)
    assert y.shape == (x.shape[0], 2)
    np.testing.assert_allclose(pipe.transform(x), y, atol=1e-5)


def test_repr_shows_changed_parameters():
    assert "n_steps=5" in repr(DLME(n_steps=5))
    assert "n_latent=3" in repr(N2D(n_latent=3))


# ---- transform(X, space=, block=) -------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_every_space_has_the_documented_shape(kind, fitted, expr, images):
    model = fitted[kind]
    x = _data(kind, expr, images)[:17]
    n = x.shape[0]
    emb = model.transform(x)
    assert emb.shape == (n, 2) and emb.dtype == np.float32
    np.testing.assert_array_equal(model.transform(x, space="embedding"), emb)
    lat = model.transform(x, space="latent")
    inp = model.transform(x, space="input")
    assert inp.dtype == lat.dtype == np.float32
    if kind == "dlme":
        assert lat.shape == (n, DLME_FAST["encoder_dims"][-1])
    elif kind == "n2d":
        assert lat.shape == (n, N2D_FAST["n_clusters"])  # n_latent defaults to n_clusters
        assert model.transform(x, space="manifold").shape == (n, 3)
    elif kind == "tsimcne_expression":
        assert lat.shape == (n, TS_EXPR_FAST["mlp_dims"][-1]) == (n, model.feature_dim_)
    else:
        assert lat.shape == (n, model.feature_dim_)
    assert inp.shape == (n, 64 if kind == "tsimcne_images" else 20)


def test_embedding_of_the_training_data_is_embedding_(fitted, expr, images):
    x, _ = expr
    for kind in ("dlme", "tsimcne_expression"):
        np.testing.assert_allclose(fitted[kind].transform(x), fitted[kind].embedding_, atol=1e-5)
    np.testing.assert_allclose(
        fitted["tsimcne_images"].transform(images), fitted["tsimcne_images"].embedding_, atol=1e-5
    )
    # N2D: the training map comes from UMAP.fit_transform; queries go through UMAP.transform
    np.testing.assert_allclose(fitted["n2d"].transform(x, space="latent"), fitted["n2d"].code_, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_space_is_refused_naming_the_choices(kind, fitted, expr, images):
    model = fitted[kind]
    x = _data(kind, expr, images)[:5]
    want = ["embedding", "latent", "input"] + (["manifold"] if kind == "n2d" else [])
    for bad in ("map", "code", "features", "Latent"):
        with pytest.raises(ValueError, match="space") as err:
            model.transform(x, space=bad)
        for name in want:
            assert repr(name) in str(err.value)
    if kind != "n2d":
        with pytest.raises(ValueError, match="space"):
            model.transform(x, space="manifold")


@pytest.mark.parametrize("kind", KINDS)
def test_block_needs_the_latent_space_and_a_valid_index(kind, fitted, expr, images):
    model = fitted[kind]
    x = _data(kind, expr, images)[:5]
    for space in ("embedding", "input") + (("manifold",) if kind == "n2d" else ()):
        with pytest.raises(ValueError, match="space='latent'"):
            model.transform(x, space=space, block=0)
    n_blocks = {
        "dlme": 3,
        "tsimcne_expression": 3,
        "n2d": 3,
        "tsimcne_images": model._block_network().n_blocks,
    }[kind]
    for bad in (-1, n_blocks, 1.5, 1.0, True, "0"):
        with pytest.raises(ValueError, match="block"):
            model.transform(x, space="latent", block=bad)
    # a numpy integer is an integer
    assert model.transform(x, space="latent", block=np.int64(0)).shape[0] == 5


@pytest.mark.parametrize("kind", ["dlme", "tsimcne_expression"])
def test_mlp_blocks_and_the_last_block_is_the_latent_space(kind, fitted, expr):
    model = fitted[kind]
    x = expr[0][:31]
    dims = DLME_FAST["encoder_dims"] if kind == "dlme" else TS_EXPR_FAST["mlp_dims"]
    for k, d in enumerate(dims):
        assert model.transform(x, space="latent", block=k).shape == (31, d)
    np.testing.assert_array_equal(
        model.transform(x, space="latent", block=len(dims) - 1), model.transform(x, space="latent")
    )


def test_image_blocks_are_flattened_and_pooling_the_last_gives_the_features(fitted, images):
    model = fitted["tsimcne_images"]
    x = images[:9]
    n_blocks = model._block_network().n_blocks
    outs = [model.transform(x, space="latent", block=k) for k in range(n_blocks)]
    assert all(o.ndim == 2 and o.shape[0] == 9 for o in outs)
    # 8 px digits: the first block has 2 × 16 channels at 4 × 4
    assert outs[0].shape == (9, 32 * 4 * 4)
    last = outs[-1].reshape(9, model.feature_dim_, -1).mean(-1)
    np.testing.assert_allclose(last, model.transform(x, space="latent"), rtol=1e-5, atol=1e-6)


def test_n2d_block_reads_its_encoder(fitted, expr):
    """Hand-computed: block 0 is ReLU(W₀x + b₀) of the encoder's first layer; the code is the
    encoder's last linear layer applied to the last block."""
    model = fitted["n2d"]
    x = expr[0][:13]
    hidden = N2D_FAST["hidden_dims"]
    for k, d in enumerate(hidden):
        assert model.transform(x, space="latent", block=k).shape == (13, d)
    lin0 = model.encoder_[0][0]
    w0, b0 = lin0.weight.detach().numpy(), lin0.bias.detach().numpy()
    np.testing.assert_allclose(
        model.transform(x, space="latent", block=0), np.maximum(x @ w0.T + b0, 0), rtol=1e-4, atol=1e-4
    )
    out = model.encoder_[-1]
    w, b = out.weight.detach().numpy(), out.bias.detach().numpy()
    last = model.transform(x, space="latent", block=len(hidden) - 1)
    np.testing.assert_allclose(last @ w.T + b, model.transform(x, space="latent"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["dlme", "tsimcne_expression", "n2d"])
def test_input_space_is_the_aligned_features(kind, fitted, expr):
    model = fitted[kind]
    x, names = expr
    np.testing.assert_array_equal(model.transform(x, space="input"), x)
    perm = np.random.default_rng(1).permutation(x.shape[1])
    np.testing.assert_array_equal(model.transform(x[:, perm], feature_names=names[perm], space="input"), x)
    # an extra column is dropped, a missing one is named
    wide = np.hstack([x, np.ones((x.shape[0], 1), np.float32)])
    np.testing.assert_array_equal(model.transform(wide, feature_names=[*names, "extra"], space="input"), x)
    with pytest.raises(KeyError, match="g0"):
        model.transform(x[:, 1:], feature_names=names[1:], space="input")


def test_dlme_input_space_is_before_standardisation(expr):
    x, _ = expr
    x = x * np.linspace(0.1, 10, x.shape[1], dtype=np.float32)  # features of very different scales
    model = DLME(**DLME_FAST, standardize=True).fit(x)
    np.testing.assert_array_equal(model.transform(x, space="input"), x)
    # the network itself reads the standardised features: block 0 differs from a plain model's
    plain = DLME(**DLME_FAST).fit(x)
    assert not np.allclose(model.transform(x, space="latent"), plain.transform(x, space="latent"))


def test_image_input_space_is_flattened_pixels_in_0_1(fitted, images):
    model = fitted["tsimcne_images"]
    want = images.reshape(len(images), -1).astype(np.float32) / 255
    np.testing.assert_allclose(model.transform(images, space="input"), want, rtol=0, atol=1e-7)
    assert model.transform(images, space="input").dtype == np.float32


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("space", ["embedding", "latent", "input"])
def test_unfitted_model_refuses_every_space(kind, space, expr, images):
    with pytest.raises(NotFittedError, match="not fitted"):
        UNFITTED[kind]().transform(_data(kind, expr, images)[:5], space=space)


def test_fitted_attributes_of_the_contract(fitted, expr):
    x, names = expr
    for kind, model in fitted.items():
        assert model.is_fitted
        assert model.kind_ == ("image" if kind == "tsimcne_images" else "expression")
        assert model.input_spec_ is None  # only the tl functions pass one
        if kind == "tsimcne_images":
            assert model.n_features_in_ == 64 and model.feature_names_in_ is None
            continue
        assert model.n_features_in_ == 20
        np.testing.assert_array_equal(model.feature_names_in_, names)
        assert model.feature_mean_.dtype == model.feature_std_.dtype == np.float32
        np.testing.assert_allclose(model.feature_mean_, x.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model.feature_std_, x.std(0), rtol=1e-4)


def test_refitting_replaces_the_recorded_input(expr):
    x, names = expr
    model = DLME(**DLME_FAST).fit(x, feature_names=names, input_spec={"key": "X_pca"})
    model.fit(x[:, :10])
    assert model.n_features_in_ == 10 and model.feature_names_in_ is None and model.input_spec_ is None
    assert model.feature_mean_.shape == (10,)
    np.testing.assert_allclose(model.transform(x[:, :10]), model.embedding_, atol=1e-5)
    with pytest.raises(ValueError, match="10"):
        model.transform(x)


def test_input_spec_is_recorded_from_fit(expr):
    x, _ = expr
    spec = {"source": "obsm", "key": "X_pca"}
    model = DLME(**DLME_FAST).fit(x, input_spec=spec)
    assert model.input_spec_ == spec and model.input_spec_ is not spec
    with pytest.raises(TypeError, match="input_spec"):
        DLME(**DLME_FAST).fit(x, input_spec="X_pca")


# ---- parameter checks, before any work --------------------------------------------------------
_NAN = np.full((30, 4), np.nan, dtype=np.float32)  # would fail the data check if it ran first

PARAM_CASES = [
    # (model, kwargs, exception, text the message names)
    (DLME, {"n_steps": 2.5}, ValueError, "n_steps"),
    (DLME, {"n_steps": 3.0}, ValueError, "n_steps"),
    (DLME, {"n_epochs": 1.5}, ValueError, "n_epochs"),
    (DLME, {"batch_size": True}, ValueError, "batch_size"),
    (DLME, {"lr": -1e-3}, ValueError, "lr"),
    (DLME, {"validation_fraction": 1.0}, ValueError, "validation_fraction"),
    (DLME, {"patience": 0}, ValueError, "patience"),
    (DLME, {"checkpoint_every": 0}, ValueError, "checkpoint_every"),
    (DLME, {"progress": "yes"}, TypeError, "progress"),
    (DLME, {"early_stopping": "yes"}, TypeError, "early_stopping"),
    (DLME, {"encoder_dims": (32, 0)}, ValueError, "encoder_dims"),
    (N2D, {"n_steps": 2.5}, ValueError, "n_steps"),
    (N2D, {"n_steps": 3.0}, ValueError, "n_steps"),
    (N2D, {"n_epochs": 1.5}, ValueError, "n_epochs"),
    (N2D, {"batch_size": True}, ValueError, "batch_size"),
    (N2D, {"lr": -1e-3}, ValueError, "lr"),
    (N2D, {"validation_fraction": 1.0}, ValueError, "validation_fraction"),
    (N2D, {"n_latent": 2.0}, ValueError, "n_latent"),
    (N2D, {"n_latent": 0}, ValueError, "n_latent"),
    (N2D, {"progress": "yes"}, TypeError, "progress"),
    (TSimCNE, {"n_epochs": (0, 0, 0)}, ValueError, "n_epochs"),
    (TSimCNE, {"n_epochs": (0, 5, 5)}, ValueError, "n_epochs"),
    (TSimCNE, {"n_epochs": (5, 0, 0)}, ValueError, "n_epochs"),
    (TSimCNE, {"n_epochs": (1.5, 1, 1)}, ValueError, "n_epochs"),
    (TSimCNE, {"n_epochs": (1, 1)}, ValueError, "n_epochs"),
    (TSimCNE, {"batch_size": True}, ValueError, "batch_size"),
    (TSimCNE, {"batch_size": 64.0}, ValueError, "batch_size"),
    (TSimCNE, {"lr": -0.1}, ValueError, "lr"),
    (TSimCNE, {"validation_fraction": 1.0}, ValueError, "validation_fraction"),
    (TSimCNE, {"warmup_epochs": 1.5}, ValueError, "warmup_epochs"),
    (TSimCNE, {"pixel_range": (5, 5)}, ValueError, "pixel_range"),
    (TSimCNE, {"pixel_range": (0, 1, 2)}, ValueError, "pixel_range"),
    (TSimCNE, {"progress": "yes"}, TypeError, "progress"),
]


@pytest.mark.parametrize(("klass", "kwargs", "exc", "name"), PARAM_CASES)
def test_bad_parameter_is_named_before_any_work(klass, kwargs, exc, name):
    extra = {"n_clusters": 2} if klass is N2D else {}
    with pytest.raises(exc, match=f"`{name}`"):
        klass(**extra, **kwargs, device="cpu").fit(_NAN)


@pytest.mark.parametrize("klass", [DLME, N2D, TSimCNE])
def test_checkpoint_that_is_a_directory_is_refused(klass, tmp_path):
    extra = {"n_clusters": 2} if klass is N2D else {}
    with pytest.raises(ValueError, match="`checkpoint`"):
        klass(**extra, checkpoint=tmp_path, device="cpu").fit(_NAN)
    with pytest.raises(TypeError, match="`checkpoint`"):
        klass(**extra, checkpoint=3, device="cpu").fit(_NAN)


def test_whole_number_parameters_still_accept_numpy_integers(expr):
    x, _ = expr
    model = DLME(**{**DLME_FAST, "n_steps": np.int64(6), "batch_size": np.int32(64)}).fit(x)
    assert model.history_["n_steps"] == 6


# ---- save / load ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, fitted, expr, images, tmp_path):
    model = fitted[kind]
    x = _data(kind, expr, images)
    path = tmp_path / f"{kind}.mx"
    model.save(path)
    loaded = mx.models.load_model(path, device="cpu")
    assert type(loaded) is type(model) and loaded.is_fitted
    spaces = ["embedding", "latent", "input"] + (["manifold"] if kind == "n2d" else [])
    for space in spaces:
        np.testing.assert_array_equal(loaded.transform(x, space=space), model.transform(x, space=space))
    np.testing.assert_array_equal(
        loaded.transform(x, space="latent", block=0), model.transform(x, space="latent", block=0)
    )
    if kind == "n2d":
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
        np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    a, b = model.get_params(), loaded.get_params()
    assert b["device"] == "cpu"
    a.pop("device"), b.pop("device")
    _same_params(a, b)
    for attr in ("n_features_in_", "kind_", "input_spec_"):
        assert getattr(loaded, attr) == getattr(model, attr)
    if model.feature_names_in_ is not None:
        np.testing.assert_array_equal(loaded.feature_names_in_, model.feature_names_in_)
        np.testing.assert_array_equal(loaded.feature_mean_, model.feature_mean_)
    # the class method refuses another class
    other = DLME if kind != "dlme" else N2D
    with pytest.raises(TypeError, match=type(model).__name__):
        other.load(path, device="cpu")
    with pytest.raises(FileExistsError):
        model.save(path)
    model.save(path, overwrite=True)


def test_loaded_model_keeps_feature_alignment_and_input_spec(expr, tmp_path):
    x, names = expr
    spec = {"source": "obsm", "key": "X_pca", "n_comps": 20}
    model = DLME(**DLME_FAST).fit(x, feature_names=names, input_spec=spec)
    model.save(tmp_path / "m.mx")
    loaded = mx.models.load_model(tmp_path / "m.mx", device="cpu")
    assert loaded.input_spec_ == spec
    perm = np.random.default_rng(2).permutation(x.shape[1])
    np.testing.assert_array_equal(loaded.transform(x[:, perm], feature_names=names[perm]), model.transform(x))


def _callable_aug(x, idx, ctx):
    return x + 0.01 * torch.randn(x.shape, generator=ctx.generator, device=x.device)


def _callable_image_aug(x, generator):
    return x.flip(-1)


@pytest.fixture
def scanpy_log():
    """What scanpy's logger writes (its handler holds the stream it was set up with)."""
    old, buf = sc.settings.logfile, io.StringIO()
    sc.settings.logfile = buf
    try:
        yield buf
    finally:
        sc.settings.logfile = old


@pytest.mark.parametrize("kind", ["dlme", "tsimcne_images"])
def test_saving_a_callable_augmentation_warns_and_the_loaded_model_transforms(
    kind, expr, images, tmp_path, scanpy_log
):
    if kind == "dlme":
        x = expr[0]
        model = DLME(**DLME_FAST, augment=_callable_aug).fit(x)
        default = "knn_mix"
    else:
        x = images
        model = TSimCNE(**TS_IMG_FAST, augment=_callable_image_aug).fit(x)
        default = "auto"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.save(tmp_path / "m.mx")
    said = scanpy_log.getvalue() + " ".join(str(w.message) for w in caught)
    assert "augment" in said and "callable" in said
    loaded = mx.models.load_model(tmp_path / "m.mx", device="cpu")
    assert loaded.get_params()["augment"] == default
    np.testing.assert_array_equal(loaded.transform(x), model.transform(x))


def test_a_custom_backbone_module_cannot_be_saved(images, tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU())
    model = TSimCNE(**TS_IMG_FAST, backbone=net).fit(images)
    assert model.transform(images[:4], space="latent").shape == (4, 16)
    with pytest.raises(TypeError, match="backbone"):
        model.save(tmp_path / "m.mx")
    assert not (tmp_path / "m.mx").exists()
