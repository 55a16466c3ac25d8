"""TSimCNE estimator and mx.tl.tsimcne / mx.pl on tiny data (CPU, few steps)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import scanpy as sc
import torch
from sklearn.datasets import load_digits

import manifex as mx
from manifex.augment.image import image_preset
from manifex.models import TSimCNE
from manifex.models.tsimcne import PRESETS

FAST = {"n_epochs": (2, 1, 1), "batch_size": 64, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    rng = np.random.default_rng(0)
    sel = np.sort(rng.choice(len(d.target), 256, replace=False))
    images = (d.images[sel] * 255 / 16).astype(np.uint8)  # (256, 8, 8)
    return images, d.target[sel]


@pytest.fixture
def adata(digits):
    images, labels = digits
    return mx.datasets.image_anndata(images, labels)


@pytest.fixture(scope="module")
def fitted(digits):
    images, _ = digits
    model = TSimCNE(**FAST)
    model.fit(images)
    return model


def snapshot(a):
    return (
        sorted(a.obsm.keys()),
        sorted(a.uns.keys()),
        {k: np.array(v, copy=True) for k, v in a.obsm.items()},
    )


def assert_unchanged(a, snap):
    keys, uns, obsm = snap
    assert sorted(a.obsm.keys()) == keys
    assert sorted(a.uns.keys()) == uns
    for k, v in obsm.items():
        np.testing.assert_array_equal(np.asarray(a.obsm[k]), v)


# ---- estimator --------------------------------------------------------------------------------
def test_fit_shapes_and_history(fitted, digits):
    images, _ = digits
    n = images.shape[0]
    assert fitted.embedding_.shape == (n, 2)
    assert np.isfinite(fitted.embedding_).all()
    assert fitted.features_.shape == (n, fitted.feature_dim_) == (n, 128)
    h = fitted.history_
    per_epoch = n // 64
    for stage, epochs in zip(("pretrain", "linear", "finetune"), (2, 1, 1)):
        assert h[stage]["n_steps"] == epochs * per_epoch
        assert len(h[stage]["loss"]) == epochs
        assert h[stage]["images_per_second"] > 0
    assert h["loss"].shape == (4,)
    assert h["n_steps"] == 4 * per_epoch
    # stage 3 runs at lr / 1000
    assert h["finetune"]["base_lr"] == pytest.approx(h["pretrain"]["base_lr"] / 1000)
    assert h["pretrain"]["base_lr"] == pytest.approx(0.03 * 64 / 256)


def test_stage2_trains_only_the_new_output_layer(digits):
    # stage 2 freezes everything but the fresh 2-d output layer: two runs that differ only in the
    # length of stage 2 end with the same weights everywhere else (those of the end of stage 1)
    images, _ = digits
    after = TSimCNE(**{**FAST, "n_epochs": (1, 2, 0)}).fit(images).net_.state_dict()
    before = TSimCNE(**{**FAST, "n_epochs": (1, 1, 0)}).fit(images).net_.state_dict()
    changed = []
    for k, v in after.items():
        if "running" in k or "num_batches" in k:
            continue  # BatchNorm statistics keep updating in training mode
        if k.startswith("head.2"):
            assert v.shape[0] == 2  # the new output layer
            assert not torch.equal(v, before[k])  # trained for one more epoch
            continue
        if not torch.equal(v, before[k]):
            changed.append(k)
    assert changed == []


def test_same_seed_same_embedding_and_other_seed_differs(fitted, digits):
    images, _ = digits
    again = TSimCNE(**FAST).fit_transform(images)
    # identical up to the rounding of multithreaded CPU reductions
    np.testing.assert_allclose(again, fitted.embedding_, rtol=0, atol=1e-5)
    other = TSimCNE(**FAST, random_state=1).fit_transform(images)
    assert not np.allclose(other, fitted.embedding_)


def test_float_images_equal_uint8_images(fitted, digits):
    images, _ = digits
    emb = TSimCNE(**FAST).fit_transform(images.astype(np.float32) / 255.0)
    np.testing.assert_allclose(emb, fitted.embedding_, rtol=0, atol=1e-5)


def test_transform_and_save_load_roundtrip(fitted, digits, tmp_path):
    images, _ = digits
    np.testing.assert_allclose(fitted.transform(images), fitted.embedding_, atol=1e-5)
    path = tmp_path / "m.mx"
    fitted.save(path)
    loaded = TSimCNE.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.transform(images), fitted.transform(images))
    np.testing.assert_array_equal(
        loaded.transform(images, space="latent"), fitted.transform(images, space="latent")
    )
    np.testing.assert_allclose(fitted.transform(images, space="latent"), fitted.features_, atol=1e-5)
    assert mx.models.load_model(path, device="cpu").__class__ is TSimCNE
    with pytest.raises(FileExistsError):
        fitted.save(path)
    with pytest.raises(ValueError, match="trained on 8×8"):
        fitted.transform(np.zeros((3, 10, 10), dtype=np.uint8))


def test_profile_split(fitted, digits):
    images, _ = digits
    prof = fitted.profile(images, n_steps=2)
    assert 0 < prof["augment_s"] < prof["step_s"]
    assert 0 < prof["augment_fraction"] < 1


class _Flaky:
    """Digits augmentation that fails on a given call (to interrupt training)."""

    def __init__(self, fail_at=None):
        self.fail_at, self.calls = fail_at, 0

    def __repr__(self):
        return "Flaky()"

    def __call__(self, x, g):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("interrupted")
        return image_preset("digits")(x, g)


def test_checkpoint_resume_matches_uninterrupted_run(digits, tmp_path):
    """A crash inside a callable augmentation (stage 1, epoch 2) resumes from the end of epoch 1
    to exactly the uninterrupted map (bitwise on one CPU thread)."""
    images, _ = digits
    params = {**FAST, "n_epochs": (3, 1, 1), "checkpoint_every": 1}
    full = TSimCNE(**{**params, "checkpoint": None}, augment=_Flaky()).fit_transform(images)
    ckpt = tmp_path / "run.ckpt"
    per_epoch = images.shape[0] // 64
    # 2 augmentation calls per step: fail in the middle of epoch 2 of stage 1
    with pytest.raises(RuntimeError, match="interrupted"):
        TSimCNE(**params, checkpoint=ckpt, augment=_Flaky(fail_at=2 * (per_epoch + 2))).fit(images)
    assert ckpt.exists()
    aug = _Flaky()
    resumed = TSimCNE(**params, checkpoint=ckpt, augment=aug)
    emb = resumed.fit_transform(images)
    np.testing.assert_array_equal(emb, full)
    assert len(resumed.history_["pretrain"]["loss"]) == 3
    # epochs 2-3 of stage 1 and stages 2-3 were trained again, epoch 1 was not
    assert aug.calls == 2 * per_epoch * (2 + 1 + 1)
    # a checkpoint from other parameters is refused
    with pytest.raises(ValueError, match="other parameters"):
        TSimCNE(**{**params, "lr": 0.5}, checkpoint=ckpt, augment=_Flaky()).fit(images)


def test_invalid_parameters():
    with pytest.raises(ValueError, match="n_epochs"):
        TSimCNE(n_epochs=(1, 2))._validate_params()
    with pytest.raises(ValueError, match="preset"):
        TSimCNE(preset="huge")._validate_params()
    with pytest.raises(ValueError, match="backbone"):
        TSimCNE(backbone="vgg")._validate_params()
    assert PRESETS["paper"]["n_epochs"] == (1000, 50, 450)
    assert TSimCNE(preset="cpu").epochs == PRESETS["cpu"]["n_epochs"]
    # stage 3 at lr/1000 (the paper's) unless the preset or the user says otherwise
    assert TSimCNE(preset="paper").effective_finetune_lr_factor == 1e-3
    assert TSimCNE(preset="default").effective_finetune_lr_factor == 1e-3
    assert TSimCNE(preset="cpu").effective_finetune_lr_factor == 1e-3
    assert TSimCNE(preset="quick", finetune_lr_factor=1.0).effective_finetune_lr_factor == 1.0
    assert TSimCNE(preset="cpu", finetune_lr_factor=0.01).effective_finetune_lr_factor == 0.01
    with pytest.raises(ValueError, match="finetune_lr_factor"):
        TSimCNE(finetune_lr_factor=0.0)._validate_params()
    # epochs that would return an untrained map are refused (they trained nothing before)
    for epochs in ((0, 0, 0), (0, 5, 5), (3, 0, 0)):
        with pytest.raises(ValueError, match="untrained map"):
            TSimCNE(n_epochs=epochs)._validate_params()
    TSimCNE(n_epochs=(1, 0, 1))._validate_params()  # stage 3 alone trains the 2-d output


def test_backbone_choice():
    small = TSimCNE(**FAST).fit(np.random.default_rng(0).integers(0, 255, (64, 16, 16), dtype=np.uint8))
    assert type(small.net_.backbone).__name__ == "SmallResNet"
    assert mx.nn.make_backbone("auto", 3, 32).__class__.__name__ == "ResNet18"
    assert mx.nn.ResNet18(3)(torch.rand(2, 3, 32, 32)).shape == (2, 512)


def test_custom_backbone_module(digits):
    images, _ = digits
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU())
    m = TSimCNE(**FAST, backbone=net).fit(images)
    assert m.features_.shape == (images.shape[0], 32)


# ---- tl / pl ----------------------------------------------------------------------------------
def test_tl_outputs_plot_and_h5ad(adata, tmp_path):
    out = mx.tl.tsimcne(adata, image_key="image", add_features=True, return_model=True, **FAST)
    assert isinstance(out, TSimCNE)
    assert adata.obsm["X_tsimcne"].shape == (adata.n_obs, 2)
    assert adata.obsm["X_tsimcne_features"].shape == (adata.n_obs, 128)
    uns = adata.uns["tsimcne"]
    for k in ("params", "input", "loss", "stages", "device", "seconds", "images_per_second"):
        assert k in uns
    assert set(uns["stages"]) == {"pretrain", "linear", "finetune"}
    assert uns["device"] == "cpu"
    ax = sc.pl.embedding(adata, basis="tsimcne", color="label", show=False)
    assert ax is not None
    assert mx.pl.tsimcne(adata, color="label", show=False) is not None
    ax = mx.pl.image_map(adata, "tsimcne", image_key="image", n=50, color="label", show=False)
    assert len(ax.artists) > 0
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = sc.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_tsimcne"], adata.obsm["X_tsimcne"])


def test_tl_copy_and_key_added(adata):
    snap = snapshot(adata)
    new = mx.tl.tsimcne(adata, image_key="image", copy=True, key_added="ts", **FAST)
    assert_unchanged(adata, snap)
    assert "X_ts" in new.obsm and "ts" in new.uns


def test_tl_images_argument(adata, digits):
    images, _ = digits
    mx.tl.tsimcne(adata, images=images, **FAST)
    assert adata.obsm["X_tsimcne"].shape == (adata.n_obs, 2)
    assert adata.uns["tsimcne"]["input"]["description"] == "images argument"


def test_tl_converts_the_images_once(adata, monkeypatch):
    """tl.tsimcne validates the images without making its own uint8 copy: the only full-size
    conversion is the model's."""
    import manifex.models._images as images_module

    sizes = []
    original = images_module.images_to_uint8

    def spy(x, pixel_range):
        sizes.append(len(x))
        return original(x, pixel_range)

    monkeypatch.setattr(images_module, "images_to_uint8", spy)
    mx.tl.tsimcne(adata, image_key="image", **FAST)
    assert sizes.count(adata.n_obs) == 1


