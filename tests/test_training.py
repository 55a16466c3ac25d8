"""The shared trainer as every model uses it: checkpoint / resume bound to the data, validation and
early stopping, and the progress report (tiny data, CPU, a few seconds each).

Training is interrupted by wrapping the trainer the training plan calls (``manifex.train._plan.train``):
the wrapper counts optimiser steps, can raise after a given number of them (a crash mid-epoch),
and records the weights at every validation check.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
import scanpy as sc
import torch
from sklearn.datasets import load_digits

import manifex as mx
import manifex.train._plan as plan_module
from manifex._utils import make_generator
from manifex.io._format import read_file, write_file
from manifex.models import DLME, N2D, TSimCNE
from manifex.train._loop import EarlyStopping, train
from manifex.train._plan import split_validation
from manifex.train._progress import Progress, progress_enabled

DLME_FAST = {
    "encoder_dims": (32, 24, 16),
    "projector_dims": (32, 16),
    "n_steps": 24,
    "batch_size": 64,
    "device": "cpu",
    "progress": False,
}
N2D_FAST = {"n_clusters": 3, "hidden_dims": (32, 24, 48), "n_steps": 24, "batch_size": 64, "map_2d": False}
N2D_FAST.update(device="cpu", progress=False, gmm_n_init=1)
TS_IMG = {"n_epochs": (3, 2, 2), "batch_size": 32, "device": "cpu", "progress": False}
TS_EXPR = {
    "mlp_dims": (32, 16),
    "head_hidden": 32,
    "pretrain_dim": 16,
    "n_epochs": (3, 2, 2),
    "batch_size": 64,
    "device": "cpu",
    "progress": False,
}


class Interrupted(RuntimeError):
    """Raised by the wrapped step to simulate a crash."""


class TrainSpy:
    """Wraps ``train`` in the training plan's module: counts steps, raises after ``limit`` of them, and
    records the modules' weights at every validation check (one list per ``train`` call)."""

    def __init__(self, monkeypatch, module, limit: int | None = None):
        self.steps, self.limit, self.checks = 0, limit, []
        real = module.train

        def wrapped(step_fn, **kw):
            def counted(idx):
                if self.limit is not None and self.steps >= self.limit:
                    raise Interrupted("interrupted")
                self.steps += 1
                return step_fn(idx)

            snaps: list[list[dict]] = []
            self.checks.append(snaps)
            es = kw.get("early_stopping")
            if es is not None:
                modules = kw["modules"]

                def validate():
                    snaps.append([{k: v.clone() for k, v in m.state_dict().items()} for m in modules])
                    return es.validate()

                kw["early_stopping"] = EarlyStopping(
                    validate, every=es.every, patience=es.patience, min_delta=es.min_delta
                )
            return real(counted, **kw)

        monkeypatch.setattr(module, "train", wrapped)


def _blobs(n_per: int = 80, d: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(3, d))
    y = np.repeat(np.arange(3), n_per)
    return (centres[y] + rng.normal(size=(y.size, d))).astype(np.float32)


@pytest.fixture(scope="module")
def x():
    return _blobs()


@pytest.fixture(scope="module")
def images():
    d = load_digits()
    return (d.images[:256] * 255 / 16).astype(np.uint8)


# (name, model factory, data fixture name, steps of an uninterrupted run)
CASES = {
    "dlme": (lambda **kw: DLME(**{**DLME_FAST, **kw}), "x", 24),
    "dlme_early_stopping": (
        lambda **kw: DLME(**{**DLME_FAST, "early_stopping": True, "patience": 50, **kw}),
        "x",
        24,
    ),
    "n2d": (lambda **kw: N2D(**{**N2D_FAST, **kw}), "x", 24),
    "tsimcne_images": (lambda **kw: TSimCNE(**{**TS_IMG, **kw}), "images128", 28),
    "tsimcne_expression": (lambda **kw: TSimCNE(**{**TS_EXPR, **kw}), "x", 21),
}


