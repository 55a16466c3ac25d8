"""Training on several processes with torch.distributed (launched by ``torchrun``).

One process stays the default and nothing here changes it. When a process group is initialised
(``torchrun --nproc-per-node N -m manifex fit ...`` does it through :func:`init_from_env`, or the
user calls ``torch.distributed.init_process_group`` before ``fit``) and has more than one rank,
the shared trainer:

* draws one seeded permutation per epoch, the same on every rank, and gives each rank its shard
  of every global minibatch of ``batch_size`` rows (``batch_size`` stays the *global* batch);
* lets the batch-level losses see the whole global batch: DLME's 2B × 2B similarity matrix and
  t-SimCNE's InfoNCE negatives are computed on embeddings gathered from every rank *with their
  gradients* (:func:`gather`), so every rank computes the loss of the global batch, as SimCLR
  does; N2D's reconstruction error is a mean over rows and needs no gathering;
* averages the gradients over the ranks with :class:`torch.nn.parallel.DistributedDataParallel`
  (:func:`data_parallel`: bucketed all-reduces that overlap the backward pass; it also starts
  every rank from rank 0's parameters), so the step equals the single-process step on the
  global batch;
* seeds each rank's augmentations differently (``random_state + rank``); a checkpoint keeps
  every rank's augmentation stream and BatchNorm statistics (:func:`rank_states`), so a run
  restarted by ``torchrun --max-restarts`` resumes exactly where the ranks stood;
* BatchNorm: on CUDA the networks use :class:`torch.nn.SyncBatchNorm`, i.e. the global batch's
  statistics; torch has no SyncBatchNorm on the CPU, so there (gloo) each rank normalises with
  its own shard's statistics (like "ghost" batches of ``batch_size / N``), and the running
  statistics are averaged over the ranks at the end so that every rank holds the same model;
* only rank 0 writes files (checkpoints, the model, the embedding).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch.nn.parallel import DistributedDataParallel

# Buffers are not broadcast before each forward pass (newer torch names that flag
# ``forward_sync_buffers`` and deprecates ``broadcast_buffers``).
_DDP_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)

__all__ = ["World", "gather", "init_from_env", "world"]


@dataclass(frozen=True)
class World:
    """Rank and size of the current process group (``size == 1``: a single process)."""

    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The current :class:`World` (a single process unless a group of several is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def init_from_env(device: str | torch.device = "auto") -> World:
    """Initialise the default process group from torchrun's environment (``WORLD_SIZE`` > 1).

    Uses NCCL when CUDA is available and the device is not the CPU, gloo otherwise, and selects
    the local GPU (``LOCAL_RANK``). Without torchrun's variables nothing happens.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available() or dist.is_initialized():
        return world()
    use_cuda = torch.cuda.is_available() and str(device) != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return world()


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (the same shape on every rank) over the ranks, in rank order, keeping
    the gradient path to this rank's rows: :func:`torch.distributed.nn.functional.all_gather`,
    whose backward sums the gradients of every rank's copy. With one process, ``x`` itself.

    Newer torch deprecates it for the functional collectives (``all_gather_single``), but
    those gather asynchronously, and with them a 2-process gloo (CPU) DLME run aborted with a
    corrupted heap after about a thousand steps (torch 2.13); this one waits for each
    collective.
    """
    if not world().distributed:
        return x
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(dist_nn.all_gather(x))


def shard(idx: torch.Tensor, w: World) -> torch.Tensor:
    """This rank's contiguous part of a global minibatch (sizes divisible by the world size)."""
    if not w.distributed:
        return idx
    n = idx.numel() // w.size
    return idx[w.rank * n : (w.rank + 1) * n]


class _Step(torch.nn.Module):
    """The networks a training step updates, with the step as the forward pass: what
    :class:`~torch.nn.parallel.DistributedDataParallel` wraps. The step's closure uses the same
    parameter objects, so DDP's gradient hooks fire on its backward."""

    def __init__(self, step_fn: Callable[[torch.Tensor], torch.Tensor], modules: Sequence[torch.nn.Module]):
        super().__init__()
        self.nets = torch.nn.ModuleList(modules)
        self.step_fn = step_fn

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.step_fn(idx)


