"""Training on two CPU processes (gloo) through torch.distributed.

* the equivalence test: the shared trainer on 2 processes -- a seeded global permutation sharded
  over the ranks, batch-level losses on embeddings gathered with gradients, gradients averaged --
  makes the same steps as one process on the global batch (DLME's loss and InfoNCE);
* each method (DLME, t-SimCNE, N2D's autoencoder) trains end to end on 2 processes and every
  rank ends with the same model;
* ``torchrun --nproc-per-node 2 -m manifex fit`` writes a model that ``manifex transform`` uses;
* under ``torchrun --max-restarts 1`` a worker killed mid-training restarts both ranks, which
  resume from the checkpoint and end with the model of an uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def _init(rank: int, size: int, store: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)


def _run(fn, size: int, *args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        mp.start_processes(fn, args=(size, store, *args), nprocs=size, join=True, start_method="spawn")


# ---------------------------------------------------------------------------------------------
# equivalence of the multi-process step with the single-process step on the global batch
# ---------------------------------------------------------------------------------------------
def _train_tiny(loss_name: str, out: str | None) -> dict[str, torch.Tensor]:
    """A BatchNorm-free encoder + projector trained 6 steps by the shared trainer, with a
    deterministic 'augmentation' so that only sharding, gathering and averaging are tested."""
    from manifex.losses import cauchy_infonce, dlme_loss
    from manifex.nn import MLP
    from manifex.train._distributed import gather, world
    from manifex.train._loop import train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 12, generator=g)
    torch.manual_seed(1)
    enc = MLP(12, [32, 16], batchnorm=False)
    proj = MLP(16, [32], 2, batchnorm=False)
    w = world()

    def step(idx: torch.Tensor) -> torch.Tensor:
        xb = x[idx]
        xa = 0.9 * xb + 0.1 * torch.tanh(xb)
        z = enc(torch.cat([xb, xa]))
        y = proj(z)
        if w.distributed:
            z = torch.cat([gather(t) for t in z.chunk(2)])
            y = torch.cat([gather(t) for t in y.chunk(2)])
        if loss_name == "dlme":
            return dlme_loss(z, y, nu_z=100.0, nu_y=0.01, aug_near_rate=1e5)
        ya, yb = y.chunk(2)
        return cauchy_infonce(ya, yb)

    params = list(enc.parameters()) + list(proj.parameters())
    # SGD, not Adam: the losses depend on distances only, so the output bias has a zero gradient
    # that Adam would normalise to full-size steps of rounding noise
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    hist = train(
        step,
        modules=[enc, proj],
        optimizer=opt,
        n=96,
        batch_size=32,
        n_steps=6,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(3),
        progress=False,
    )
    state = {f"enc.{k}": v for k, v in enc.state_dict().items()}
    state.update({f"proj.{k}": v for k, v in proj.state_dict().items()})
    state["loss"] = torch.tensor(hist.loss)
    if out is not None:
        torch.save(state, out)
    return state


def _equivalence_worker(rank: int, size: int, store: str, outdir: str) -> None:
    _init(rank, size, store)
    for loss in ("dlme", "infonce"):
        _train_tiny(loss, str(Path(outdir) / f"{loss}_{rank}.pt"))
    dist.destroy_process_group()


def test_distributed_step_equals_single_process_global_batch(tmp_path):
    _run(_equivalence_worker, 2, str(tmp_path))
    for loss in ("dlme", "infonce"):
        single = _train_tiny(loss, None)
        ranks = [torch.load(tmp_path / f"{loss}_{r}.pt") for r in range(2)]
        for k, v in single.items():
            for r in ranks:
                torch.testing.assert_close(r[k], v, rtol=1e-4, atol=1e-5, msg=f"{loss}: {k} differs")
        # the test would pass trivially if nothing trained
        assert not torch.allclose(single["loss"][0], single["loss"][-1])


def test_distributed_gather_gradient_is_the_global_gradient(tmp_path):
    """Without averaging, each rank's gradient through ``gather`` is W × its rows' share of the
    global loss's gradient; averaged over the ranks it is the global gradient."""
    _run(_gather_worker, 2, str(tmp_path))
    x = torch.arange(12.0).reshape(6, 2)
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    y = x @ w
    (y**2).sum().mul(0.5).backward()
    for r in range(2):
        got = torch.load(tmp_path / f"grad_{r}.pt")
        torch.testing.assert_close(got, w.grad)