def _data(case, x, images):
    return images[:128] if CASES[case][1] == "images128" else x


def _compare_histories(a, b, *, seconds: bool) -> None:
    """Two history dicts (nested per stage for t-SimCNE) are equal; ``seconds`` too if asked."""
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], dict):
            _compare_histories(a[k], b[k], seconds=seconds)
        elif k in ("seconds", "images_per_second", "augment_seconds") and not seconds:
            continue
        elif isinstance(a[k], np.ndarray | list):
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
        else:
            assert a[k] == b[k], k


def _embedding(model):
    return model.embedding_ if not isinstance(model, N2D) else model.code_


# ---- checkpoint / resume ----------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_a_finished_checkpoint_is_reused_without_training(case, x, images, tmp_path, monkeypatch):
    make, _, total = CASES[case]
    data = _data(case, x, images)
    ckpt = tmp_path / "run.ckpt"
    first = make(checkpoint=ckpt, checkpoint_every=1).fit(data)
    assert first.history_["n_steps"] == total and ckpt.exists()
    spy = TrainSpy(monkeypatch, plan_module)
    again = make(checkpoint=ckpt, checkpoint_every=1).fit(data)
    assert spy.steps == 0  # nothing trained again
    np.testing.assert_array_equal(_embedding(again), _embedding(first))
    np.testing.assert_array_equal(again.transform(data), first.transform(data))
    _compare_histories(first.history_, again.history_, seconds=True)


# where to interrupt: (case, steps completed before the crash)
INTERRUPTS = [
    ("dlme", 10),
    ("dlme_early_stopping", 13),
    ("n2d", 11),
    ("tsimcne_images", 6),  # stage 1, epoch 2
    ("tsimcne_images", 14),  # stage 2, epoch 1: the file holds the finished stage 1
    ("tsimcne_images", 17),  # stage 2, epoch 2
    ("tsimcne_images", 26),  # stage 3, epoch 2
    ("tsimcne_expression", 13),  # stage 2
]


@pytest.mark.parametrize(("case", "crash_after"), INTERRUPTS)
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(
    case, crash_after, x, images, tmp_path, monkeypatch
):
    """Bitwise on the CPU: the checkpoint holds weights, optimiser, random generator and (with
    early stopping) the best weights so far, written at an epoch's end, so the resumed run draws
    the same minibatches and augmentations as the uninterrupted one."""
    make, _, total = CASES[case]
    data = _data(case, x, images)
    full = make().fit(data)
    ckpt = tmp_path / "run.ckpt"
    with monkeypatch.context() as m:
        TrainSpy(m, plan_module, limit=crash_after)
        with pytest.raises(Interrupted):
            make(checkpoint=ckpt, checkpoint_every=1).fit(data)
    assert ckpt.exists()
    with monkeypatch.context() as m:
        spy = TrainSpy(m, plan_module)
        resumed = make(checkpoint=ckpt, checkpoint_every=1).fit(data)
    # only the steps after the last epoch written were trained again
    assert 0 < spy.steps < total - crash_after + 5
    assert spy.steps >= total - crash_after
    np.testing.assert_array_equal(_embedding(resumed), _embedding(full))
    if isinstance(full, N2D):
        np.testing.assert_array_equal(resumed.labels_, full.labels_)
    _compare_histories(full.history_, resumed.history_, seconds=False)


