import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import requires_gpu

from manifex._utils import as_2d_float, check_random_state, make_generator, resolve_device
from manifex.neighbors import knn_indices
from manifex.train._data import DeviceData
from manifex.train._loop import EarlyStopping, train
from manifex.train._schedules import cosine_schedule, step_schedule


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto.type in {"cpu", "mps"}
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu-ish")
    with pytest.raises(TypeError):
        resolve_device(3)


def test_check_random_state():
    assert check_random_state(5) == 5
    with pytest.raises(TypeError):
        check_random_state(1.5)
    with pytest.raises(ValueError):
        check_random_state(-1)


def test_as_2d_float():
    assert as_2d_float(np.arange(6).reshape(3, 2)).dtype == np.float32
    assert sp.issparse(as_2d_float(sp.random(5, 4, density=0.5, format="csr")))
    with pytest.raises(ValueError, match="NaN"):
        as_2d_float(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        as_2d_float(sp.csr_matrix(np.array([[1.0, np.inf]])))
    with pytest.raises(TypeError, match="numbers"):
        as_2d_float(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="2-dimensional"):
        as_2d_float(np.zeros(5))
    with pytest.raises(ValueError, match="at least"):
        as_2d_float(np.zeros((3, 2)), min_rows=20)


def test_device_data_sparse_matches_dense():
    x = sp.random(50, 30, density=0.2, format="csr", dtype=np.float32, random_state=0)
    dd, ds = DeviceData(x.toarray(), torch.device("cpu")), DeviceData(x, torch.device("cpu"))
    idx = torch.tensor([3, 0, 49, 3])
    assert torch.equal(dd[idx], ds[idx])
    assert torch.equal(torch.cat(list(ds.batches(16))), torch.as_tensor(x.toarray()))


def test_knn_exact_matches_brute_force():
    """(pynndescent and faiss against exact search: tests/test_neighbors.py.)"""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    ex = knn_indices(x, 5, method="exact")
    assert ex.shape == (300, 5)
    assert not (ex == np.arange(300)[:, None]).any()
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert np.array_equal(np.sort(ex, 1), np.sort(np.argsort(d, 1)[:, :5], 1))
    with pytest.raises(ValueError, match="n_neighbors"):
        knn_indices(x[:5], 5)


def _lrs(make, n_steps: int, lr: float = 0.03) -> np.ndarray:
    """The learning rate of each of ``n_steps`` optimiser steps under the scheduler ``make(opt)``."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(n_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def _cosine_with_warmup(step: int, n_steps: int, warmup: int) -> float:
    """The multiplier of the schedule the models used before torch's schedulers (closed form)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, n_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


@pytest.mark.parametrize(
    ("n_steps", "warmup"),
    [(1, 0), (2, 0), (10, 1), (37, 3), (100, 0), (100, 10), (300, 30), (640, 0), (2640, 0), (5000, 500)],
)
def test_cosine_schedule_follows_the_closed_form(n_steps, warmup):
    """torch's LinearLR -> CosineAnnealingLR compute each rate from the last one; every step's rate
    is the closed form's to 1e-11 relative, and the same float32 number (what SGD and AdamW apply)."""
    lr = 0.03 * 512 / 256
    got = _lrs(lambda opt: cosine_schedule(opt, n_steps, warmup), n_steps, lr)
    want = np.array([lr * _cosine_with_warmup(s, n_steps, warmup) for s in range(n_steps)])
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-300)
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    if warmup:
        assert got[0] == pytest.approx(lr / warmup) and got[warmup - 1] == pytest.approx(lr)
    assert got[-1] == pytest.approx(
        lr * 0.5 * (1 + math.cos(math.pi * (n_steps - 1 - warmup) / (n_steps - warmup)))
    )


