import numpy as np
import pytest
import torch

from manifex.augment import (
    AugmentContext,
    Compose,
    FeatureDropout,
    GaussianNoise,
    KNNMix,
    NeighborSwap,
    expression_preset,
)


def make_ctx(seed=0, n=50, d=8, k=3):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(n, d, generator=g)
    # neighbours: the next k rows (cyclic), a table we know
    knn = (torch.arange(n)[:, None] + torch.arange(1, k + 1)[None]) % n
    ctx = AugmentContext(
        data=data, knn=knn, feature_std=data.std(0), generator=torch.Generator().manual_seed(seed)
    )
    return data, knn, ctx


def test_knn_mix_lies_on_segment_to_a_neighbour():
    data, knn, ctx = make_ctx()
    idx = torch.arange(20)
    out = KNNMix(1.0)(data[idx], idx, ctx)
    for i in range(20):
        # out_i = (1-r) x_i + r x_j for some neighbour j and r in [0, 1]
        ok = False
        for j in knn[i]:
            diff = data[j] - data[i]
            r = ((out[i] - data[i]) @ diff / (diff @ diff)).item()
            if 0 <= r <= 1 and torch.allclose(data[i] + r * diff, out[i], atol=1e-5):
                ok = True
        assert ok


def test_feature_dropout_fraction():
    data, _, ctx = make_ctx(n=400, d=100)
    x = data.abs() + 1.0  # no zeros before dropout
    idx = torch.arange(400)
    out = FeatureDropout(0.3)(x, idx, ctx)
    frac = (out == 0).float().mean().item()
    assert 0.27 < frac < 0.33
    kept = out != 0
    assert torch.equal(out[kept], x[kept])


def test_gaussian_noise_scaled_by_feature_std():
    g = torch.Generator().manual_seed(1)
    data = torch.randn(5000, 2, generator=g) * torch.tensor([1.0, 10.0])
    ctx = AugmentContext(
        data=data, knn=None, feature_std=data.std(0), generator=torch.Generator().manual_seed(0)
    )
    noise = GaussianNoise(0.5)(data, torch.arange(5000), ctx) - data
    ratio = noise.std(0) / data.std(0)
    assert torch.allclose(ratio, torch.tensor([0.5, 0.5]), atol=0.03)


def test_neighbor_swap_takes_values_from_a_neighbour():
    data, knn, ctx = make_ctx(n=30, d=40)
    idx = torch.arange(30)
    out = NeighborSwap(0.5)(data[idx], idx, ctx)
    changed = out != data
    assert 0.3 < changed.float().mean() < 0.7
    for i in range(30):
        cols = changed[i].nonzero().ravel()
        # all swapped values come from the same single neighbour
        assert any(torch.equal(out[i, cols], data[j, cols]) for j in knn[i])


def test_seeded_and_composable():
    data, _, ctx1 = make_ctx(seed=3)
    _, _, ctx2 = make_ctx(seed=3)
    aug = Compose([KNNMix(), FeatureDropout(0.1), GaussianNoise(0.1)])
    idx = torch.arange(10)
    assert torch.equal(aug(data[idx], idx, ctx1), aug(data[idx], idx, ctx2))
    assert len(expression_preset("default").augmentations) == 3
    assert expression_preset("none")(data[idx], idx, ctx1).equal(data[idx])


@pytest.mark.parametrize(
    ("cls", "bad"), [(KNNMix, 1.5), (FeatureDropout, 1.0), (GaussianNoise, -1.0), (NeighborSwap, -0.1)]
)
def test_bad_strength(cls, bad):
    with pytest.raises(ValueError):
        cls(bad)


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset"):
        expression_preset("nope")


def test_knn_needed():
    ctx = AugmentContext(data=torch.zeros(3, 2), knn=None, feature_std=None, generator=torch.Generator())
    with pytest.raises(ValueError, match="kNN"):
        KNNMix()(torch.zeros(3, 2), torch.arange(3), ctx)
    np.testing.assert_equal(True, True)