def _gather_worker(rank: int, size: int, store: str, outdir: str) -> None:
    from manifex.train._distributed import gather

    _init(rank, size, store)
    x = torch.arange(12.0).reshape(6, 2)[rank * 3 : (rank + 1) * 3]
    w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
    y = gather(x @ w)
    assert y.shape == (6, 2)
    (y**2).sum().mul(0.5).backward()
    dist.all_reduce(w.grad)  # the mean over the ranks, as DDP takes it
    w.grad /= size
    torch.save(w.grad, Path(outdir) / f"grad_{rank}.pt")
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# every method end to end on two processes
# ---------------------------------------------------------------------------------------------
def _methods_worker(rank: int, size: int, store: str, outdir: str) -> None:
    import manifex as mx

    _init(rank, size, store)
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(3, 10))
    x = (centers[rng.integers(0, 3, 240)] + rng.normal(size=(240, 10))).astype(np.float32)
    out = {}
    m = mx.models.DLME(n_steps=30, batch_size=60, progress=False, device="cpu").fit(x)
    out["dlme"] = m.embedding_
    es = mx.models.DLME(n_steps=40, batch_size=60, early_stopping=True, progress=False, device="cpu").fit(x)
    out["dlme_es"] = es.embedding_
    out["dlme_es_val"] = np.asarray(es.history_["val_loss"])
    t = mx.models.TSimCNE(n_epochs=(2, 1, 1), batch_size=60, progress=False, device="cpu", amp=False).fit(x)
    out["tsimcne"] = t.embedding_
    n = mx.models.N2D(n_clusters=3, n_steps=20, batch_size=60, map_2d=False, progress=False, device="cpu")
    n.fit(x)
    out["n2d_code"] = n.transform(x, space="latent")
    out["dlme_n_steps"] = np.array(m.history_["n_steps"])
    np.savez(Path(outdir) / f"methods_{rank}.npz", **out)
    dist.destroy_process_group()


def test_distributed_each_method_trains_and_ranks_agree(tmp_path):
    _run(_methods_worker, 2, str(tmp_path))
    a, b = (np.load(tmp_path / f"methods_{r}.npz") for r in range(2))
    for key in ("dlme", "dlme_es", "dlme_es_val", "tsimcne", "n2d_code"):
        assert np.isfinite(a[key]).all()
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4, err_msg=key)
    assert int(a["dlme_n_steps"]) == 30
    assert a["dlme"].std() > 0


def test_distributed_batch_size_must_divide(tmp_path):
    _run(_bad_batch_worker, 2, str(tmp_path))
    assert (tmp_path / "err_0.txt").read_text().startswith("`batch_size`=61")


def _bad_batch_worker(rank: int, size: int, store: str, outdir: str) -> None:
    import manifex as mx

    _init(rank, size, store)
    x = np.random.default_rng(0).normal(size=(100, 5)).astype(np.float32)
    try:
        mx.models.DLME(n_steps=5, batch_size=61, progress=False, device="cpu").fit(x)
    except ValueError as err:
        (Path(outdir) / f"err_{rank}.txt").write_text(str(err))
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# the command line under torchrun
# ---------------------------------------------------------------------------------------------
def test_distributed_torchrun_cli_fit_and_transform(tmp_path):
    import anndata as ad

    rng = np.random.default_rng(0)
    x = (rng.normal(scale=3.0, size=(3, 8))[rng.integers(0, 3, 200)] + rng.normal(size=(200, 8))).astype(
        np.float32
    )
    a = ad.AnnData(X=x)
    a.obsm["X_pca"] = x
    a.write_h5ad(tmp_path / "data.h5ad")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "manifex",
        "fit",
        "dlme",
        str(tmp_path / "data.h5ad"),
        "--model-out",
        str(tmp_path / "model.mx"),
        "--out",
        str(tmp_path / "out.h5ad"),
        "--n-steps",
        "20",
        "--device",
        "cpu",
        "--param",
        "batch_size=50",
        "--param",
        "progress=false",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.obsm["X_dlme"].shape == (200, 2)
    t = subprocess.run(
        [sys.executable, "-m", "manifex", "transform", str(tmp_path / "model.mx"), str(tmp_path / "data.h5ad"),
         "--out", str(tmp_path / "emb.npy"), "--chunk-size", "64", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert t.returncode == 0, t.stderr[-3000:]
    emb = np.load(tmp_path / "emb.npy")
    np.testing.assert_allclose(emb, out.obsm["X_dlme"], rtol=1e-4, atol=1e-4)


def test_distributed_torchrun_restart_resumes_from_checkpoint(tmp_path):
    """Rank 1 is killed (SIGKILL) at step 14 of 24 (4 steps an epoch, a checkpoint every epoch);
    torchrun restarts both ranks, they resume from the checkpoint of step 12 -- weights,
    optimiser, the shared permutation stream, every rank's augmentation stream and BatchNorm
    statistics -- and end with exactly the model of the same fit not interrupted."""
    # torchrun's restarted workers must not share the rendezvous store with the failed ones: they
    # would read their addresses and fail to connect (pytorch/pytorch#135712)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    env.pop("TORCHELASTIC_RESTART_COUNT", None)
    worker = Path(__file__).with_name("_torchrun_restart_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "1", str(worker), str(tmp_path), "14"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for r in range(2):  # the first attempt trained from step 0, the restarted one from the checkpoint
        assert (tmp_path / f"first_step_0_{r}.txt").read_text() == "0"
        assert (tmp_path / f"first_step_1_{r}.txt").read_text() == "12"
    ref = [np.load(tmp_path / f"reference_{r}.npz") for r in range(2)]
    got = [np.load(tmp_path / f"resumed_{r}.npz") for r in range(2)]
    assert set(got[0].files) == set(ref[0].files) and any("running_mean" in k for k in ref[0].files)
    for r in range(2):
        for k in ref[0].files:
            np.testing.assert_array_equal(got[r][k], ref[0][k], err_msg=f"rank {r}: {k}")
            np.testing.assert_array_equal(ref[r][k], ref[0][k], err_msg=f"reference rank {r}: {k}")
    assert ref[0]["embedding"].std() > 0
