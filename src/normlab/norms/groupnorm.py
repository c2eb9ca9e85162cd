"""GroupNorm (Wu & He 2018): per-sample statistics over groups of channels."""

from __future__ import annotations

from torch import nn

from normlab.errors import UserError
from normlab.norms import NORMS, unsupported_layout


@NORMS.register("gn")
def build_groupnorm(
    num_features: int, layout: str, groups: int = 8, eps: float = 1e-5
) -> nn.Module:
    if layout != "image":
        raise unsupported_layout("gn", layout)
    if groups < 1 or num_features % groups:
        divisors = [g for g in range(1, num_features + 1) if num_features % g == 0]
        raise UserError(
            f"norm.groups={groups} does not divide a layer of {num_features} channels; "
            f"choose a divisor of every layer's width, e.g. one of {divisors}"
        )
    return nn.GroupNorm(groups, num_features, eps=eps)
