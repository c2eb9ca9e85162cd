"""GroupScaling: divide each token, group of features by group, by that group's RMS.

The official PowerNorm code (sIncerass/powernorm, fairseq/modules/norms/mask_powernorm.py,
`GroupScaling1D`) runs every token through this before PowerNorm, with one group per attention head
(`group_num=args.encoder_attention_heads`, fairseq/modules/norm_select.py). It bounds each token's
second moment per group to ≈1, so the batch's quadratic mean ψ_B cannot be dominated by a few
tokens of large norm. With one group it is the "LayerScaling" of the official Transformer_BN
(`normlab.norms.masked_batchnorm.rms_scale`).

It acts on each token alone (a per-token statistic), so pads never affect a real token here, and
autograd differentiates it exactly, as in the official code (it sits outside their custom Function).
"""

from __future__ import annotations

import torch

from normlab.errors import UserError


def check_groups(groups: int, num_features: int) -> None:
    """Fail with one sentence unless `groups` splits `num_features` features evenly."""
    if groups < 1 or num_features % groups:
        divisors = [g for g in range(1, num_features + 1) if num_features % g == 0]
        raise UserError(
            f"norm.groups={groups} does not divide a layer of {num_features} features; group "
            f"scaling needs a divisor of every layer's width (usually the attention heads), "
            f"e.g. one of {divisors}"
        )


def group_scale(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """x (..., C) divided per token and per group of C/groups consecutive features by the group's
    root mean square sqrt(mean x² + eps); eps inside the root as in the official code."""
    c = x.shape[-1]
    grouped = x.reshape(*x.shape[:-1], groups, c // groups)
    scale = torch.rsqrt(grouped.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (grouped * scale).reshape(x.shape)