@pytest.mark.parametrize("case", ["dlme", "tsimcne_expression"])
def test_a_checkpoint_without_the_schedule_state_resumes_on_the_same_rates(
    case, x, images, tmp_path, monkeypatch
):
    """A checkpoint written before the learning-rate scheduler's state was saved: the schedule
    is stepped to the saved step, so the run resumes on the rates of the uninterrupted one."""
    make = CASES[case][0]
    data = _data(case, x, images)
    full = make().fit(data)
    ckpt = tmp_path / "run.ckpt"
    with monkeypatch.context() as m:
        TrainSpy(m, plan_module, limit=13)  # in an epoch of DLME's run and of t-SimCNE's stage 2
        with pytest.raises(Interrupted):
            make(checkpoint=ckpt, checkpoint_every=1).fit(data)
    header, arrays = read_file(ckpt, kind="checkpoint")
    assert not header["done"] and "lr_scheduler" in header["state"]["extra"]
    del header["state"]["extra"]["lr_scheduler"]
    write_file(ckpt, kind="checkpoint", header=header, arrays=arrays, overwrite=True)
    resumed = make(checkpoint=ckpt, checkpoint_every=1).fit(data)
    np.testing.assert_array_equal(resumed.embedding_, full.embedding_)
    _compare_histories(full.history_, resumed.history_, seconds=False)


def test_checkpoint_every_counts_epochs(x, tmp_path, monkeypatch):
    """With checkpoint_every=3 a crash in epoch 5 resumes from the end of epoch 3."""
    ckpt = tmp_path / "run.ckpt"
    with monkeypatch.context() as m:
        TrainSpy(m, plan_module, limit=14)  # 3 steps per epoch: crash in epoch 5
        with pytest.raises(Interrupted):
            DLME(**DLME_FAST, checkpoint=ckpt, checkpoint_every=3).fit(x)
    with monkeypatch.context() as m:
        spy = TrainSpy(m, plan_module)
        DLME(**DLME_FAST, checkpoint=ckpt, checkpoint_every=3).fit(x)
    assert spy.steps == 24 - 9


