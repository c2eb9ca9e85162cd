"""GroupNorm (Wu & He 2018): per-sample statistics over groups of channels."""

from __future__ import annotations

from torch import nn

from normlab.norms import NORMS, check_groups, unsupported_layout


@NORMS.register("gn")
def build_groupnorm(
    num_features: int, layout: str, groups: int = 8, eps: float = 1e-5
) -> nn.Module:
    if layout != "image":
        raise unsupported_layout("gn", layout)
    check_groups(groups, num_features, "channels")
    return nn.GroupNorm(groups, num_features, eps=eps)
