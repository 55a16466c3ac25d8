"""The one training loop every manifex model uses.

A training step is a function of the minibatch indices (``step_fn(idx) -> loss``); :func:`train`
owns everything around it: shuffling on the device, the optimiser step, the learning-rate
schedule (a :mod:`torch.optim.lr_scheduler` scheduler, stepped after every optimiser step),
gradient clipping, mixed precision on CUDA, the progress report (:mod:`manifex.train._progress`),
loss history, validation / early stopping and checkpoints that resume a run
(:mod:`manifex.train._checkpoint`). The models do not call it directly: a model declares its
stages and :class:`manifex.train._plan.TrainingPlan` runs each through :func:`train`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scanpy import logging as logg

from ._checkpoint import CheckpointFile, restore
from ._distributed import data_parallel, rank_states, restore_rank_state, shard, sync_buffers, world
from ._malloc import tune_malloc
from ._progress import Progress, progress_enabled

__all__ = ["EarlyStopping", "TrainHistory", "train"]


@dataclass
class TrainHistory:
    """Loss per epoch (mean over its steps) plus bookkeeping."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    n_steps: int = 0
    seconds: float = 0.0
    #: validation loss and the step it was measured at (only with early stopping)
    val_loss: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    #: step whose weights were kept (the best validation loss), and whether training stopped early
    best_step: int | None = None
    stopped_early: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> TrainHistory:
        """Rebuild a history from :meth:`as_dict` output (a resumed run)."""
        return cls(
            loss=[float(v) for v in np.asarray(d.get("loss", []), dtype=np.float64)],
            lr=[float(v) for v in np.asarray(d.get("lr", []), dtype=np.float64)],
            n_steps=int(d.get("n_steps", 0)),
            seconds=float(d.get("seconds", 0.0)),
            val_loss=[float(v) for v in np.asarray(d.get("val_loss", []), dtype=np.float64)],
            val_step=[int(v) for v in np.asarray(d.get("val_step", []), dtype=np.int64)],
            best_step=None if d.get("best_step") is None else int(d["best_step"]),
            stopped_early=bool(d.get("stopped_early", False)),
        )

    def as_dict(self) -> dict:
        out = {
            "loss": np.asarray(self.loss, dtype=np.float64),
            "lr": np.asarray(self.lr, dtype=np.float64),
            "n_steps": int(self.n_steps),
            "seconds": float(self.seconds),
        }
        if self.val_loss:
            out.update(
                val_loss=np.asarray(self.val_loss, dtype=np.float64),
                val_step=np.asarray(self.val_step, dtype=np.int64),
                best_step=int(self.best_step) if self.best_step is not None else None,
                stopped_early=bool(self.stopped_early),
            )
        return out


@dataclass
class EarlyStopping:
    """Stop when a validation loss has not improved for ``patience`` checks; keep the best weights.

    ``validate()`` returns the loss on held-out data (it runs under ``torch.no_grad`` with the
    modules in evaluation mode); it is called every ``every`` optimiser steps. An improvement
    must beat the best loss so far by the relative margin ``min_delta``.
    """

    validate: Callable[[], float]
    every: int
    patience: int = 5
    min_delta: float = 1e-3


def _check_finite(losses: torch.Tensor, first_step: int, desc: str) -> None:
    """Raise if any of ``losses`` (of steps ``first_step``, ``first_step + 1``, ...) is not finite."""
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise FloatingPointError(
            f"{desc}: the loss became {losses[i].item()} at step {first_step + i}; try a lower "
            "learning rate, or check the input for extreme values."
        )


def _amp_context(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype), dtype
    return torch.autocast(device_type="cpu", enabled=False), None