def test_a_checkpoint_of_other_data_of_the_same_shape_is_refused(x, images, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    DLME(**DLME_FAST, checkpoint=ckpt).fit(x)
    before = ckpt.read_bytes()
    for other in (x[::-1].copy(), x + np.float32(1e-3)):  # same values in another order; nudged
        with pytest.raises(ValueError, match="other data"):
            DLME(**DLME_FAST, checkpoint=ckpt).fit(other)
    assert ckpt.read_bytes() == before  # the refused file is left as it was
    ck2 = tmp_path / "ts.ckpt"
    TSimCNE(**TS_IMG, checkpoint=ck2).fit(images[:128])
    with pytest.raises(ValueError, match="other data"):
        TSimCNE(**TS_IMG, checkpoint=ck2).fit(images[128:])
    ck3 = tmp_path / "n2d.ckpt"
    N2D(**N2D_FAST, checkpoint=ck3).fit(x)
    with pytest.raises(ValueError, match="other data"):
        N2D(**N2D_FAST, checkpoint=ck3).fit(x[::-1].copy())


def test_tl_tsimcne_refuses_a_checkpoint_of_other_images_of_the_same_size(images, tmp_path):
    """Found: ``tl.tsimcne(a2, checkpoint=ck)`` after ``a1`` returned a1's training."""
    labels = np.zeros(128, dtype=int)
    a1 = mx.datasets.image_anndata(images[:128], labels)
    a2 = mx.datasets.image_anndata(images[128:], labels)
    ckpt = tmp_path / "ck.ckpt"
    mx.tl.tsimcne(a1, image_key="image", checkpoint=ckpt, **TS_IMG)
    keys = sorted(a2.obsm), sorted(a2.uns)
    with pytest.raises(ValueError, match="other data"):
        mx.tl.tsimcne(a2, image_key="image", checkpoint=ckpt, **TS_IMG)
    assert (sorted(a2.obsm), sorted(a2.uns)) == keys


@pytest.mark.parametrize(
    ("make", "change"),
    [
        (lambda **kw: DLME(**{**DLME_FAST, **kw}), {"lr": 3e-3}),
        (lambda **kw: DLME(**{**DLME_FAST, **kw}), {"n_steps": 30}),
        (lambda **kw: DLME(**{**DLME_FAST, **kw}), {"random_state": 1}),
        (lambda **kw: N2D(**{**N2D_FAST, **kw}), {"hidden_dims": (32, 24, 40)}),
        (lambda **kw: TSimCNE(**{**TS_EXPR, **kw}), {"n_epochs": (3, 2, 3)}),
    ],
)
def test_a_checkpoint_of_other_parameters_is_refused(make, change, x, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    make(checkpoint=ckpt).fit(x)
    with pytest.raises(ValueError, match="other parameters"):
        make(checkpoint=ckpt, **change).fit(x)


def test_runtime_parameters_do_not_invalidate_a_checkpoint(x, tmp_path, monkeypatch):
    ckpt = tmp_path / "run.ckpt"
    first = DLME(**DLME_FAST, checkpoint=ckpt).fit(x)
    spy = TrainSpy(monkeypatch, plan_module)
    again = DLME(**{**DLME_FAST, "progress": None, "checkpoint_every": 3}, checkpoint=str(ckpt)).fit(x)
    assert spy.steps == 0
    np.testing.assert_array_equal(again.embedding_, first.embedding_)


def _payload_file(path, marker):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state": Payload()}, path)


@pytest.mark.parametrize("what", ["model file", "random bytes", "empty", "text", "pickle payload"])
@pytest.mark.parametrize("klass", ["dlme", "tsimcne", "n2d"])
def test_a_checkpoint_that_is_not_a_checkpoint_is_refused(what, klass, x, images, tmp_path, monkeypatch):
    path = tmp_path / "not_a_checkpoint.ckpt"
    marker = tmp_path / "payload_ran"
    if what == "model file":
        DLME(**DLME_FAST).fit(x).save(path)
    elif what == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif what == "empty":
        path.write_bytes(b"")
    elif what == "text":
        path.write_text("step,loss\n1,0.5\n")
    else:
        _payload_file(path, marker)
    before = path.read_bytes()
    make = {
        "dlme": lambda: DLME(**DLME_FAST, checkpoint=path),
        "tsimcne": lambda: TSimCNE(**TS_IMG, checkpoint=path),
        "n2d": lambda: N2D(**N2D_FAST, checkpoint=path),
    }[klass]
    data = images[:128] if klass == "tsimcne" else x
    spy = TrainSpy(monkeypatch, plan_module)
    with pytest.raises(ValueError, match=re.escape(path.name)):
        make().fit(data)
    assert spy.steps == 0  # refused before training
    assert not marker.exists()  # nothing in the file ran
    assert path.read_bytes() == before  # and the file is not overwritten


def test_a_checkpoint_in_a_new_directory_is_created(x, tmp_path):
    ckpt = tmp_path / "runs" / "a" / "run.ckpt"
    DLME(**DLME_FAST, checkpoint=ckpt).fit(x)
    assert ckpt.exists()


# ---- validation and early stopping ------------------------------------------------------------
def _check_kept_best(history, snaps, final_states):
    """The kept weights are those of the check with the best loss (up to the 1e-3 margin)."""
    val, at = list(history["val_loss"]), list(history["val_step"])
    assert len(val) == len(at) == len(snaps) >= 1
    assert at == sorted(at) and len(set(at)) == len(at)
    best = at.index(history["best_step"])
    assert val[best] <= min(val) + 1e-3 * abs(val[best]) + 1e-12
    for got, want in zip(final_states, snaps[best], strict=True):
        for k in want:
            if "running" in k or "num_batches" in k:
                continue
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)


def test_dlme_early_stopping_holds_out_cells_and_keeps_the_best_weights(x, monkeypatch):
    spy = TrainSpy(monkeypatch, plan_module)
    model = DLME(**{**DLME_FAST, "n_steps": 60}, early_stopping=True, patience=3).fit(x)
    h = model.history_
    assert h["n_validation"] == 24  # 10% of 240 cells
    assert "val_loss" in h and h["n_steps"] <= 60
    assert h["val_step"][0] == 216 // 64  # once per epoch of the 216 training cells
    states = [model.encoder_.state_dict(), model.projector_.state_dict()]
    _check_kept_best(h, spy.checks[0], states)
    # the map is the one of the kept weights
    np.testing.assert_array_equal(model.transform(x), model.embedding_)


def test_dlme_stops_on_a_plateau(x, monkeypatch):
    """lr = 1e-9: the weights do not move, the held-out loss plateaus (up to BatchNorm statistics
    settling), so training stops ``patience`` checks after the best one, long before the budget."""
    spy = TrainSpy(monkeypatch, plan_module)
    model = DLME(**{**DLME_FAST, "n_steps": 600}, lr=1e-9, early_stopping=True, patience=2).fit(x)
    h = model.history_
    assert h["stopped_early"] and h["n_steps"] < 600
    assert h["n_steps"] == h["val_step"][-1]
    assert h["best_step"] == h["val_step"][-1 - 2]
    _check_kept_best(h, spy.checks[0], [model.encoder_.state_dict(), model.projector_.state_dict()])


def test_dlme_without_early_stopping_has_no_validation(x):
    h = DLME(**DLME_FAST).fit(x).history_
    assert h["n_validation"] == 0 and "val_loss" not in h and h["n_steps"] == 24


def test_too_few_cells_for_a_validation_split_train_the_whole_budget(x):
    h = DLME(**DLME_FAST, early_stopping=True).fit(x[:100]).history_  # 10 cells < 20
    assert h["n_validation"] == 0 and "val_loss" not in h and h["n_steps"] == 24


def test_tsimcne_early_stopping_per_stage(images, monkeypatch):
    spy = TrainSpy(monkeypatch, plan_module)
    model = TSimCNE(**{**TS_IMG, "n_epochs": (4, 2, 3)}, early_stopping=True, validation_fraction=0.25).fit(
        images[:128]
    )
    h = model.history_
    assert h["n_validation"] == 32
    for stage in ("pretrain", "linear", "finetune"):
        assert len(h[stage]["val_loss"]) >= 1
    _check_kept_best(h["finetune"], spy.checks[2], [model.net_.state_dict()])


def test_tsimcne_stops_on_a_plateau(images):
    model = TSimCNE(
        **{**TS_IMG, "n_epochs": (60, 2, 2)},
        lr=1e-9,
        early_stopping=True,
        validation_fraction=0.25,
        patience=2,
    ).fit(images[:128])
    h = model.history_["pretrain"]
    assert h["stopped_early"] and h["n_steps"] < 60 * 3
    assert h["best_step"] == h["val_step"][-1 - 2]


# ---- split_validation -------------------------------------------------------------------------
def test_split_validation_is_a_seeded_partition():
    tr, va = split_validation(240, 0.1, seed=3)
    assert len(va) == 24 and len(tr) == 216
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(240))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    va2 = split_validation(240, 0.1, seed=3)[1]
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, split_validation(240, 0.1, seed=4)[1])
    # too few held-out rows (or too few left): no split
    assert len(split_validation(100, 0.1, seed=0)[1]) == 0
    assert len(split_validation(100, 0.0, seed=0)[1]) == 0
    assert len(split_validation(30, 0.9, seed=0)[1]) == 0


