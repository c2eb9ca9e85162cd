"""GroupScaling: divide each token, group of features by group, by that group's RMS.

The official PowerNorm code (sIncerass/powernorm, fairseq/modules/norms/mask_powernorm.py,
`GroupScaling1D`) runs every token through this before PowerNorm, with one group per attention head
(`group_num=args.encoder_attention_heads`, fairseq/modules/norm_select.py). It bounds each token's
second moment per group to ≈1, so the batch's quadratic mean ψ_B cannot be dominated by a few
tokens of large norm. With one group it is the "LayerScaling" of the official Transformer_BN, and
the masked BNs call it that way (`group_scale(x, 1, eps)`) rather than keep a copy.

It acts on each token alone (a per-token statistic), so pads never affect a real token here, and
autograd differentiates it exactly, as in the official code (it sits outside their custom Function).
"""

from __future__ import annotations

import torch


def group_scale(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """x (..., C) divided per token and per group of C/groups consecutive features by the group's
    root mean square sqrt(mean x² + eps); eps inside the root as in the official code."""
    c = x.shape[-1]
    grouped = x.reshape(*x.shape[:-1], groups, c // groups)
    scale = torch.rsqrt(grouped.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (grouped * scale).reshape(x.shape)
