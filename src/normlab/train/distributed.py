"""Data-parallel training under `torchrun`: one process per device, torch.distributed underneath.

`torchrun --nproc_per_node N -m normlab.train ...` starts N copies of the same command; each reads
its rank from the environment (RANK, WORLD_SIZE, LOCAL_RANK), trains on its shard of every global
batch (`normlab.data.sharding`), and the gradients are averaged with one all-reduce per step before
the optimizer step, so every rank holds the same weights. Rank 0 alone writes the run directory
(metrics, probe rows, checkpoints, summary); a checkpoint holds no trace of the world size, so a run
can resume on any number of processes.

The loss of each rank is rescaled by n_rank·world/n_global (n: images or target tokens) so that the
averaged gradient is exactly the gradient of the global batch's mean loss, even when the shards are
not equal in size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from normlab.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    sync_bn: bool = False  # BN statistics over the global batch (else each rank's own)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


# The one place a process asks who it is. Everything that depends on the rank (the World below,
# hence the run directory's writer; the lock and launch record taken before the World exists; the
# shard of the data a task trains on) reads these two functions, so they cannot disagree, e.g. when
# torch.distributed is not initialized yet or a stray RANK is set in a single-process run.
def launched_world_size() -> int:
    """How many processes torchrun started for this run (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as torchrun set it; 0 in a single-process run, whatever RANK says."""
    return int(os.environ.get("RANK", "0")) if launched_world_size() > 1 else 0


def init_world(backend: str, sync_bn: bool, device_name: str) -> World:
    """Join the process group torchrun set up (a no-op for a single process)."""
    size = launched_world_size()
    if size == 1:
        return World(sync_bn=sync_bn)
    rank, local_rank = launched_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (
        device_name == "auto" and torch.cuda.is_available()
    )
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend not in ("gloo", "nccl", "mpi"):
        raise UserError(f"distributed.backend={backend!r} is not known; use auto, gloo or nccl")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return World(rank=rank, size=size, local_rank=local_rank, sync_bn=sync_bn)


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def _reduce(values: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(values)
    return values


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over all ranks of a few numbers (one small all-reduce)."""
    if dist.get_backend() == "gloo":
        device = torch.device("cpu")
    return _reduce(torch.tensor(values, dtype=torch.float64, device=device)).tolist()


def agree_on_step(
    n_local: int, diverged: bool, stop: bool, device: torch.device
) -> tuple[int, bool, bool]:
    """One small all-reduce after the forward pass: the global item count (to weight this rank's
    loss), and whether any rank diverged or was asked to stop, so that all ranks act on the same
    step."""
    n, bad, stops = sum_over_ranks([n_local, diverged, stop], device)
    return int(n), bool(bad), bool(stops)


def average_gradients(model: nn.Module, world: World, extra: torch.Tensor) -> torch.Tensor:
    """Average every parameter gradient over the ranks in one flat all-reduce; `extra` (a 1-D
    tensor of per-rank numbers to be summed, e.g. each rank's share of the loss) rides along and
    comes back summed."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [extra.float().to(grads[0].device)])
    _reduce(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g).div_(world.size))
        offset += n
    return flat[offset:]


def average_step(
    model: nn.Module, world: World, loss: float, metrics: dict[str, Any], n_local: int, n: int
) -> tuple[float, dict[str, float]]:
    """`average_gradients` for one step of `n` items, `n_local` of them here: this rank's loss and
    batch metrics, weighted by its share of the items, come back as the global batch's."""
    shares = [loss * n_local / n] + [float(v) * n_local / n for v in metrics.values()]
    summed = average_gradients(model, world, torch.tensor(shares, dtype=torch.float64)).tolist()
    return summed[0], dict(zip(metrics, summed[1:], strict=True))


def broadcast_state(model: nn.Module) -> None:
    """Rank 0's parameters and buffers (BN running statistics) on every rank."""
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src=0)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over the ranks (for the probe's gradient sums under synchronized BN)."""
    return _reduce(t.clone()).div_(dist.get_world_size())