# ---- progress ---------------------------------------------------------------------------------
def _lines(text: str, prefix: str) -> list[str]:
    """The progress lines of ``prefix`` ("<desc>: step i/n ...")."""
    return [ln for ln in text.splitlines() if ln.startswith(prefix) and re.search(r"step \d+/\d+", ln)]


@pytest.mark.parametrize(("n_steps", "n_epochs"), [(15, 5), (57, 19), (90, 30), (300, 100)])
def test_progress_off_a_terminal_prints_plain_lines_at_most_one_per_epoch(n_steps, n_epochs, x, capsys):
    """240 cells in batches of 80: 3 steps per epoch."""
    DLME(**{**DLME_FAST, "n_steps": n_steps, "batch_size": 80, "progress": True}).fit(x)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = _lines(err, "DLME")
    assert 1 <= len(lines) <= min(n_epochs, 11)
    assert f"{n_steps}/{n_steps}" in lines[-1]  # the last line reports the end


def test_tsimcne_progress_has_at_most_about_ten_lines_per_stage(images, capsys):
    TSimCNE(**{**TS_IMG, "n_epochs": (30, 4, 12), "progress": True}).fit(images[:64])
    err = capsys.readouterr().err
    assert "\r" not in err
    for stage, epochs in zip(("1/3", "2/3", "3/3"), (30, 4, 12), strict=True):
        assert 1 <= len(_lines(err, f"t-SimCNE {stage}")) <= min(epochs, 11)


