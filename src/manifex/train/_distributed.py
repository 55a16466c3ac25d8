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
* averages the gradients over the ranks (one all-reduce of a flat buffer per step), so the step
  equals the single-process step on the global batch;
* seeds each rank's augmentations differently (``random_state + rank``);
* BatchNorm: on CUDA the networks use :class:`torch.nn.SyncBatchNorm`, i.e. the global batch's
  statistics; torch has no SyncBatchNorm on the CPU, so there (gloo) each rank normalises with
  its own shard's statistics (like "ghost" batches of ``batch_size / N``), and the running
  statistics are averaged over the ranks at the end so that every rank holds the same model;
* only rank 0 writes files (checkpoints, the model, the embedding).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

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


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradients of every rank's copy and returns
    this rank's slice (every rank computes the same loss of the gathered batch)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        size = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (the same shape on every rank) over the ranks, in rank order, keeping
    the gradient path to this rank's rows. With one process, ``x`` itself."""
    if not world().distributed:
        return x
    return _GatherWithGrad.apply(x)


def shard(idx: torch.Tensor, w: World) -> torch.Tensor:
    """This rank's contiguous part of a global minibatch (sizes divisible by the world size)."""
    if not w.distributed:
        return idx
    n = idx.numel() // w.size
    return idx[w.rank * n : (w.rank + 1) * n]


def average_gradients(params: list[torch.nn.Parameter], w: World) -> None:
    """Mean of the gradients over the ranks, with one all-reduce of a flat buffer."""
    if not w.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= w.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_buffers(modules: list[torch.nn.Module], w: World) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks."""
    if not w.distributed:
        return
    for m in modules:
        for b in m.buffers():
            if b.dtype.is_floating_point:
                dist.all_reduce(b)
                b /= w.size


def broadcast_parameters(modules: list[torch.nn.Module], w: World) -> None:
    """Start every rank from rank 0's weights (they are seeded alike; this makes it certain)."""
    if not w.distributed:
        return
    for m in modules:
        for t in m.state_dict().values():
            dist.broadcast(t, src=0)


def convert_sync_batchnorm(module: torch.nn.Module, device: torch.device, w: World) -> torch.nn.Module:
    """SyncBatchNorm on CUDA with several ranks; the module unchanged otherwise."""
    if w.distributed and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
