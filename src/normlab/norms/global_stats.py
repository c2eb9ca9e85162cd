"""Batch statistics over the global batch of a multi-process run, and PyTorch's running-average
update shared by normlab's own BN modules.

Under `torchrun` each process sees a shard of the global batch. BN with *synchronized* statistics
normalizes every shard with the mean and variance of the whole global batch: each rank computes the
first two moments of its shard, the moments are combined with one all-reduce of
[n·μ, n·(σ² + μ²), n] in float64, and the result is exactly (up to rounding) what one process would
compute on the whole batch. The all-reduce is torch.distributed's functional (autograd-aware) one, whose backward
all-reduces the gradients, so ∂L/∂x on every rank includes the paths through the other ranks'
normalized outputs, as in one process.

`torch.nn.SyncBatchNorm` does the same for images but only on GPUs; `SyncBatchNorm2d` below runs on
any device (the multi-process tests use CPU and gloo) and behaves like `nn.BatchNorm2d` otherwise.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def distributed_world() -> int:
    """Number of processes of the current run (1 when torch.distributed is not in use)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_var_mean(
    x: torch.Tensor, dims: tuple[int, ...] | int
) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor]:
    """(biased variance, mean, count) over `dims` of `x` and of the same tensor on every other rank.

    The local moments come from `torch.var_mean` (numerically stable), the combination is in
    float64 so that E[x²] − μ² does not cancel; with one process it is torch.var_mean itself.
    The count is an int with one process; with several it is a 0-dim int64 tensor on `x`'s device:
    reading it would stall the GPU at every BN layer of every step, and it need not be the same on
    every step (masked BN counts the real tokens of the global batch).
    """
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    n_local = x.numel() // mean.numel()
    if distributed_world() == 1:
        return var, mean, n_local
    import torch.distributed._functional_collectives as funcol

    m, v = mean.double(), var.double()
    n = torch.full_like(m, float(n_local))
    # sum over ranks; differentiable: its backward all-reduces the gradients
    totals = funcol.all_reduce(torch.stack([n * m, n * (v + m * m), n]), "sum", dist.group.WORLD)
    n_global = totals[2]
    g_mean = totals[0] / n_global
    g_var = (totals[1] / n_global - g_mean * g_mean).clamp_min(0)
    # sums of whole numbers below 2**53 in float64: exact, so the int64 cast is too
    return g_var.to(var.dtype), g_mean.to(mean.dtype), n_global[0].detach().to(torch.int64)


def fewer_than_two(count: int | torch.Tensor, n_local: int) -> bool:
    """Whether `count` values (all ranks' when it is a tensor) are too few for a variance. The
    global count is at least this rank's `n_local`, so the device is read only when this rank alone
    has fewer than 2, not on every step."""
    return n_local < 2 and int(count) < 2


@torch.no_grad()
def count_batch(module: nn.Module) -> float:
    """Count one more batch in `num_batches_tracked` and return its weight in the running averages,
    as `nn.BatchNorm` does: `momentum`, or 1/num_batches_tracked when it is None (cumulative
    average)."""
    module.num_batches_tracked += 1
    if module.momentum is None:
        return 1.0 / int(module.num_batches_tracked)
    return module.momentum


@torch.no_grad()
def update_running_stats(
    module: nn.Module, mean: torch.Tensor, var: torch.Tensor, count: int | torch.Tensor
) -> None:
    """PyTorch's BN running-average update to the letter: momentum (None = cumulative average),
    `running_var` from the *unbiased* variance count/(count−1)·σ²_B, `num_batches_tracked`.

    `count` may be a 0-dim tensor (the global count of synchronized BN): the correction is then
    computed on its device, in float64 as Python computes count/(count−1), so the result is the
    same as with the int and nothing waits for the device."""
    factor = count_batch(module)
    if isinstance(count, torch.Tensor):
        n = count.double()
        correction: float | torch.Tensor = n / (n - 1)
    else:
        correction = count / (count - 1)
    unbiased = var * correction
    # (1 - f)·old + f·new, the same expression (and rounding) as PyTorch's kernels
    module.running_mean.mul_(1 - factor).add_(mean.to(module.running_mean.dtype), alpha=factor)
    module.running_var.mul_(1 - factor).add_(unbiased.to(module.running_var.dtype), alpha=factor)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` whose training statistics are those of the global batch (all ranks).

    `last_count` is the number of values per feature the statistics were taken over (N·H·W summed
    over ranks; a device tensor with several ranks, see `global_var_mean`), which the
    batch-statistics probe needs to undo the unbiased running variance.
    """

    last_count: int | torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        stats_dtype = torch.promote_types(x.dtype, torch.float32)  # as BN under autocast
        var, mean, count = global_var_mean(x.to(stats_dtype), (0, 2, 3))
        if fewer_than_two(count, x.numel() // x.shape[1]):
            raise ValueError(f"BatchNorm needs more than 1 value per channel, got {int(count)}")
        self.last_count = count
        if self.track_running_stats:
            update_running_stats(self, mean.detach(), var.detach(), count)
        shape = (1, -1, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)
