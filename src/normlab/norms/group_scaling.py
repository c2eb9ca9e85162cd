"""GroupScaling: divide each token, group of features by group, by that group's RMS.

The official PowerNorm code (sIncerass/powernorm, fairseq/modules/norms/mask_powernorm.py,
`GroupScaling1D`) runs every token through this before PowerNorm, with one group per attention head
(`group_num=args.encoder_attention_heads`, fairseq/modules/norm_select.py). It bounds each token's
second moment per group to ≈1, so the batch's quadratic mean ψ_B cannot be dominated by a few
tokens of large norm. With one group it is the "LayerScaling" of the official Transformer_BN, and
the masked BNs call it that way (`group_scale(x, 1, eps)`) rather than keep a copy.

It acts on each token alone (a per-token statistic), so pads never affect a real token here, and
its gradient is exact, as in the official code (where autograd differentiates it, outside their
custom Function); here that gradient is written in closed form, which takes fewer passes.
"""

from __future__ import annotations

import torch


def group_scale(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """x (..., C) divided per token and per group of C/groups consecutive features by the group's
    root mean square sqrt(mean x² + eps); eps inside the root as in the official code."""
    c = x.shape[-1]
    grouped = x.reshape(*x.shape[:-1], groups, c // groups)
    return _GroupScale.apply(grouped, eps).reshape(x.shape)


class _GroupScale(torch.autograd.Function):
    """y = x·s per group, s = (mean x² + eps)^(−1/2), with its exact gradient in closed form,
    ∂L/∂x = s·(∂L/∂y − y·mean(∂L/∂y·y)): four passes over the activations in the backward where
    autograd's chain through pow, mean and the broadcast product takes about twice as many."""

    @staticmethod
    def forward(ctx, grouped: torch.Tensor, eps: float) -> torch.Tensor:
        # mean x² from the group's 2-norm: one pass, where pow then mean take two
        norm = torch.linalg.vector_norm(grouped, dim=-1, keepdim=True)
        scale = torch.rsqrt(norm * norm / grouped.shape[-1] + eps)
        y = grouped * scale
        ctx.save_for_backward(y, scale)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        y, scale = ctx.saved_tensors
        m = (grad_y * y).mean(dim=-1, keepdim=True)
        return torch.addcmul(grad_y, y, -m) * scale, None
