"""LayerNorm (Ba et al. 2016): statistics per sample, no running averages.

For images it normalizes each sample over (C, H, W) together, with a per-channel affine, which is
exactly `GroupNorm` with one group. For sequences it normalizes each token over its features; a
token's statistics never involve another token, so the padding mask is accepted and ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.norms import NORMS, unsupported_layout


class SequenceLayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` over the last dim with the sequence-layout signature `(x, pad_mask=None)`."""

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


@NORMS.register("ln")
def build_layernorm(num_features: int, layout: str, eps: float = 1e-5) -> nn.Module:
    if layout == "image":
        return nn.GroupNorm(1, num_features, eps=eps)
    if layout == "sequence":
        return SequenceLayerNorm(num_features, eps=eps)
    raise unsupported_layout("ln", layout)
