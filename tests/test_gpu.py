"""The CUDA path: training on the GPU, mixed precision, batched augmentation on the device.

Every test here needs a CUDA device and is skipped without one (``pytest -m gpu`` selects them).
They check behaviour against the CPU path and against the data, not timings: speed is measured
by ``python -m benchmarks.bench_gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import torch
from anndata import AnnData
from conftest import requires_gpu
from sklearn.datasets import load_digits

import manifex as mx
from manifex.augment import AugmentContext, expression_preset
from manifex.augment.image import image_preset
from manifex.metrics import knn_accuracy
from manifex.train._loop import _amp_context

pytestmark = [pytest.mark.gpu, requires_gpu]

CUDA = {"device": "cuda", "progress": False}


def _blobs(n_classes: int = 4, per: int = 100, dim: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), per)
    x = (centres[y] + rng.normal(size=(y.size, dim))).astype(np.float32)
    a = AnnData(x)
    a.var_names = [f"g{i}" for i in range(dim)]
    a.obs_names = [f"c{i}" for i in range(y.size)]
    a.obs["label"] = y.astype(str)
    return a, y


def _digits(n: int = 512):
    d = load_digits()
    sel = np.sort(np.random.default_rng(0).choice(len(d.target), n, replace=False))
    return (d.images[sel] * 255 / 16).astype(np.uint8), d.target[sel]


def test_amp_is_bfloat16_autocast_on_cuda():
    dev = torch.device("cuda")
    ctx, dtype = _amp_context(dev, True)
    assert dtype in (torch.bfloat16, torch.float16)
    lin = torch.nn.Linear(8, 4).to(dev)
    with ctx:
        out = lin(torch.randn(3, 8, device=dev))
    assert out.dtype == dtype
    # amp=False trains in float32
    ctx32, dtype32 = _amp_context(dev, False)
    assert dtype32 is None
    with ctx32:
        assert lin(torch.randn(3, 8, device=dev)).dtype == torch.float32


@pytest.mark.parametrize("amp", [True, False])
def test_dlme_trains_on_cuda_and_separates_blobs(amp):
    a, y = _blobs()
    model = mx.tl.dlme(a, use_rep="X", n_steps=300, n_neighbors=10, amp=amp, return_model=True, **CUDA)
    assert model.device_.type == "cuda"
    assert all(p.device.type == "cuda" for p in model.encoder_.parameters())
    emb = a.obsm["X_dlme"]
    assert emb.dtype == np.float32 and np.isfinite(emb).all()
    assert knn_accuracy(emb, y) > 0.97
    # the embedding written by tl is the model's transform of the same input
    np.testing.assert_allclose(model.transform(a.X), emb, rtol=1e-4, atol=1e-4)


def test_dlme_cuda_model_transforms_like_its_cpu_copy(tmp_path):
    a, _ = _blobs()
    model = mx.tl.dlme(a, use_rep="X", n_steps=100, n_neighbors=10, return_model=True, **CUDA)
    model.save(tmp_path / "m.mx")
    cpu = mx.models.load_model(tmp_path / "m.mx", device="cpu")
    assert next(cpu.encoder_.parameters()).device.type == "cpu"
    # inference runs in float32 on both devices: the same network gives the same coordinates
    np.testing.assert_allclose(cpu.transform(a.X), model.transform(a.X), rtol=1e-3, atol=1e-3)
    for kw in ({"space": "latent"}, {"space": "latent", "block": 0}, {"space": "input"}):
        np.testing.assert_allclose(cpu.transform(a.X, **kw), model.transform(a.X, **kw), rtol=1e-3, atol=1e-3)


def test_dlme_cuda_same_seed_same_embedding():
    a, _ = _blobs()
    e = [
        mx.tl.dlme(a, use_rep="X", n_steps=100, n_neighbors=10, random_state=3, copy=True, **CUDA).obsm[
            "X_dlme"
        ]
        for _ in range(2)
    ]
    np.testing.assert_allclose(e[0], e[1], atol=1e-4)
    other = mx.tl.dlme(a, use_rep="X", n_steps=100, n_neighbors=10, random_state=4, copy=True, **CUDA)
    assert not np.allclose(e[0], other.obsm["X_dlme"], atol=1e-2)


def test_expression_augmentation_stays_on_device_and_is_seeded():
    a, _ = _blobs()
    x = torch.as_tensor(a.X, device="cuda")
    nbrs = torch.as_tensor(np.stack([np.roll(np.arange(a.n_obs), s) for s in range(1, 6)], 1), device="cuda")
    aug = expression_preset("strong")
    idx = torch.arange(64, device="cuda")
    outs = []
    for _ in range(2):
        ctx = AugmentContext(x, nbrs, x.std(0), torch.Generator(device="cuda").manual_seed(0))
        outs.append(aug(x[idx], idx, ctx))
    assert outs[0].device.type == "cuda" and outs[0].shape == (64, a.n_vars)
    torch.testing.assert_close(outs[0], outs[1])
    assert not torch.equal(outs[0], x[idx])


@pytest.mark.parametrize("preset", ["digits", "natural"])
def test_image_augmentation_batched_on_cuda(preset):
    images, _ = _digits(64)
    x = torch.as_tensor(images, device="cuda").float().div(255).unsqueeze(1)
    if preset == "natural":
        x = x.expand(-1, 3, -1, -1).contiguous()
    aug = image_preset(preset)
    g = torch.Generator(device="cuda").manual_seed(0)
    out = aug(x, g)
    assert out.device.type == "cuda" and out.shape == x.shape
    assert torch.isfinite(out).all() and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, x)


def test_tsimcne_images_on_cuda_with_amp():
    images, y = _digits(512)
    a = mx.datasets.image_anndata(images, y)
    model = mx.tl.tsimcne(
        a, image_key="image", n_epochs=(15, 2, 5), batch_size=128, random_state=0, return_model=True, **CUDA
    )
    emb = a.obsm["X_tsimcne"]
    assert emb.shape == (512, 2) and np.isfinite(emb).all()
    assert next(model.net_.parameters()).device.type == "cuda"
    # a short run already groups the digits well above chance (0.1)
    assert knn_accuracy(emb, y) > 0.5
    feats = model.transform(images, space="latent")
    assert feats.shape[0] == 512 and np.isfinite(feats).all()
    block = model.transform(images, space="latent", block=0)
    assert block.shape[0] == 512 and np.isfinite(block).all()
    # a float [0, 1] copy of the images is read like the uint8 images on the device too
    np.testing.assert_allclose(model.transform(images.astype(np.float32) / 255), emb, atol=1e-3)


def test_n2d_on_cuda_recovers_blobs():
    a, y = _blobs()
    mx.tl.n2d(a, n_clusters=4, use_rep="X", n_steps=200, hidden_dims=(64, 64, 128), random_state=0, **CUDA)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, a.obs["n2d"].astype(str)) > 0.95


def test_embed_query_with_cuda_model():
    ref = sc.datasets.pbmc68k_reduced()
    query = ref[500:].copy()
    ref = ref[:500].copy()
    del ref.obsm["X_pca"], ref.varm["PCs"], query.obsm["X_pca"]
    sc.pp.pca(ref, n_comps=30, random_state=0)
    model = mx.tl.dlme(ref, n_steps=50, return_model=True, **CUDA)
    mx.tl.embed(query, model, reference=ref)
    assert query.obsm["X_dlme"].shape == (query.n_obs, 2) and np.isfinite(query.obsm["X_dlme"]).all()


class _Stop(RuntimeError):
    pass


def _interrupting(monkeypatch, module, after: int):
    """Wrap ``module.train`` (the training plan's) so that the step after ``after`` steps raises ``_Stop``."""
    real, count = module.train, {"n": 0}

    def wrapped(step_fn, **kw):
        def counted(idx):
            if count["n"] >= after:
                raise _Stop
            count["n"] += 1
            return step_fn(idx)

        return real(counted, **kw)

    monkeypatch.setattr(module, "train", wrapped)
    return count


@pytest.mark.parametrize("which", ["dlme", "tsimcne"])
def test_checkpoint_resume_on_cuda(which, tmp_path, monkeypatch):
    """An interrupted CUDA run resumes from its checkpoint to the uninterrupted map (the CUDA
    kernels are not bitwise deterministic, so up to a small tolerance), training only the rest."""
    import manifex.train._plan as plan_module  # the models train through the plan's ``train``

    if which == "dlme":
        a, _ = _blobs()
        data, module = a.X, plan_module
        make = lambda **kw: mx.models.DLME(n_steps=40, batch_size=100, amp=False, **CUDA, **kw)  # noqa: E731
    else:
        data, _ = _digits(256)
        module = plan_module
        make = lambda **kw: mx.models.TSimCNE(n_epochs=(3, 2, 2), batch_size=64, amp=False, **CUDA, **kw)  # noqa: E731
    full = make().fit(data)
    ckpt = tmp_path / "run.ckpt"
    with monkeypatch.context() as m:
        _interrupting(m, module, after=9)
        with pytest.raises(_Stop):
            make(checkpoint=ckpt, checkpoint_every=1).fit(data)
    with monkeypatch.context() as m:
        count = _interrupting(m, module, after=10**9)
        resumed = make(checkpoint=ckpt, checkpoint_every=1).fit(data)
    total = full.history_["n_steps"]
    assert resumed.history_["n_steps"] == total
    assert count["n"] == total - 8  # resumed from the end of epoch 2 (4 steps per epoch)
    np.testing.assert_allclose(resumed.history_["loss"], full.history_["loss"], rtol=1e-2)
    spread = float(full.embedding_.std())
    assert np.abs(resumed.embedding_ - full.embedding_).max() < 1e-2 * spread


def test_early_stopping_on_cuda():
    a, _ = _blobs()
    model = mx.models.DLME(n_steps=300, batch_size=100, early_stopping=True, patience=3, **CUDA).fit(a.X)
    h = model.history_
    assert h["n_validation"] == 40 and len(h["val_loss"]) >= 1 and h["best_step"] in list(h["val_step"])
    assert np.isfinite(model.embedding_).all()
