"""No normalization: the baseline that shows what the norm layers buy."""

from __future__ import annotations

from torch import nn

from normlab.norms import NORMS


class NoNorm(nn.Identity):
    """Identity that accepts (and ignores) a padding mask, so it fits every layout."""

    def forward(self, x, pad_mask=None):  # noqa: D102 - same contract as the other norms
        return x


@NORMS.register("none")
def build_identity(num_features: int, layout: str) -> nn.Module:
    return NoNorm()