@pytest.mark.parametrize(
    ("case", "exc", "match"),
    [
        ("missing_key", KeyError, "not in adata.obsm"),
        ("wrong_ndim", ValueError, "shape"),
        ("mismatched_n", ValueError, "observations"),
        ("non_finite", ValueError, "NaN or infinite"),
        ("too_small", ValueError, "at least 8"),
        ("non_numeric", TypeError, "numbers"),
    ],
)
def test_bad_input_raises_and_leaves_adata_unchanged(adata, digits, case, exc, match):
    images, _ = digits
    kwargs: dict = {"image_key": "image"}
    if case == "missing_key":
        kwargs["image_key"] = "pictures"
    elif case == "wrong_ndim":
        adata.obsm["flat"] = images.reshape(len(images), -1)
        kwargs["image_key"] = "flat"
    elif case == "mismatched_n":
        kwargs = {"images": images[:-3]}
    elif case == "non_finite":
        bad = images.astype(np.float32) / 255
        bad[5, 2, 3] = np.nan
        adata.obsm["bad"] = bad
        kwargs["image_key"] = "bad"
    elif case == "too_small":
        adata.obsm["tiny"] = images[:, :6, :6]
        kwargs["image_key"] = "tiny"
    elif case == "non_numeric":
        adata.obsm["str"] = images.astype(str)
        kwargs["image_key"] = "str"
    snap = snapshot(adata)
    with pytest.raises(exc, match=match):
        mx.tl.tsimcne(adata, **kwargs, **FAST)
    assert_unchanged(adata, snap)


