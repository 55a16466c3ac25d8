"""What a model trains, and the one place that runs it.

A model declares its training as :class:`Stage` s -- the networks a stage trains, the loss of a
minibatch, the loss on held-out rows, the optimiser and its schedule, the step budget --
and a :class:`TrainingPlan` runs them (in the spirit of scvi-tools' ``TrainingPlan`` and
TorchDR's ``DRModule`` hooks). The plan owns, once for every model:

- the seeded split into training and held-out rows (:func:`split_validation`) and the minibatch
  size and epoch length that follow from it;
- the random generator of the minibatch order, the one of each process's augmentations and
  the one of the held-out loss (:func:`held_out_loss`);
- early stopping on the held-out loss, once per epoch (:class:`~manifex.train._loop.EarlyStopping`);
- the checkpoint file: a stage it holds finished is not trained again, an unfinished one
  resumes (:class:`~manifex.train._checkpoint.CheckpointFile`);
- the history and the time of each stage, and timings of the model's other steps
  (:meth:`TrainingPlan.timed`).

Each stage runs through :func:`manifex.train._loop.train`. Device and seed are resolved, and the
networks built under the seed, by :meth:`manifex.models.BaseModel.fit` before the plan is made.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .._utils import make_generator
from ._checkpoint import CheckpointFile
from ._distributed import world
from ._loop import EarlyStopping, train

__all__ = ["Stage", "TrainingPlan", "held_out_loss", "split_validation"]


@dataclass
class Stage:
    """One stage of gradient training, as a model declares it.

    Parameters
    ----------
    name
        The stage's name (its phase in the checkpoint file and its key in a history of stages).
    modules
        The networks it trains (training mode during the stage, saved in checkpoints, restored
        to the best held-out check with early stopping).
    loss
        Loss of a minibatch, given the minibatch's rows of the training data (indices into the
        data the model was fitted on).
    optimizer
        Builds the stage's optimiser and its learning-rate schedule (a
        :mod:`torch.optim.lr_scheduler` scheduler, or ``None``), when the stage starts training.
    n_steps
        Optimiser steps (an upper bound with early stopping).
    desc
        Label of the progress report and of log messages.
    validation_loss
        Loss on the held-out rows (given as a tensor); ``None``: no early stopping in this stage.
    start
        Called when the stage's turn comes, also when the checkpoint holds it finished (for
        changes of the networks that later stages build on).
    before_step
        Called with the step's index before each step (loss weights that follow the budget).
    grad_clip_value
        Clip gradients by value.
    record
        Turns the finished history into the stage's record (e.g. with throughput added).
    timing
        Key of the stage's seconds in :attr:`TrainingPlan.timings` (``None``: not recorded).
    """

    name: str
    modules: Sequence[torch.nn.Module]
    loss: Callable[[torch.Tensor], torch.Tensor]
    optimizer: Callable[[], tuple[Optimizer, LRScheduler | None]]
    n_steps: int
    desc: str = "training"
    validation_loss: Callable[[torch.Tensor], float] | None = None
    start: Callable[[], None] | None = None
    before_step: Callable[[int], None] | None = None
    grad_clip_value: float | None = None
    record: Callable[[dict], dict] | None = None
    timing: str | None = None


class TrainingPlan:
    """The training of one fit: the held-out split, generators, checkpoint, stages run, histories.

    Parameters
    ----------
    n
        Rows of the training data.
    device, seed
        The fit's device and seed.
    batch_size
        The minibatch size asked for (at most the number of training rows is used).
    validation_fraction
        Share of rows held out for early stopping (0: none); none are held out when that would
        be fewer than 20 rows or leave fewer than ``min_train``.
    min_train
        Fewest training rows a split may leave.
    patience
        Held-out checks without improvement before a stage stops.
    checkpoint
        The fit's checkpoint file (already read), or ``None``.
    amp, progress
        As for :func:`~manifex.train._loop.train`.
    """

    def __init__(
        self,
        n: int,
        *,
        device: torch.device,
        seed: int,
        batch_size: int,
        validation_fraction: float = 0.0,
        min_train: int = 20,
        patience: int = 5,
        checkpoint: CheckpointFile | None = None,
        amp: bool = False,
        progress: bool | None = None,
    ):
        self.device, self.seed, self.patience = device, int(seed), int(patience)
        self.checkpoint, self.amp, self.progress = checkpoint, bool(amp), progress
        train_rows, val_rows = split_validation(n, validation_fraction, seed, min_train=min_train)
        self.n_train, self.n_validation = len(train_rows), len(val_rows)
        self.rows = torch.as_tensor(train_rows, device=device)
        self.held_out = torch.as_tensor(val_rows, device=device)
        self.batch_size = min(int(batch_size), self.n_train)
        #: optimiser steps in one pass over the training rows (the last partial batch is dropped)
        self.steps_per_epoch = max(1, self.n_train // self.batch_size)
        #: the minibatch order (and the augmentations of a single process)
        self.generator = make_generator(self.seed, device)
        w = world()  # several processes: each rank augments with its own seed
        self.augment_generator = (
            make_generator(self.seed + w.rank, device) if w.distributed else self.generator
        )
        #: the held-out loss's augmentations, reseeded at every check
        self.validation_generator = make_generator(self.seed + 1, device)
        self.histories: dict[str, dict] = {}
        self.timings: dict[str, float] = {}

    def held_out_loss(self, loss_fn: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor) -> float:
        """:func:`held_out_loss`: the mean of ``loss_fn`` over the full minibatches of ``rows``
        (the held-out rows), with :attr:`validation_generator` reseeded first."""
        return held_out_loss(loss_fn, rows, self.batch_size, self.validation_generator, self.seed + 1)

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Record the seconds the block takes in :attr:`timings`."""
        t0 = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - t0

    def run(self, stage: Stage) -> dict:
        """Train ``stage`` (or take its record from the checkpoint); return its history."""
        if stage.start is not None:
            stage.start()
        ckpt = self.checkpoint
        if ckpt is not None and ckpt.position(stage.name) == "before":
            history = ckpt.histories[stage.name]  # finished in an earlier run
        else:
            restored = ckpt.state_for(stage.name) if ckpt is not None else None
            optimizer, scheduler = stage.optimizer()
            stopper = None
            if self.n_validation and stage.validation_loss is not None:
                validate = stage.validation_loss
                stopper = EarlyStopping(
                    lambda: validate(self.held_out), every=self.steps_per_epoch, patience=self.patience
                )
            rows, loss = self.rows, stage.loss
            history = train(
                lambda i: loss(rows[i]),
                modules=stage.modules,
                optimizer=optimizer,
                lr_scheduler=scheduler,
                n=self.n_train,
                batch_size=self.batch_size,
                n_steps=stage.n_steps,
                device=self.device,
                generator=self.generator,
                grad_clip_value=stage.grad_clip_value,
                amp=self.amp,
                progress=self.progress,
                desc=stage.desc,
                early_stopping=stopper,
                checkpoint=ckpt,
                phase=stage.name,
                record=stage.record,
                before_step=stage.before_step,
                rank_generator=self.augment_generator,
            ).as_dict()
            if restored is not None and restored["done"] and stage.name in ckpt.histories:
                history = ckpt.histories[stage.name]  # finished before: its record as written
            elif stage.record is not None:
                history = stage.record(history)
        self.histories[stage.name] = history
        if stage.timing is not None:
            self.timings[stage.timing] = float(history["seconds"])
        return history

    def history(self, **extra) -> dict:
        """The history of the stages run: the one stage's, or each stage's under its name with
        the losses of all of them in order, their steps and seconds; then ``extra`` and
        ``n_validation``."""
        hs = self.histories
        if len(hs) == 1:
            out = dict(next(iter(hs.values())))
        else:
            out = {
                **hs,
                "loss": np.concatenate([np.asarray(h["loss"], dtype=np.float64) for h in hs.values()]),
                "n_steps": int(sum(h["n_steps"] for h in hs.values())),
                "seconds": float(sum(h["seconds"] for h in hs.values())),
            }
        return {**out, **extra, "n_validation": self.n_validation}


def split_validation(
    n: int, fraction: float, seed: int, *, min_validation: int = 20, min_train: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` rows into sorted training and validation rows.

    ``round(fraction * n)`` rows are held out; none when that is below ``min_validation`` or
    would leave fewer than ``min_train`` training rows (the caller logs that early stopping is
    off).
    """
    n_val = round(float(fraction) * n)
    if n_val < min_validation or n - n_val < min_train:
        n_val = 0
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def held_out_loss(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    seed: int,
) -> float:
    """Mean of ``loss_fn(idx)`` over the full minibatches of held-out ``rows``.

    ``generator`` (the one the loss's augmentations draw from) is reseeded with ``seed`` first,
    so every check sees the same augmented views and the losses are comparable.
    """
    generator.manual_seed(seed)
    b = min(batch_size, len(rows))
    return float(np.mean([float(loss_fn(rows[s : s + b])) for s in range(0, len(rows) - b + 1, b)]))
