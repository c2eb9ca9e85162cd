"""BatchNorm for padded token batches: statistics over the real (non-pad) tokens only.

A Transformer batch is (B, T, C) with sentences padded to a common length T. Treating the B·T
positions as BatchNorm's "batch" would let the pads (and how many there are) into the statistics,
so this module selects the rows where `pad_mask` is False and computes, per feature, the mean and
the biased variance of those N tokens, exactly what `nn.BatchNorm1d` computes when fed the (N, C)
matrix of real tokens. Running statistics follow PyTorch's conventions to the letter (momentum 0.1,
`running_var` updated with the *unbiased* variance N/(N-1)·σ²_B, `num_batches_tracked`, momentum
None = cumulative average), so the batch-statistics probe can treat this layer like a
`nn.BatchNorm2d`.

Where every position is a token of the statistics (no pad mask, as in the ViT; not synchronized),
and in eval, the layer is PyTorch's fused `F.batch_norm` on the (B·T, C) tokens
(`fused_batch_norm`): what the explicit path below computes (to rounding), in one kernel.

Pad positions are normalized with the same statistics as the real tokens (their outputs are
whatever the affine map gives them); they are never part of a statistic, so nothing at a real token
depends on them.

Under `torchrun` with `distributed.sync_bn=true` (`sync_stats`), the statistics are those of the
real tokens of the global batch, all ranks together (see `global_stats`).

`layer_scaling=True` first divides every token by its RMS over its C features, as the official
PowerNorm code's Transformer_BN does ("LayerScaling"). It is off by default: docs/design.md §4 explains
that it bounds the variance distance near 2 while the paper's figures reach 6.6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlab.norms.global_stats import (
    count_batch,
    fewer_than_two,
    global_var_mean,
    update_running_stats,
)
from normlab.norms.group_scaling import group_scale


def real_tokens(x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """The rows of (B, T, C) `x` where `pad_mask` (B, T) is False, as an (N, C) matrix."""
    tokens = x.reshape(-1, x.shape[-1])
    return tokens if pad_mask is None else tokens[~pad_mask.reshape(-1)]


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the non-pad tokens of a (B, T, C) batch; `forward(x, pad_mask=None)`."""

    feature_dim = -1  # where the batch-statistics probe finds the features

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        layer_scaling: bool = False,
        sync_stats: bool = False,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.layer_scaling = layer_scaling
        self.sync_stats = (
            sync_stats  # True: statistics over the global batch of a multi-process run
        )
        # tokens the last statistics were taken over (a device tensor when synchronized)
        self.last_count: int | torch.Tensor | None = None
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, layer_scaling={self.layer_scaling}"
        )

    def statistic_inputs(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The (N, C) matrix the batch statistics run over: the real tokens, after layer scaling.

        Public so that a probe can recompute μ_B and σ²_B from a hooked input without knowing
        about padding.
        """
        if self.layer_scaling:
            x = group_scale(x, 1, self.eps)  # LayerScaling: one group
        return real_tokens(x, pad_mask)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.layer_scaling:
            x = group_scale(x, 1, self.eps)  # LayerScaling: one group
        elif not self.training or (pad_mask is None and not self.sync_stats):
            y = fused_batch_norm(self, x)
            if y is not None:
                return y
        if self.training:
            # Statistics in at least float32, as PyTorch's BN does under autocast.
            tokens = real_tokens(x, pad_mask).to(torch.promote_types(x.dtype, torch.float32))
            if self.sync_stats:
                var, mean, n = global_var_mean(tokens, 0)
            else:
                var, mean = torch.var_mean(tokens, dim=0, correction=0)  # one pass, biased
                n = tokens.shape[0]
            check_count(n, tokens.shape[0])
            self.last_count = n
            update_running_stats(self, mean.detach(), var.detach(), n)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y


def check_count(n: int | torch.Tensor, n_local: int) -> None:
    """Refuse fewer than 2 tokens (`n`, all ranks'; `n_local` this rank's): no variance."""
    if fewer_than_two(n, n_local):
        raise ValueError(f"BatchNorm needs more than 1 real token per batch, got {int(n)}")


def fused_batch_norm(bn: MaskedBatchNorm, x: torch.Tensor) -> torch.Tensor | None:
    """`bn` as PyTorch's fused `F.batch_norm` on the (B·T, C) matrix of tokens, for where every
    position is a token of the statistics (no pad mask, not synchronized) or in eval; None where
    the running buffers' dtype is not the statistics' (the explicit path handles any mix).

    The same statistics, running update and float32-or-wider arithmetic as the explicit path, in
    one kernel and its backward instead of var_mean and four elementwise ops saved for autograd
    (the ViT's BN step cost 1.27× LN's that way). Under autocast `F.batch_norm` keeps a bf16
    input's dtype, so the input is cast first, as the explicit path's statistics are.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    if bn.running_mean.dtype != dtype:
        return None
    tokens = x.reshape(-1, x.shape[-1]).to(dtype)
    factor = 0.0
    if bn.training:
        check_count(tokens.shape[0], tokens.shape[0])
        bn.last_count = tokens.shape[0]
        factor = count_batch(bn)
    y = F.batch_norm(
        tokens, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.training, factor, bn.eps
    )
    return y.reshape(x.shape)
