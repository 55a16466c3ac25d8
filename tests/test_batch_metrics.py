import numpy as np
import pytest

import manifex as mx
from manifex.metrics import batch_entropy, ilisi


def _sites(n_sites, batches_per_site, spacing=100.0):
    """Cells stacked on ``n_sites`` points far apart; ``batches_per_site`` lists each site's cells."""
    per = len(batches_per_site)
    x = np.repeat(np.arange(n_sites) * spacing, per)[:, None] * np.array([[1.0, 0.5]])
    b = np.tile(np.asarray(batches_per_site), n_sites)
    return x, b


def test_exported():
    assert mx.metrics.batch_entropy is batch_entropy
    assert mx.metrics.ilisi is ilisi
    assert {"batch_entropy", "ilisi"} <= set(mx.metrics.__all__)


def _ring(n, n_batches=2):
    """``n`` cells evenly spaced on a circle, batches alternating around it."""
    t = 2 * np.pi * np.arange(n) / n
    return np.c_[np.cos(t), np.sin(t)] * 10.0, np.arange(n) % n_batches


def test_perfectly_mixed_scores_one():
    # alternating batches on a ring: the 4 nearest cells are the 2 on each side, one of each
    # batch per side -> exactly half of each batch around every cell
    x, b = _ring(200)
    assert batch_entropy(x, b, n_neighbors=4) == pytest.approx(1.0)
    assert ilisi(x, b, n_neighbors=4) == pytest.approx(1.0)
    assert batch_entropy(x, b, n_neighbors=4, per_cell=True) == pytest.approx(np.ones(200))
    # three batches in turn, k = 6: two of each batch around every cell
    x, b = _ring(300, 3)
    assert batch_entropy(x, b, n_neighbors=6) == pytest.approx(1.0)
    assert ilisi(x, b, n_neighbors=6) == pytest.approx(1.0)


def test_hand_computed_partial_mix():
    # sites of 2 + 2 cells far apart: each cell's 3 neighbours are 1 of its batch and 2 of the other
    x, b = _sites(40, [0, 0, 1, 1])
    p = np.array([1, 2]) / 3
    assert batch_entropy(x, b, n_neighbors=3) == pytest.approx(-(p * np.log(p)).sum() / np.log(2))
    assert ilisi(x, b, n_neighbors=3) == pytest.approx(1 / (p**2).sum() - 1)  # = 0.8
    assert ilisi(x, b, n_neighbors=3) == pytest.approx(0.8)
    # three batches, two of each per site, k=5 -> (1, 2, 2) out of 5 for every cell
    x, b = _sites(20, [0, 0, 1, 1, 2, 2])
    p = np.array([1, 2, 2]) / 5
    assert batch_entropy(x, b, n_neighbors=5) == pytest.approx(-(p * np.log(p)).sum() / np.log(3))
    assert ilisi(x, b, n_neighbors=5) == pytest.approx((1 / (p**2).sum() - 1) / 2)


def test_fully_separated_scores_zero():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 1000.0])
    b = np.repeat(["ctrl", "stim"], 100)
    assert batch_entropy(x, b, n_neighbors=30) == 0.0
    assert ilisi(x, b, n_neighbors=30) == 0.0
    per = batch_entropy(x, b, n_neighbors=30, per_cell=True)
    assert per.shape == (200,) and np.all(per == 0)


def test_random_batches_mix_and_order():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 5))
    b = rng.integers(0, 2, 600)
    mixed = batch_entropy(x, b, n_neighbors=30)
    assert 0.9 < mixed <= 1.0
    # shifting one batch away lowers both scores
    shifted = x + 3.0 * b[:, None]
    assert batch_entropy(shifted, b, n_neighbors=30) < mixed
    assert ilisi(shifted, b, n_neighbors=30) < ilisi(x, b, n_neighbors=30)


def test_duplicates_do_not_count_self():
    # all cells at one point: the cell itself must still be left out of its neighbours
    x = np.zeros((6, 2))
    b = np.array([0, 0, 0, 1, 1, 1])
    per = ilisi(x, b, n_neighbors=5, per_cell=True)
    # every cell: 2 of its own batch and 3 of the other among the other five
    p = np.array([2, 3]) / 5
    assert per == pytest.approx(np.full(6, 1 / (p**2).sum() - 1))


@pytest.mark.parametrize(
    ("kwargs", "err"),
    [
        ({"n_neighbors": 0}, ValueError),
        ({"n_neighbors": 10}, ValueError),
        ({"n_neighbors": 2.5}, ValueError),
    ],
)
def test_bad_n_neighbors(kwargs, err):
    x = np.arange(20.0).reshape(10, 2)
    with pytest.raises(err):
        batch_entropy(x, np.tile([0, 1], 5), **kwargs)


def test_bad_batch():
    x = np.arange(20.0).reshape(10, 2)
    with pytest.raises(ValueError, match="two batches"):
        batch_entropy(x, np.zeros(10), n_neighbors=3)
    with pytest.raises(ValueError, match="entries"):
        ilisi(x, np.zeros(9), n_neighbors=3)
    with pytest.raises(ValueError, match="NaN"):
        ilisi(x, np.r_[np.zeros(9), np.nan], n_neighbors=3)
