"""Training: the one loop every manifex model uses, and what it stands on.

- :mod:`manifex.train._loop` -- :func:`train` (shuffling, optimiser steps, schedules, mixed
  precision, history, validation and early stopping);
- :mod:`manifex.train._data` -- the rows a model trains on, in memory on the device
  (:class:`DeviceData`) or on disk (:class:`BackedMatrix`, :class:`StreamData`);
- :mod:`manifex.train._checkpoint` -- checkpoints that resume a run (safe files, :mod:`manifex.io`);
- :mod:`manifex.train._distributed` -- several processes under ``torchrun``;
- :mod:`manifex.train._progress` -- the progress report; :mod:`manifex.train._malloc` -- glibc's
  allocator tuned for long runs.
"""

from ._checkpoint import CheckpointFile
from ._data import BackedMatrix, DeviceData, StreamData, is_backed
from ._loop import EarlyStopping, TrainHistory, split_validation, train

__all__ = [
    "BackedMatrix",
    "CheckpointFile",
    "DeviceData",
    "EarlyStopping",
    "StreamData",
    "TrainHistory",
    "is_backed",
    "split_validation",
    "train",
]