def test_expression_variant():
    adata = sc.datasets.pbmc68k_reduced()
    model = mx.tl.tsimcne(adata, use_rep="X_pca", return_model=True, **FAST)
    assert adata.obsm["X_tsimcne"].shape == (adata.n_obs, 2)
    assert adata.uns["tsimcne"]["kind"] == "expression"
    assert type(model.net_.backbone).__name__ == "MLP"
    np.testing.assert_allclose(model.transform(adata.obsm["X_pca"]), adata.obsm["X_tsimcne"], atol=1e-5)
    with pytest.raises(ValueError, match="image preset"):
        TSimCNE(**FAST, augment="natural").fit(adata.obsm["X_pca"])


@pytest.mark.skipif(not os.environ.get("MANIFEX_DATA_DIR"), reason="MANIFEX_DATA_DIR is not set")
def test_usps_subset_from_shared_data():
    a = mx.datasets.load_images("usps", n=300)
    mx.tl.tsimcne(a, image_key="image", **FAST)
    assert a.obsm["X_tsimcne"].shape == (300, 2)
    assert a.uns["tsimcne"]["backbone"] == "SmallResNet"


def test_image_only_anndata_and_bool_images(digits):
    # an AnnData holding only images (no X) works, and boolean masks are read as 0 / 1
    import anndata as ad
    import pandas as pd

    images, _ = digits
    a = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(images))]))
    a.obsm["mask"] = images > 100
    mx.tl.tsimcne(a, image_key="mask", **FAST)
    assert a.obsm["X_tsimcne"].shape == (len(images), 2)
    u8, rng = mx.models.tsimcne.prepare_images(images > 100)
    assert rng == (0.0, 1.0) and set(np.unique(u8)) == {0, 255}