@pytest.mark.parametrize("n_steps", [1, 9, 10, 100, 1001, 2640])
def test_step_schedule_halves_ten_times_exactly(n_steps):
    every = max(1, n_steps // 10)
    got = _lrs(lambda opt: step_schedule(opt, n_steps, n_drops=10, factor=0.5), n_steps, 1e-3)
    np.testing.assert_array_equal(got, [1e-3 * 0.5 ** (s // every) for s in range(n_steps)])


def test_train_steps_the_schedule_and_records_the_rate_of_each_epochs_last_step():
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 1)
    xs = torch.randn(64, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    hist = train(
        lambda idx: ((lin(xs[idx]) - 1.0) ** 2).mean(),
        modules=[lin],
        optimizer=opt,
        lr_scheduler=cosine_schedule(opt, 40, 4),
        n=64,
        batch_size=16,
        n_steps=40,
        device=torch.device("cpu"),
        generator=make_generator(0, torch.device("cpu")),
        progress=False,
    )
    want = [0.1 * _cosine_with_warmup(s, 40, 4) for s in range(3, 40, 4)]  # 4 steps per epoch
    np.testing.assert_allclose(hist.lr, want, rtol=1e-12)


def test_train_fits_linear_regression_and_is_seeded():
    rng = np.random.default_rng(0)
    xs = torch.as_tensor(rng.normal(size=(256, 3)), dtype=torch.float32)
    w_true = torch.tensor([[1.0], [-2.0], [0.5]])
    ys = xs @ w_true

    def run(seed):
        torch.manual_seed(0)
        lin = torch.nn.Linear(3, 1, bias=False)
        opt = torch.optim.SGD(lin.parameters(), lr=0.1)
        hist = train(
            lambda idx: ((lin(xs[idx]) - ys[idx]) ** 2).mean(),
            modules=[lin],
            optimizer=opt,
            n=256,
            batch_size=32,
            n_steps=200,
            device=torch.device("cpu"),
            generator=make_generator(seed, torch.device("cpu")),
            progress=False,
        )
        return lin.weight.detach().clone(), hist

    w1, h1 = run(0)
    w2, _ = run(0)
    assert torch.allclose(w1.T, w_true, atol=1e-3)
    assert torch.equal(w1, w2)
    assert h1.n_steps == 200 and len(h1.loss) == 25 and h1.loss[-1] < h1.loss[0]


def test_train_reports_divergence():
    p = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=0.1)
    with pytest.raises(FloatingPointError, match="loss"):
        train(
            lambda idx: p * float("nan"),
            modules=[],
            optimizer=opt,
            n=10,
            batch_size=5,
            n_steps=3,
            device=torch.device("cpu"),
            generator=make_generator(0, torch.device("cpu")),
            progress=False,
        )


def _diverging_at(step: int, device: torch.device):
    """A step function whose loss is finite until ``step``, then NaN; and its parameter."""
    p = torch.nn.Parameter(torch.ones(1, device=device))
    calls = []

    def fn(idx):
        calls.append(1)
        return (p * p).sum() * (float("nan") if len(calls) > step else 1.0)

    return fn, p


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, requires_gpu])])
def test_train_names_the_step_where_the_loss_diverged(device):
    """On CUDA the loss is read once per epoch (no host sync per step), yet the step is exact."""
    dev = torch.device(device)
    fn, p = _diverging_at(7, dev)
    with pytest.raises(FloatingPointError, match="at step 7;"):
        train(
            fn,
            modules=[],
            optimizer=torch.optim.SGD([p], lr=0.01),
            n=20,
            batch_size=5,
            n_steps=20,
            device=dev,
            generator=make_generator(0, dev),
            progress=False,
        )


def test_cluster_scores_of_a_given_clustering_needs_no_embedding():
    from manifex.metrics import cluster_scores

    truth = np.array(["a"] * 4 + ["b"] * 4)
    # same partition under other names: perfect; one cell moved: ACC 7/8
    assert cluster_scores(None, truth, labels_pred=np.array([5] * 4 + [9] * 4)) == {
        "acc": 1.0,
        "nmi": 1.0,
        "ari": 1.0,
    }
    assert cluster_scores(None, truth, labels_pred=np.array([0, 0, 0, 1, 1, 1, 1, 1]))["acc"] == 7 / 8
    with pytest.raises(ValueError, match="embedding"):
        cluster_scores(None, truth)
    with pytest.raises(ValueError, match="labels_pred"):
        cluster_scores(None, truth, labels_pred=np.zeros((8, 2)))
    with pytest.raises(ValueError, match="rows"):
        cluster_scores(np.zeros((5, 2)), truth, labels_pred=np.zeros(8))


def test_early_stopping_stops_after_patience_and_restores_best_weights():
    """A scripted validation curve: best at the 3rd check, then 3 worse checks -> stop, weights of step 3."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 1)
    xs = torch.randn(64, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    curve = iter([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 1.0, 0.5])
    seen: dict[int, torch.Tensor] = {}

    def validate():  # called after each step (every=1): record the weights of that step
        seen[len(seen) + 1] = lin.weight.detach().clone()
        return next(curve)

    hist = train(
        lambda idx: ((lin(xs[idx]) - 1.0) ** 2).mean(),
        modules=[lin],
        optimizer=opt,
        n=64,
        batch_size=16,
        n_steps=100,
        device=torch.device("cpu"),
        generator=make_generator(0, torch.device("cpu")),
        progress=False,
        early_stopping=EarlyStopping(validate, every=1, patience=3),
    )
    assert hist.n_steps == 6 and hist.stopped_early and hist.best_step == 3
    assert hist.val_loss == [5.0, 4.0, 3.0, 3.5, 3.2, 3.1] and hist.val_step == [1, 2, 3, 4, 5, 6]
    assert torch.equal(lin.weight, seen[3]) and not torch.equal(lin.weight, seen[6])
    d = hist.as_dict()
    assert d["best_step"] == 3 and d["stopped_early"] is True


def test_forward_to_reads_the_blocks_the_forward_pass_goes_through():
    from manifex.nn import MLP, SmallResNet

    torch.manual_seed(0)
    net = SmallResNet(1, width=4).eval()
    x = torch.rand(3, 1, 16, 16)
    assert net.n_blocks == 3
    # block 0 halves 16 px to 8 px with 2 × width channels, flattened
    assert net.forward_to(x, 0).shape == (3, 8 * 8 * 8)
    # pooling the last block's activations is the network's output
    last = net.forward_to(x, net.n_blocks - 1).view(3, 32, 2, 2)
    torch.testing.assert_close(last.mean((2, 3)), net(x))
    mlp = MLP(10, [7, 5, 3]).eval()
    h = torch.randn(4, 10)
    assert mlp.n_blocks == 3 and mlp.forward_to(h, 0).shape == (4, 7)
    torch.testing.assert_close(mlp.forward_to(h, 2), mlp(h))
    torch.testing.assert_close(mlp.forward_to(h, 1), mlp[1](mlp[0](h)))