def test_n2d_progress_lines(x, capsys):
    N2D(**{**N2D_FAST, "n_steps": 60, "progress": True}).fit(x)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert 1 <= len(_lines(err, "N2D")) <= 11


@pytest.fixture
def verbosity():
    """Set scanpy's verbosity for one test and restore it afterwards."""
    old = sc.settings.verbosity
    yield lambda level: setattr(sc.settings, "verbosity", level)
    sc.settings.verbosity = old


def test_progress_none_follows_scanpy_verbosity(x, capsys, verbosity):
    fast = {**DLME_FAST, "progress": None}
    verbosity(0)
    DLME(**fast).fit(x)
    assert capsys.readouterr().err == ""
    assert int(sc.settings.verbosity) == 0  # fitting does not change it
    verbosity(1)
    DLME(**fast).fit(x)
    assert len(_lines(capsys.readouterr().err, "DLME")) >= 1
    # an explicit False is obeyed at any verbosity
    verbosity(4)
    DLME(**{**fast, "progress": False}).fit(x)
    assert _lines(capsys.readouterr().err, "DLME") == []
    assert progress_enabled(None) is True
    verbosity(0)
    assert progress_enabled(None) is False and progress_enabled(True) is True


def test_default_progress_is_none_for_every_model():
    for klass in (DLME, N2D, TSimCNE):
        assert klass().get_params()["progress"] is None


def test_progress_on_a_terminal_uses_a_bar_and_off_one_plain_lines():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    plain, tty = io.StringIO(), Tty()
    for stream in (plain, tty):
        bar = Progress(100, 10, desc="run", enabled=True, stream=stream)
        for epoch in range(1, 11):
            bar.update(10)
            bar.epoch_end(epoch, 1.0 / epoch)
        bar.close()
    assert "\r" not in plain.getvalue() and len(plain.getvalue().splitlines()) == 10
    assert "\r" in tty.getvalue()  # tqdm redraws its line on a terminal
    silent = io.StringIO()
    bar = Progress(100, 10, desc="run", enabled=False, stream=silent)
    bar.update(100)
    bar.epoch_end(10, 0.1)
    bar.close()
    assert silent.getvalue() == ""


def test_progress_of_a_resumed_run_counts_from_the_checkpoint(x, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "run.ckpt"
    with monkeypatch.context() as m:
        TrainSpy(m, plan_module, limit=13)
        with pytest.raises(Interrupted):
            DLME(**DLME_FAST, checkpoint=ckpt, checkpoint_every=1).fit(x)
    capsys.readouterr()
    DLME(**{**DLME_FAST, "progress": True}, checkpoint=ckpt, checkpoint_every=1).fit(x)
    lines = _lines(capsys.readouterr().err, "DLME")
    steps = [int(re.search(r"step (\d+)/24", ln).group(1)) for ln in lines]
    assert steps and min(steps) > 12 and steps[-1] == 24


def test_trainer_progress_false_prints_nothing(capsys):
    p = torch.nn.Parameter(torch.ones(1))
    train(
        lambda idx: (p * p).sum(),
        modules=[],
        optimizer=torch.optim.SGD([p], lr=0.1),
        n=20,
        batch_size=5,
        n_steps=20,
        device=torch.device("cpu"),
        generator=make_generator(0, torch.device("cpu")),
        progress=False,
    )
    assert capsys.readouterr().err == ""