def test_embed_image_query_in_every_space(digits):
    images, labels = digits
    ref = mx.datasets.image_anndata(images[:200], labels[:200])
    model = mx.tl.tsimcne(ref, image_key="image", return_model=True, **FAST)
    query = mx.datasets.image_anndata(images[200:], labels[200:])
    mx.tl.embed(query, model)
    np.testing.assert_allclose(query.obsm["X_tsimcne"], model.transform(images[200:]), atol=1e-5)
    # the input space is what the network reads: the pixels scaled to [0, 1], flattened
    mx.tl.embed(query, model, space="input")
    want = images[200:].reshape(len(images) - 200, -1).astype(np.float32) / 255
    np.testing.assert_allclose(query.obsm["X_tsimcne_input"], want, atol=1e-6)
    # images of another size are refused and nothing is written
    small = mx.datasets.image_anndata(images[200:, :6, :6].copy(), labels[200:])
    snap = snapshot(small)
    with pytest.raises(ValueError, match="8"):
        mx.tl.embed(small, model, space="input")
    assert_unchanged(small, snap)


def test_embed_a_backbone_block(digits):
    images, labels = digits
    ref = mx.datasets.image_anndata(images[:200], labels[:200])
    model = mx.tl.tsimcne(ref, image_key="image", return_model=True, **FAST)
    query = mx.datasets.image_anndata(images[200:], labels[200:])
    mx.tl.embed(query, model, space="latent", block=0)
    want = model.transform(images[200:], space="latent", block=0)
    # 8 px digits: the small network's first block has 2 × 16 channels at 4 × 4
    assert want.shape == (len(images) - 200, 32 * 4 * 4)
    np.testing.assert_allclose(query.obsm["X_tsimcne_block0"], want, atol=1e-5)
    assert query.uns["tsimcne_block0"]["block"] == 0
    snap = snapshot(query)
    for kwargs, match in (
        ({"block": 0}, "space='latent'"),
        ({"space": "latent", "block": 3}, r"0\.\.2"),
        ({"space": "latent", "block": 1.5}, "integer"),
    ):
        with pytest.raises(ValueError, match=match):
            mx.tl.embed(query, model, **kwargs)
    assert_unchanged(query, snap)
    # the old keyword is gone: `layer` means an AnnData layer
    with pytest.raises(TypeError):
        model.transform(images[200:], layer=0)


# ---- pixel values are read by value and dtype, the same way for training and queries ----------
def test_a_float_copy_in_0_1_transforms_like_the_uint8_images(fitted, digits):
    """Found: a float [0, 1] copy of a uint8 training set was read as nearly black."""
    images, _ = digits
    as_float = images.astype(np.float32) / 255
    np.testing.assert_allclose(fitted.transform(as_float), fitted.transform(images), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        fitted.transform(as_float, space="latent"), fitted.transform(images, space="latent"), atol=1e-5
    )
    # and the other way round: a model trained on the floats reads the uint8 images alike
    on_float = TSimCNE(**FAST).fit(as_float)
    assert on_float.pixel_range_ == (0.0, 1.0) and fitted.pixel_range_ == (0.0, 255.0)
    np.testing.assert_allclose(on_float.transform(images), on_float.transform(as_float), rtol=0, atol=1e-6)
    # the same pixels, the same run (up to the rounding of CPU convolutions)
    np.testing.assert_allclose(on_float.embedding_, fitted.embedding_, rtol=0, atol=1e-5)
    # 8-bit values stored as float64 in [0, 255] are 8-bit values too
    np.testing.assert_allclose(
        fitted.transform(images.astype(np.float64)), fitted.transform(images), atol=1e-6
    )