def train(
    step_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    modules: Sequence[torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    n: int,
    batch_size: int,
    n_steps: int,
    device: torch.device,
    generator: torch.Generator,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip_value: float | None = None,
    grad_clip_norm: float | None = None,
    amp: bool = False,
    progress: bool | None = True,
    desc: str = "training",
    early_stopping: EarlyStopping | None = None,
    checkpoint: CheckpointFile | None = None,
    phase: str = "train",
    record: Callable[[dict], dict] | None = None,
    before_step: Callable[[int], None] | None = None,
    rank_generator: torch.Generator | None = None,
) -> TrainHistory:
    """Run ``n_steps`` optimiser steps of ``step_fn`` over shuffled minibatches.

    Parameters
    ----------
    step_fn
        Receives a 1-d tensor of row indices in ``0..n-1`` (on ``device``) and returns the
        scalar loss. It runs inside an autocast context on CUDA when ``amp`` is true; losses
        should upcast to float32.
    modules
        Modules put into training mode before the loop and evaluation mode after it (and saved
        in checkpoints).
    optimizer
        A ready optimiser over the trainable parameters.
    n, batch_size
        Data size and minibatch size. Each epoch is a fresh permutation drawn on the device with
        ``generator``; a last batch smaller than ``batch_size`` is dropped when ``n > batch_size``
        (BatchNorm and contrastive losses dislike tiny batches). With several processes
        (:mod:`manifex.train._distributed`) ``batch_size`` is the global batch: every rank draws the
        same permutation and ``step_fn`` receives this rank's shard of each minibatch; the
        gradients are averaged over the ranks (``step_fn`` runs as the forward pass of
        :class:`~torch.nn.parallel.DistributedDataParallel` around ``modules``).
    n_steps
        Total optimiser steps (the budget), independent of the number of epochs.
    lr_scheduler
        A scheduler of ``optimizer`` (:mod:`torch.optim.lr_scheduler`), stepped once after every
        optimiser step; it is saved in checkpoints. The history records the learning rate of the
        last step of each epoch.
    grad_clip_value, grad_clip_norm
        Clip gradients by value / by global norm before each step.
    amp
        Mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling).
        Ignored on CPU and MPS. Off by default, as in the models.
    progress
        ``True`` / ``False``, or ``None`` to follow ``scanpy.settings.verbosity``
        (:func:`manifex.train._progress.progress_enabled`). A bar on a terminal, else at most one line
        per epoch.
    desc
        Label in the progress report, log messages and errors.
    early_stopping
        Check a validation loss every ``early_stopping.every`` steps, stop after
        ``early_stopping.patience`` checks without improvement and restore the modules' weights
        from the best check (``n_steps`` is then an upper bound).
    checkpoint, phase
        Save the run every ``checkpoint.every_epochs`` epochs and at its end, and resume from
        the file when it holds this ``phase`` (a finished phase is not trained again).
    before_step
        Called with the index of each step (0-based, counted over the whole budget, also after
        resuming from a checkpoint) before ``step_fn``; for loss weights that follow a
        schedule.
    record
        Turns the finished history (:meth:`TrainHistory.as_dict`) into the record the
        checkpoint keeps for this phase (e.g. with throughput figures added).
    rank_generator
        With several processes, the generator ``step_fn`` draws from that is seeded by rank
        (augmentations); checkpoints keep its state on every rank. Ignored when it is
        ``generator`` or with one process.
    """

    w = world()
    if rank_generator is generator:
        rank_generator = None
    if device.type == "cpu":
        tune_malloc()  # keep the step's buffers out of mmap / trim churn (measured in _malloc)
    if w.distributed and batch_size % w.size:
        raise ValueError(
            f"`batch_size`={batch_size} is the global minibatch; with {w.size} processes it must be "
            f"divisible by {w.size}."
        )
    if w.distributed and not w.is_main:
        progress = False
    history = TrainHistory()
    ctx_dtype = _amp_context(device, amp)[1]
    scaler = torch.amp.GradScaler("cuda") if ctx_dtype == torch.float16 else None
    drop_last = n > batch_size
    per_epoch = max(1, n // batch_size) if drop_last else 1
    params = [p for g in optimizer.param_groups for p in g["params"]]
    step = 0
    best: tuple[float, int, list[dict]] | None = None
    bad_checks = 0

    saved = checkpoint.state_for(phase) if checkpoint is not None else None
    if saved is not None:
        sched_state = saved.get("extra", {}).get("lr_scheduler")
        if lr_scheduler is not None and not saved["done"] and sched_state is None:
            _replay(lr_scheduler, int(saved["step"]))  # a checkpoint written without the schedule
        restore(saved, modules=modules, optimizer=None if saved["done"] else optimizer, generator=generator)
        if lr_scheduler is not None and not saved["done"] and sched_state is not None:
            lr_scheduler.load_state_dict(sched_state)
        history = TrainHistory.from_dict(saved["history"])
        step = int(saved["step"])
        es = saved.get("extra", {}).get("early_stopping")
        if es:
            snaps = [{k: torch.as_tensor(v).to(device) for k, v in sd.items()} for sd in es["best_modules"]]
            best, bad_checks = (float(es["best_loss"]), int(es["best_step"]), snaps), int(es["bad_checks"])
        if saved["done"]:
            restore_rank_state(saved.get("extra", {}).get("ranks"), modules, rank_generator, w)
            for m in modules:
                m.eval()
            return history

    def extra_state() -> dict:
        """The schedule's state and the early stopping's best weights so far."""
        out = {"lr_scheduler": lr_scheduler.state_dict()} if lr_scheduler is not None else {}
        if best is None:
            return out
        return {
            **out,
            "early_stopping": {
                "best_loss": best[0],
                "best_step": best[1],
                "bad_checks": bad_checks,
                "best_modules": [{k: v.cpu() for k, v in sd.items()} for sd in best[2]],
            },
        }

    def check() -> bool:
        """Validate; return True when training should stop."""
        nonlocal best, bad_checks
        for m in modules:
            m.eval()
        with torch.no_grad():
            v = float(early_stopping.validate())
        if w.distributed:  # BatchNorm statistics differ by rank: every rank decides on the mean
            t = torch.tensor([v], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            v = float(t.item()) / w.size
        for m in modules:
            m.train()
        history.val_loss.append(v)
        history.val_step.append(step)
        if best is None or v < best[0] - early_stopping.min_delta * abs(best[0]):
            snap = [{k: t.detach().clone() for k, t in m.state_dict().items()} for m in modules]
            best, bad_checks = (v, step, snap), 0
            return False
        bad_checks += 1
        return bad_checks >= early_stopping.patience

    def write_checkpoint(done: bool, history_dict: dict, extra: dict | None) -> None:
        """Write the checkpoint at the current step (rank 0 calls it); a finished stage keeps no
        optimiser state."""
        checkpoint.write(
            phase=phase,
            step=step,
            done=done,
            modules=modules,
            optimizer=None if done else optimizer,
            generator=generator,
            history=history_dict,
            extra=extra,
        )

    forward = data_parallel(step_fn, modules, w)  # step_fn itself with one process
    if saved is not None:  # after DDP has broadcast rank 0's state: each rank's own part
        restore_rank_state(saved.get("extra", {}).get("ranks"), modules, rank_generator, w)
    for m in modules:
        m.train()
    t0 = time.perf_counter()
    seconds0 = history.seconds
    bar = Progress(n_steps, per_epoch, desc=desc, enabled=progress_enabled(progress), initial=step)
    epoch_losses: list[torch.Tensor] = []
    # Reading the loss on the host waits for the device: on CUDA that check runs once per epoch
    # (where the epoch's mean loss is read anyway), so the host can queue steps ahead of the GPU.
    check_each_step = device.type != "cuda"
    stop = False
    step_lr = float("nan")
    try:
        while step < n_steps and not stop:
            perm = torch.randperm(n, device=generator.device, generator=generator).to(device)
            for b in range(per_epoch):
                if step >= n_steps:
                    break
                idx = shard(perm[b * batch_size : (b + 1) * batch_size], w)
                if before_step is not None:
                    before_step(step)
                optimizer.zero_grad(set_to_none=True)
                ctx, _ = _amp_context(device, amp)
                with ctx:
                    loss = forward(idx)
                if check_each_step:
                    _check_finite(loss.detach().view(1), step, desc)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if grad_clip_value is not None:
                    torch.nn.utils.clip_grad_value_(params, grad_clip_value)
                if grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                step_lr = float(optimizer.param_groups[0]["lr"])  # the learning rate of this step
                if lr_scheduler is not None:
                    lr_scheduler.step()
                epoch_losses.append(loss.detach())
                step += 1
                bar.update(1)
                if early_stopping is not None and (step % early_stopping.every == 0 or step == n_steps):
                    stop = check()
                    if stop:
                        break
            # one host sync per epoch, not per step
            if epoch_losses:
                losses = torch.stack(epoch_losses).float()
                if not check_each_step:
                    _check_finite(losses, step - len(epoch_losses), desc)
                mean = losses.mean()
                if w.distributed:  # per-row losses (N2D) differ by rank; gathered ones do not
                    torch.distributed.all_reduce(mean)
                    mean = mean / w.size
                mean_loss = mean.item()
                history.loss.append(mean_loss)
                history.lr.append(step_lr)
                bar.epoch_end(len(history.loss), mean_loss)
                epoch_losses = []
            due = (
                checkpoint is not None
                and not stop
                and step < n_steps
                and len(history.loss) % max(1, checkpoint.every_epochs) == 0
            )
            ranks = rank_states(modules, rank_generator, w) if due else None  # on every rank
            if due and w.is_main:
                history.n_steps = step
                history.seconds = seconds0 + time.perf_counter() - t0
                write_checkpoint(
                    False, history.as_dict(), {**extra_state(), **({"ranks": ranks} if ranks else {})}
                )
    finally:
        bar.close()
        for m in modules:
            m.eval()
    if best is not None:
        for m, state in zip(modules, best[2], strict=True):
            m.load_state_dict(state)
        history.best_step, history.stopped_early = best[1], stop
        if stop:
            logg.info(f"    {desc}: stopped early at step {step}; kept the weights of step {best[1]}")
    sync_buffers(list(modules), w)
    history.n_steps = step
    history.seconds = seconds0 + time.perf_counter() - t0
    ranks = rank_states(modules, rank_generator, w) if checkpoint is not None else None
    if checkpoint is not None and w.is_main:
        final = record(history.as_dict()) if record is not None else history.as_dict()
        write_checkpoint(True, final, {"ranks": ranks} if ranks else None)
    logg.debug(f"{desc}: {step} steps in {history.seconds:.1f}s on {device}")
    return history


def _replay(lr_scheduler: torch.optim.lr_scheduler.LRScheduler, n_steps: int) -> None:
    """Step a fresh scheduler ``n_steps`` times (its optimiser's learning rates follow)."""
    with warnings.catch_warnings():  # stepped without optimiser steps, on purpose
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(n_steps):
            lr_scheduler.step()
