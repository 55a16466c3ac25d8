"""Training: the one loop every manifex model uses, and what it stands on.

- :mod:`manifex.train._plan` -- :class:`TrainingPlan`, which runs the :class:`Stage` s a model
  declares and owns the held-out split, generators, early stopping, checkpoints, histories and
  timings of a fit;
- :mod:`manifex.train._loop` -- :func:`train` (shuffling, optimiser steps, schedules, mixed
  precision, history, validation and early stopping);
- :mod:`manifex.train._schedules` -- the learning-rate schedules (:mod:`torch.optim.lr_scheduler`);
- :mod:`manifex.train._data` -- the rows a model trains on, in memory on the device
  (:class:`DeviceData`) or on disk (:class:`BackedMatrix`, :class:`StreamData`);
- :mod:`manifex.train._checkpoint` -- checkpoints that resume a run (safe files, :mod:`manifex.io`);
- :mod:`manifex.train._distributed` -- several processes under ``torchrun``;
- :mod:`manifex.train._progress` -- the progress report; :mod:`manifex.train._malloc` -- glibc's
  allocator tuned for long runs.
"""

from ._checkpoint import CheckpointFile
from ._data import BackedMatrix, DeviceData, StreamData, is_backed
from ._loop import EarlyStopping, TrainHistory, train
from ._plan import Stage, TrainingPlan, split_validation

__all__ = [
    "BackedMatrix",
    "CheckpointFile",
    "DeviceData",
    "EarlyStopping",
    "Stage",
    "StreamData",
    "TrainHistory",
    "TrainingPlan",
    "is_backed",
    "split_validation",
    "train",
]
