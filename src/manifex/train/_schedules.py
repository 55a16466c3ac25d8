"""The learning-rate schedules of the models, built from :mod:`torch.optim.lr_scheduler`.

Each is stepped once after every optimiser step (:func:`manifex.train._loop.train`), so its
``last_epoch`` counts optimiser steps. Writing ``lr_0`` for a parameter group's initial learning
rate, the learning rate of step ``s`` (0-based) of a budget of ``n`` steps is

- :func:`cosine_schedule` with ``w`` warm-up steps: ``lr_0 · (s + 1) / w`` for ``s < w``, then
  ``lr_0 · (1 + cos(π (s - w) / max(1, n - w))) / 2``;
- :func:`step_schedule`: ``lr_0 · factor ** (s // max(1, n // n_drops))``.

torch computes these recursively (each step's rate from the last one), so they agree with the
formulas to about 1e-12 relative and to every bit once rounded to float32 (tests/test_core.py).
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR, StepLR

__all__ = ["cosine_schedule", "step_schedule"]


def cosine_schedule(optimizer: Optimizer, n_steps: int, warmup_steps: int = 0) -> LRScheduler:
    """Linear warm-up over ``warmup_steps`` steps, then cosine decay toward zero at ``n_steps``.

    Parameters
    ----------
    optimizer
        The optimiser whose learning rates follow the schedule (its current rates are ``lr_0``).
    n_steps
        The budget: steps of warm-up and decay together.
    warmup_steps
        Steps of linear warm-up, from ``lr_0 / warmup_steps`` at the first step to ``lr_0`` at
        step ``warmup_steps - 1`` (and again at step ``warmup_steps``, where the decay starts).
    """
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, n_steps - warmup_steps))
    if warmup_steps <= 0:
        return cosine
    warmup = LinearLR(
        optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=max(1, warmup_steps - 1)
    )
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def step_schedule(optimizer: Optimizer, n_steps: int, n_drops: int = 10, factor: float = 0.5) -> LRScheduler:
    """The learning rate multiplied by ``factor`` ``n_drops`` times, evenly over ``n_steps`` steps.

    Parameters
    ----------
    optimizer
        The optimiser whose learning rates follow the schedule.
    n_steps
        The budget.
    n_drops, factor
        Number of drops and the factor of each.
    """
    return StepLR(optimizer, step_size=max(1, n_steps // n_drops), gamma=factor)