def test_integer_masks_are_read_like_bool_masks(digits):
    """Found: integer 0/1 masks trained to a collapsed map while the same masks as bool did not."""
    images, _ = digits
    mask = images > 100
    prep = mx.models.tsimcne.prepare_images
    u8_bool, r_bool = prep(mask)
    for dtype in (np.int64, np.int32, np.int8, np.float32):
        u8, rng = prep(mask.astype(dtype))
        assert rng == r_bool == (0.0, 1.0)
        np.testing.assert_array_equal(u8, u8_bool)
    assert set(np.unique(u8_bool).tolist()) == {0, 255}
    on_bool = TSimCNE(**FAST).fit(mask)
    on_int = TSimCNE(**FAST).fit(mask.astype(np.int64))
    np.testing.assert_array_equal(on_int.embedding_, on_bool.embedding_)
    # the map is not collapsed: its spread is of the order of a trained map's
    assert on_int.embedding_.std(0).min() > 1e-3
    np.testing.assert_allclose(on_int.transform(mask), on_int.embedding_, atol=1e-5)


def test_images_outside_0_255_use_the_training_range_for_queries(digits):
    """z-scored images: the training images' own (min, max) is stored and maps every query, so a
    subset (whose own range is narrower) gets the coordinates it has in the training map."""
    images, _ = digits
    z = (images.astype(np.float32) - 60.0) / 40.0  # negative values: no standard range
    z[0] *= 2  # the training range is wider than that of the query below
    lo, hi = float(z.min()), float(z.max())
    model = TSimCNE(**FAST).fit(z)
    assert model.pixel_range_ == pytest.approx((lo, hi))
    sub = z[1:11]
    assert (float(sub.min()), float(sub.max())) != (lo, hi)
    np.testing.assert_allclose(model.transform(sub), model.embedding_[1:11], atol=1e-5)
    want = np.clip(np.rint((sub - lo) * (255.0 / (hi - lo))), 0, 255).reshape(10, -1) / 255
    np.testing.assert_allclose(model.transform(sub, space="input"), want, atol=1e-6)
    # a query whose values happen to lie in [0, 255] (bright z-scored images) is still read with the
    # training range: a value means the same intensity whatever else is in the query
    bright = np.clip(z[11:15], 0, None)
    alone = model.transform(bright, space="input")
    together = model.transform(np.concatenate([bright, z[15:20]]), space="input")[:4]
    np.testing.assert_array_equal(alone, together)
    want = np.clip(np.rint((bright - lo) * (255.0 / (hi - lo))), 0, 255).reshape(4, -1) / 255
    np.testing.assert_allclose(alone, want, atol=1e-6)
    # values beyond the training range are clipped to black / white
    out = model.transform(np.full((2, 8, 8), hi + 5, np.float32), space="input")
    np.testing.assert_array_equal(out, np.ones((2, 64), np.float32))


def test_pixel_range_fixes_the_mapping(digits):
    images, _ = digits
    twelve_bit = (images.astype(np.uint16) * 16).clip(0, 4095)  # 12-bit camera values in uint16
    model = TSimCNE(**FAST, pixel_range=(0, 4095)).fit(twelve_bit)
    assert model.pixel_range_ == (0.0, 4095.0)
    want = np.clip(np.rint(twelve_bit[:5].astype(np.float32) * (255.0 / 4095)), 0, 255).reshape(5, -1) / 255
    np.testing.assert_allclose(model.transform(twelve_bit[:5], space="input"), want, atol=1e-6)
    # a dim query (all values ≤ 100) keeps the fixed range instead of being stretched
    dim = np.full((3, 8, 8), 100, dtype=np.uint16)
    np.testing.assert_allclose(
        model.transform(dim, space="input"), np.rint(100 * 255 / 4095) / 255, atol=1e-6
    )
    # without pixel_range the same images are stretched by their own (min, max)
    own = TSimCNE(**FAST).fit(twelve_bit)
    assert own.pixel_range_ == (float(twelve_bit.min()), float(twelve_bit.max()))
