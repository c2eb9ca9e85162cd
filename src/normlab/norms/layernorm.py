"""LayerNorm (Ba et al. 2016): statistics per sample, no running averages.

For images it normalizes each sample over (C, H, W) together, with a per-channel affine, which is
exactly `GroupNorm` with one group. For sequences it normalizes each token over its features.
"""

from __future__ import annotations

from torch import nn

from normlab.norms import NORMS, unsupported_layout


@NORMS.register("ln")
def build_layernorm(num_features: int, layout: str, eps: float = 1e-5) -> nn.Module:
    if layout == "image":
        return nn.GroupNorm(1, num_features, eps=eps)
    raise unsupported_layout("ln", layout)