def data_parallel(
    step_fn: Callable[[torch.Tensor], torch.Tensor], modules: Sequence[torch.nn.Module], w: World
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``step_fn`` whose backward averages the gradients over the ranks.

    With one process (or nothing to train), ``step_fn`` itself. With several,
    :class:`~torch.nn.parallel.DistributedDataParallel` around the ``modules`` with ``step_fn`` as
    forward: it broadcasts rank 0's parameters on construction and all-reduces the gradients in
    buckets while the backward pass runs. Only parameters that require a gradient now take
    part (t-SimCNE's stages freeze different ones, so each call of ``train`` builds its own).
    Buffers are not broadcast before each step (newer torch broadcasts rank 0's once, on
    construction): on the CPU each rank keeps its own BatchNorm statistics, averaged at the end
    by :func:`sync_buffers`.
    """
    if not w.distributed or not any(p.requires_grad for m in modules for p in m.parameters()):
        return step_fn
    return DistributedDataParallel(_Step(step_fn, modules), **_DDP_NO_BUFFER_SYNC)


def sync_buffers(modules: Sequence[torch.nn.Module], w: World) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks."""
    if not w.distributed:
        return
    for m in modules:
        for b in m.buffers():
            if b.dtype.is_floating_point:
                dist.all_reduce(b)
                b /= w.size


def _all_gather(t: torch.Tensor, w: World) -> list[torch.Tensor]:
    """Every rank's ``t`` (the same shape and dtype on all ranks), on the CPU."""
    # NCCL gathers device tensors only; a generator's state lives on the CPU
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
    t = t.to(device)
    parts = [torch.empty_like(t) for _ in range(w.size)]
    dist.all_gather(parts, t.contiguous())
    return [p.cpu() for p in parts]


def rank_states(
    modules: Sequence[torch.nn.Module], generator: torch.Generator | None, w: World
) -> list[dict[str, Any]] | None:
    """What differs between the ranks, from every rank, for rank 0's checkpoint (a collective:
    every rank calls it). ``None`` with one process.

    Each rank's floating-point buffers (its own BatchNorm statistics on the CPU) and the state
    of its own ``generator`` (the augmentations' stream, seeded by rank), so that a resumed run
    continues every rank where it stood.
    """
    if not w.distributed:
        return None
    out: list[dict[str, Any]] = [{"buffers": [{} for _ in modules]} for _ in range(w.size)]
    for i, m in enumerate(modules):
        for name, b in m.named_buffers():
            if b.dtype.is_floating_point:
                for r, part in enumerate(_all_gather(b.detach(), w)):
                    out[r]["buffers"][i][name] = part
    if generator is not None:
        for r, part in enumerate(_all_gather(generator.get_state(), w)):
            out[r]["generator"] = part.numpy()
    return out


def restore_rank_state(
    states: list[dict[str, Any]] | None,
    modules: Sequence[torch.nn.Module],
    generator: torch.Generator | None,
    w: World,
) -> None:
    """Load this rank's part of :func:`rank_states` (when the checkpoint was written by as many
    processes; otherwise every rank continues from rank 0's state)."""
    if not w.distributed or not states or len(states) != w.size:
        return
    mine = states[w.rank]
    for m, saved in zip(modules, mine["buffers"], strict=True):
        buffers = dict(m.named_buffers())
        with torch.no_grad():
            for name, v in saved.items():
                buffers[name].copy_(torch.as_tensor(v))
    if generator is not None and mine.get("generator") is not None:
        state = torch.as_tensor(np.asarray(mine["generator"], dtype=np.uint8))
        generator.set_state(state)


def convert_sync_batchnorm(module: torch.nn.Module, device: torch.device, w: World) -> torch.nn.Module:
    """SyncBatchNorm on CUDA with several ranks; the module unchanged otherwise."""
    if w.distributed and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
