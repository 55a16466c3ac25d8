"""Image augmentations and the Cauchy InfoNCE loss: each checked against an independent fact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifex.augment.image import (
    ColorJitter,
    ImageCompose,
    RandomGeometry,
    RandomGrayscale,
    adjust_hue,
    adjust_saturation,
    image_preset,
    rgb_to_grayscale,
)
from manifex.losses import cauchy_infonce


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def imgs() -> torch.Tensor:
    return torch.rand(6, 3, 12, 10, generator=gen(123))


# ---- geometry ---------------------------------------------------------------------------------
def test_identity_when_no_crop_and_no_flip(imgs):
    out = RandomGeometry(scale=(1, 1), ratio=(1, 1), hflip=0.0)(imgs, gen())
    torch.testing.assert_close(out, imgs, atol=1e-5, rtol=0)


def test_horizontal_flip_equals_flip_last_axis(imgs):
    out = RandomGeometry(scale=(1, 1), ratio=(1, 1), hflip=1.0)(imgs, gen())
    torch.testing.assert_close(out, imgs.flip(-1), atol=1e-5, rtol=0)


def test_vertical_flip_equals_flip_rows(imgs):
    out = RandomGeometry(scale=(1, 1), ratio=(1, 1), hflip=0.0, vflip=1.0)(imgs, gen())
    torch.testing.assert_close(out, imgs.flip(-2), atol=1e-5, rtol=0)


def test_rot90_gives_exact_quarter_turns():
    x = torch.rand(64, 1, 9, 9, generator=gen(1))
    out = RandomGeometry(scale=(1, 1), ratio=(1, 1), hflip=0.0, rot90=True)(x, gen(2))
    seen = set()
    for i in range(x.shape[0]):
        errs = [float((out[i] - torch.rot90(x[i], k, dims=(-2, -1))).abs().max()) for k in range(4)]
        k = int(np.argmin(errs))
        assert errs[k] < 1e-5
        seen.add(k)
    assert seen == {0, 1, 2, 3}


def test_rot90_needs_square_images():
    with pytest.raises(ValueError, match="square"):
        RandomGeometry(rot90=True)(torch.rand(2, 1, 8, 10), gen())


def test_crop_area_and_placement_within_bounds():
    geo = RandomGeometry(scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.0)
    theta = geo.sample_theta(5000, gen(3), torch.device("cpu"))
    w, h = theta[:, 0, 0], theta[:, 1, 1]
    area = w * h
    assert float(area.min()) >= 0.2 - 1e-5 and float(area.max()) <= 1.0 + 1e-5
    assert float(area.min()) < 0.22 and float(area.max()) > 0.98  # the whole range is used
    ratio = w / h
    assert float(ratio.min()) >= 3 / 4 - 1e-4 and float(ratio.max()) <= 4 / 3 + 1e-4
    # the crop lies inside the image: |centre| + half-size ≤ 1 in normalised coordinates
    assert float((theta[:, 0, 2].abs() + w).max()) <= 1 + 1e-5
    assert float((theta[:, 1, 2].abs() + h).max()) <= 1 + 1e-5


def test_crop_of_a_ramp_covers_the_crop_width():
    # pixel value = column index / (W - 1); a crop of half the width spans about half the ramp
    wd = 32
    ramp = (torch.arange(wd).float() / (wd - 1)).view(1, 1, 1, wd).expand(200, 1, wd, wd).contiguous()
    out = RandomGeometry(scale=(0.25, 0.25), ratio=(1, 1), hflip=0.0)(ramp, gen(4))
    spans = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
    assert torch.allclose(spans, torch.full_like(spans, 0.5), atol=0.05)
    # and rows stay constant down each column (a pure crop, no rotation)
    assert float((out - out[:, :, :1, :]).abs().max()) < 1e-5


def test_geometry_seeded_and_per_image(imgs):
    geo = RandomGeometry()
    a, b, c = geo(imgs, gen(7)), geo(imgs, gen(7)), geo(imgs, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ---- colour -----------------------------------------------------------------------------------
def test_grayscale_of_known_colour_is_luminance():
    colour = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1).expand(3, 3, 4, 4).contiguous()
    out = RandomGrayscale(p=1.0)(colour, gen())
    expected = 0.299 * 0.2 + 0.587 * 0.5 + 0.114 * 0.9
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-6)
    assert torch.equal(RandomGrayscale(p=0.0)(colour, gen()), colour)


def test_grayscale_and_saturation_identity_on_single_channel():
    x = torch.rand(3, 1, 8, 8, generator=gen(5))
    assert torch.equal(RandomGrayscale(p=1.0)(x, gen()), x)
    assert torch.equal(adjust_saturation(x, torch.zeros(3)), x)


def test_saturation_zero_is_grayscale(imgs):
    out = adjust_saturation(imgs, torch.zeros(imgs.shape[0]))
    torch.testing.assert_close(out, rgb_to_grayscale(imgs).expand_as(imgs), atol=1e-6, rtol=0)


def test_brightness_factor_range():
    x = torch.full((500, 1, 4, 4), 0.5)
    out = ColorJitter(brightness=0.4, contrast=0, saturation=0, hue=0, p=1.0)(x, gen(6))
    per_image = out.view(500, -1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image))  # one factor per image
    f = per_image[:, 0] / 0.5
    assert float(f.min()) >= 0.6 - 1e-6 and float(f.max()) <= 1.4 + 1e-6
    assert float(f.min()) < 0.65 and float(f.max()) > 1.35


def test_jitter_probability():
    x = torch.full((2000, 1, 2, 2), 0.5)
    out = ColorJitter(brightness=0.4, contrast=0, saturation=0, hue=0, p=0.8)(x, gen(9))
    changed = (out.view(2000, -1)[:, 0] - 0.5).abs() > 1e-7
    assert 0.76 < float(changed.float().mean()) < 0.84


def test_hue_rotation_keeps_luma_and_inverts():
    x = 0.3 + 0.4 * torch.rand(4, 3, 5, 5, generator=gen(10))  # mid-range: no clipping
    shift = torch.tensor([0.0, 0.05, -0.08, 0.1])
    out = adjust_hue(x, shift)
    torch.testing.assert_close(out[0], x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb_to_grayscale(out), rgb_to_grayscale(x), atol=1e-5, rtol=0)
    assert float((out[1:] - x[1:]).abs().max()) > 1e-3
    back = adjust_hue(out, -shift)
    torch.testing.assert_close(back, x, atol=1e-4, rtol=0)


def test_outputs_stay_in_unit_range_for_all_presets():
    for name in ("natural", "digits", "microscopy", "none"):
        for shape in ((16, 3, 8, 8), (16, 1, 28, 28), (16, 3, 33, 33)):
            x = torch.rand(*shape, generator=gen(11))
            out = image_preset(name)(x, gen(12))
            assert out.shape == x.shape
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_presets_contents():
    digits = image_preset("digits").augmentations
    assert digits[0].hflip == 0.0 and digits[0].vflip == 0.0 and not digits[0].rot90
    micro = image_preset("microscopy").augmentations
    assert micro[0].hflip == 0.5 and micro[0].vflip == 0.5 and micro[0].rot90
    assert micro[1].hue == 0.0
    nat = image_preset("natural").augmentations
    assert nat[0].scale == (0.2, 1.0) and nat[0].hflip == 0.5
    assert (nat[1].brightness, nat[1].contrast, nat[1].saturation, nat[1].hue, nat[1].p) == (
        0.4,
        0.4,
        0.4,
        0.1,
        0.8,
    )
    assert nat[2].p == 0.2
    with pytest.raises(ValueError, match="Unknown"):
        image_preset("bogus")


def test_digits_preset_never_flips():
    # a digit-like asymmetric image: left half bright; without flips the left stays brighter
    x = torch.zeros(300, 1, 16, 16)
    x[..., :7] = 1.0
    out = image_preset("digits")(x, gen(13))
    assert bool((out[..., :8].mean((1, 2, 3)) >= out[..., 8:].mean((1, 2, 3))).all())


def test_bad_batches_raise():
    with pytest.raises(ValueError, match="B, C, H, W"):
        RandomGeometry()(torch.rand(3, 8, 8), gen())
    with pytest.raises(TypeError, match="floats"):
        ColorJitter()(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), gen())
    with pytest.raises(ValueError):
        RandomGeometry(scale=(0.0, 1.0))
    with pytest.raises(ValueError):
        ColorJitter(hue=0.7)


def test_compose_applies_in_order(imgs):
    out = ImageCompose([RandomGrayscale(1.0), RandomGeometry((1, 1), (1, 1), hflip=1.0)])(imgs, gen())
    expected = rgb_to_grayscale(imgs).expand_as(imgs).flip(-1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


# ---- loss -------------------------------------------------------------------------------------
def _infonce_double_loop(a: np.ndarray, b: np.ndarray) -> float:
    def q(u, v):
        return 1.0 / (1.0 + float(((u - v) ** 2).sum()))

    n = a.shape[0]
    pos = -np.mean([math.log(q(a[i], b[i])) for i in range(n)])
    lb = np.mean(
        [
            math.log(sum(q(b[j], a[i]) for i in range(n)) + sum(q(b[j], b[k]) for k in range(n) if k != j))
            for j in range(n)
        ]
    )
    la = np.mean(
        [
            math.log(sum(q(a[j], b[i]) for i in range(n)) + sum(q(a[j], a[k]) for k in range(n) if k != j))
            for j in range(n)
        ]
    )
    return pos + 0.5 * (lb + la)


@pytest.mark.parametrize("d", [2, 5])
def test_cauchy_infonce_matches_direct_computation(d):
    rng = np.random.default_rng(d)
    a, b = rng.normal(size=(5, d)), rng.normal(size=(5, d))
    got = float(cauchy_infonce(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)))
    assert got == pytest.approx(_infonce_double_loop(a, b), rel=1e-5)


def test_cauchy_infonce_prefers_aligned_pairs_and_has_gradients():
    a = torch.randn(16, 2, generator=gen(14), requires_grad=True)
    close = cauchy_infonce(a, a.detach() + 0.01)
    far = cauchy_infonce(a, torch.randn(16, 2, generator=gen(15)))
    assert float(close.detach()) < float(far.detach())
    close.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    with pytest.raises(ValueError):
        cauchy_infonce(torch.zeros(3, 2), torch.zeros(4, 2))
