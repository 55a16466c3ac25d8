"""Progress reporting for training loops, following scanpy's verbosity.

On a terminal a tqdm bar is shown (one per training phase). When the output is not a terminal
(a log file, a batch job, CI) no carriage-return bar is written: at most one plain line per
epoch, and by default about ten lines per phase.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "progress_enabled"]


def progress_enabled(progress: bool | None) -> bool:
    """Resolve a model's ``progress`` argument.

    ``True`` / ``False`` are obeyed; ``None`` follows ``scanpy.settings.verbosity``: progress is
    shown at the default level (``warning``, 1) and above and hidden at ``0`` (errors only).
    """
    if progress is not None:
        return bool(progress)
    from scanpy import settings

    try:
        level = int(settings.verbosity)
    except (TypeError, ValueError):
        level = 1
    return level >= 1


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Report ``n_steps`` optimiser steps grouped in epochs of ``per_epoch`` steps.

    Parameters
    ----------
    n_steps, per_epoch
        Budget and steps per epoch.
    desc
        Label of the phase.
    enabled
        Whether anything is shown.
    initial
        Steps already done (a resumed run).
    stream
        Where to write (``sys.stderr`` by default).
    lines
        When ``stream`` is not a terminal: the number of plain lines per phase (at most one per
        epoch).
    """

    def __init__(
        self,
        n_steps: int,
        per_epoch: int,
        *,
        desc: str,
        enabled: bool,
        initial: int = 0,
        stream: TextIO | None = None,
        lines: int = 10,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.desc = desc
        self.n_steps = int(n_steps)
        self.per_epoch = max(1, int(per_epoch))
        self.step = int(initial)
        self.t0 = time.perf_counter()
        self._bar: Any = None
        n_epochs = max(1, -(-self.n_steps // self.per_epoch))
        self._every = max(1, -(-n_epochs // max(1, lines)))  # at most `lines` lines
        if enabled and _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=n_steps, initial=initial, desc=desc, leave=False, file=self.stream)

    def update(self, k: int = 1) -> None:
        self.step += k
        if self._bar is not None:
            self._bar.update(k)

    def epoch_end(self, epoch: int, loss: float) -> None:
        """Called once per epoch with the epoch's mean loss (``epoch`` counts from 1)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4g}")
            return
        if epoch % self._every == 0 or self.step >= self.n_steps:
            secs = time.perf_counter() - self.t0
            print(
                f"{self.desc}: step {self.step}/{self.n_steps} (epoch {epoch}), loss {loss:.4g}, {secs:.1f}s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
