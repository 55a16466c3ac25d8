"""Training checkpoints: save and resume a run, bound to the data and the parameters.

A checkpoint is a safe file (safetensors + JSON, :mod:`manifex.io._format`): module weights,
optimiser state, the random generator, the step reached, the history so far, and a fingerprint
of the training data and of the parameters that shape training. Resuming on other data or with
other parameters is refused. Checkpoints are written at the end of epochs, so a resumed run
draws the same minibatches and augmentations as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scanpy import logging as logg

from ..io._format import pack_state, read_file, unpack_state, write_file

__all__ = ["CheckpointFile"]


class CheckpointFile:
    """One checkpoint file for a fit made of ordered training phases.

    Parameters
    ----------
    path
        The file. Created (atomically) on the first write; read on :meth:`read`.
    fingerprint
        Fingerprint of the training data (:func:`manifex.io._format.fingerprint`).
    params
        The parameters that shape training (JSON-able); any difference refuses the file.
    phases
        Names of the model's training phases, in order (``("train",)`` for one phase).
    every_epochs
        Epochs between two writes inside a phase; a phase's end is always written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fingerprint: str,
        params: dict[str, Any],
        phases: Sequence[str] = ("train",),
        every_epochs: int = 10,
    ):
        self.path = Path(path)
        self.fingerprint = str(fingerprint)
        self.params_hash = hashlib.sha256(
            json.dumps(params, sort_keys=True, default=repr).encode()
        ).hexdigest()[:32]
        self.phases = tuple(phases)
        self.every_epochs = int(every_epochs)
        #: histories of the finished phases (filled while training and on :meth:`read`)
        self.histories: dict[str, dict[str, Any]] = {}
        self._state: dict[str, Any] | None = None

    # ---- reading ----------------------------------------------------------------------------
    def read(self) -> dict[str, Any] | None:
        """The saved state, or ``None`` when the file does not exist yet.

        Raises
        ------
        ValueError
            The file was written for other data or other parameters, or is not a checkpoint.
        """

        if not self.path.exists():
            return None
        header, arrays = read_file(self.path, kind="checkpoint")
        if header.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"Checkpoint {self.path} was written for other data (its fingerprint differs); "
                "delete it or choose another `checkpoint` path."
            )
        if header.get("params_hash") != self.params_hash:
            raise ValueError(
                f"Checkpoint {self.path} was written with other parameters (or on another device "
                "type); delete it or choose another `checkpoint` path."
            )
        if header.get("phase") not in self.phases:
            raise ValueError(
                f"Checkpoint {self.path} names an unknown training phase {header.get('phase')!r}."
            )
        state = unpack_state(header["state"], arrays)
        state["phase"], state["done"], state["step"] = (
            header["phase"],
            bool(header["done"]),
            int(header["step"]),
        )
        self.histories = dict(state.get("histories") or {})
        self._state = state
        logg.info(
            f"    resuming from {self.path} ({state['phase']}, step {state['step']}"
            + (", finished)" if state["done"] else ")")
        )
        return state

    def position(self, phase: str) -> str:
        """Where ``phase`` stands in the state read: ``"before"`` (already finished, skip it),
        ``"here"`` (resume it) or ``"after"`` (not started)."""
        if self._state is None:
            return "after"
        i, j = self.phases.index(phase), self.phases.index(self._state["phase"])
        return "before" if i < j else ("here" if i == j else "after")

    def state_for(self, phase: str) -> dict[str, Any] | None:
        """The saved state when it belongs to ``phase``."""
        return self._state if self.position(phase) == "here" else None

    # ---- writing ----------------------------------------------------------------------------
    def write(
        self,
        *,
        phase: str,
        step: int,
        done: bool,
        modules: Sequence[torch.nn.Module],
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
        history: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Write the current state (atomically)."""

        if done:
            self.histories[phase] = history
        state = {
            "modules": [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in modules],
            "optimizer": _optimizer_state(optimizer) if optimizer is not None and not done else None,
            "generator": generator.get_state().cpu().numpy(),
            "history": history,
            "histories": self.histories,
            "extra": extra or {},
        }
        js, arrays = pack_state(state)
        header = {
            "fingerprint": self.fingerprint,
            "params_hash": self.params_hash,
            "phase": phase,
            "step": int(step),
            "done": bool(done),
            "state": js,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_file(self.path, kind="checkpoint", header=header, arrays=arrays, overwrite=True)


def restore(
    state: dict[str, Any],
    *,
    modules: Sequence[torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    generator: torch.Generator,
) -> None:
    """Load a state read by :meth:`CheckpointFile.read` into the live objects."""
    saved = state["modules"]
    if len(saved) != len(modules):
        raise ValueError("The checkpoint holds another set of networks than this model trains.")
    for m, sd in zip(modules, saved, strict=True):
        device = next(iter(m.state_dict().values())).device
        m.load_state_dict({k: torch.as_tensor(v).to(device) for k, v in sd.items()})
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(_optimizer_from_state(state["optimizer"], optimizer))
    gen_state = torch.as_tensor(np.asarray(state["generator"], dtype=np.uint8))
    generator.set_state(gen_state.to(generator.get_state().device))


def _optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    sd = opt.state_dict()
    return {
        "state": {str(k): dict(v) for k, v in sd["state"].items()},
        "param_groups": [dict(g) for g in sd["param_groups"]],
    }


def _optimizer_from_state(saved: dict[str, Any], opt: torch.optim.Optimizer) -> dict[str, Any]:
    device = opt.param_groups[0]["params"][0].device
    state = {}
    for k, v in saved["state"].items():
        state[int(k)] = {
            n: (torch.as_tensor(t).to(device) if n != "step" else torch.as_tensor(t)) for n, t in v.items()
        }
    groups = []
    for g in saved["param_groups"]:
        g = dict(g)
        g["params"] = [int(p) for p in g["params"]]
        groups.append(g)
    return {"state": state, "param_groups": groups}
