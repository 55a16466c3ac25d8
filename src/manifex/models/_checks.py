"""Validation of estimator parameters, shared by every model (run before any work in ``fit``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .._utils import check_random_state

__all__ = ["as_tuple", "check_common", "check_dims", "check_fraction", "check_int", "check_positive"]


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | np.integer)


def check_int(model: Any, name: str, minimum: int, *, allow_none: bool = False) -> None:
    """``getattr(model, name)`` must be an integer ≥ ``minimum`` (floats such as 2.5 or 3.0 too are
    refused: a step or epoch count is a whole number)."""
    v = getattr(model, name)
    if v is None and allow_none:
        return
    if not _is_int(v) or v < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}{extra}, got {v!r}.")


def check_positive(model: Any, name: str, *, allow_zero: bool = False, allow_none: bool = False) -> None:
    """A finite real number > 0 (≥ 0 with ``allow_zero``)."""
    v = getattr(model, name)
    if v is None and allow_none:
        return
    ok = (
        not isinstance(v, bool)
        and isinstance(v, int | float | np.integer | np.floating)
        and np.isfinite(v)
        and (v >= 0 if allow_zero else v > 0)
    )
    if not ok:
        what = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be a finite {what} number, got {v!r}.")


def check_fraction(model: Any, name: str) -> None:
    """A number in [0, 1)."""
    v = getattr(model, name)
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) or not 0 <= v < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1), got {v!r}.")


def check_dims(model: Any, name: str, *, allow_empty: bool = False) -> None:
    """A sequence of positive integer layer widths (a tuple, list or 1-d array)."""
    v = getattr(model, name)
    dims = as_tuple(v)
    if dims is None or (not dims and not allow_empty) or not all(_is_int(d) and d > 0 for d in dims):
        raise ValueError(f"`{name}` must be a non-empty sequence of positive integers, got {v!r}.")


def as_tuple(v: Any) -> tuple | None:
    """``tuple(v)`` for a sequence parameter (tuple, list, array, ...); ``None`` for a string or a
    value that is not iterable (refused by the caller's check)."""
    if isinstance(v, str | bytes):
        return None
    try:
        return tuple(v)
    except TypeError:
        return None


def check_common(model: Any) -> None:
    """The parameters every model shares: device, amp, random_state, progress, checkpoint,
    early stopping."""
    if not isinstance(model.device, str | torch.device):
        raise TypeError(f"`device` must be a string or torch.device, got {type(model.device).__name__}.")
    if not isinstance(model.amp, bool | np.bool_):
        raise TypeError(f"`amp` must be True or False, got {model.amp!r}.")
    if model.progress is not None and not isinstance(model.progress, bool | np.bool_):
        raise TypeError(f"`progress` must be True, False or None, got {model.progress!r}.")
    if not isinstance(getattr(model, "early_stopping", False), bool | np.bool_):
        raise TypeError(f"`early_stopping` must be True or False, got {model.early_stopping!r}.")
    ckpt = getattr(model, "checkpoint", None)
    if ckpt is not None:
        if not isinstance(ckpt, str | os.PathLike):
            raise TypeError(f"`checkpoint` must be a file path or None, got {type(ckpt).__name__}.")
        if os.path.isdir(ckpt):
            raise ValueError(f"`checkpoint` must be a file path, got the directory {ckpt!r}.")
    check_random_state(model.random_state)


def check_stage_epochs(model: Any) -> None:
    """t-SimCNE's ``n_epochs``: ``None`` or three integers ≥ 0 that train stage 1 and the 2-d output."""
    if model.n_epochs is None:
        return
    epochs = as_tuple(model.n_epochs)
    ok = (
        epochs is not None
        and len(epochs) == 3
        and all(not isinstance(e, bool) and isinstance(e, int | np.integer) and e >= 0 for e in epochs)
    )
    if not ok:
        raise ValueError(
            f"`n_epochs` must be three integers ≥ 0 (stage 1, stage 2, stage 3), got {model.n_epochs!r}."
        )
    if epochs[0] < 1 or epochs[1] + epochs[2] < 1:
        raise ValueError(
            "`n_epochs` must train stage 1 (≥ 1 epoch) and the 2-d output (stage 2 + stage 3 ≥ 1 "
            f"epoch); got {model.n_epochs!r}, which would return an untrained map."
        )
