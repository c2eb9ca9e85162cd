"""Transformer_BN exactly as the official PowerNorm code runs it (`norm=bn_official`).

The paper's Transformer_BN is `MaskSyncBatchNorm` in sIncerass/powernorm
(`fairseq/modules/norms/mask_syncbatchnorm.py`, picked for `norm_type == "batch"` by
`fairseq/modules/norm_select.py`). Despite its name it neither drops the pads nor synchronizes: it
rescales every token by its RMS (`LayerScaling1D`), overwrites each pad position with the mean of
the batch's real tokens, and calls `F.batch_norm` on all T·B positions. This module reproduces that
forward, backward and running update; normlab's `bn` (masked BN, `masked_batchnorm.py`) stays the
textbook version. With N real tokens among T·B positions (real fraction r = N/(T·B)):

| | `bn` (masked BN) | `bn_official` (MaskSyncBatchNorm) |
|---|---|---|
| LayerScaling (x / √(mean_c x² + 1e-5)) | off (`norm.layer_scaling=true` adds it) | always, train and eval |
| positions in the statistics | the N real tokens | all T·B, pads set to the real tokens' mean |
| batch mean μ_B | real tokens' mean | the same |
| batch variance σ²_B (normalizes with) | real tokens' variance | real tokens' variance × r |
| running_var update | + m·N/(N−1)·σ²_B | + m·T·B/(T·B−1)·σ²_B (pad-dependent) |
| momentum m | 0.1 (0.05 at paper scale) | 0.05 |
| eps, affine init | 1e-5, γ = 1, β = 0 | the same |
| output at pads | γ(x_pad − μ_B)/σ_B + β | training: β; eval: γ(μ_real − μ)/σ + β |
| gradient | nothing reaches or leaves pads | the pad fill is not detached: real tokens also get the pad positions' gradient through their mean |
| multi-process | `distributed.sync_bn` chooses | per process only (`need_sync = False`) |

The batch variance shrinks with the padding: the T·B − N filled positions add zero deviation but
count in the denominator. Eval normalizes real tokens with the running statistics only, so their
outputs do not depend on the padding; the pad positions are filled with the batch's real mean
there too, as in the official code.

For the batch-statistics probe: `running_mean`/`running_var`/`momentum` buffers as PyTorch's BN,
`statistic_inputs` (the (T·B, C) matrix F.batch_norm sees), `last_count` = T·B, and
`pads_in_statistics = True`, which tells the probe to sum output gradients over every position.
Not reproduced: the official `update_run=False` argument (no caller uses it) and
`track_running_stats=False`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlab.errors import UserError
from normlab.norms import NORMS, unsupported_layout
from normlab.norms.group_scaling import group_scale

# LayerScaling1D's own default, fixed in the official code whatever the BN's eps is.
LAYER_SCALING_EPS = 1e-5


def mean_filled(x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """(..., C) `x` as a (positions, C) matrix with every pad row replaced by the real rows' mean.

    The mean stays in the autograd graph, as the official `input[bn_mask, :].mean(dim=0).clone()`
    does, so the gradient that reaches the pad positions flows on into the real tokens.
    """
    rows = x.reshape(-1, x.shape[-1])
    if pad_mask is None:
        return rows
    pads = pad_mask.reshape(-1, 1)
    real = rows[~pads.squeeze(1)]
    if real.shape[0] == 0:
        raise ValueError(
            f"bn_official needs at least one real token to fill the pads with, got a batch of "
            f"{rows.shape[0]} pad positions; check the pad mask (True marks pads)"
        )
    return torch.where(pads, real.mean(dim=0, keepdim=True), rows)


class OfficialMaskedBatchNorm(nn.Module):
    """The official code's `MaskSyncBatchNorm` on (B, T, C) batches; `forward(x, pad_mask=None)`."""

    feature_dim = -1  # where the batch-statistics probe finds the features
    layer_scaling = True  # always on; the probe takes the statistics' rows from statistic_inputs
    pads_in_statistics = True  # the statistics run over every position, pads mean-filled

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.05) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = True
        self.last_count: int | None = None  # positions (T·B) the last statistics were taken over
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, layer_scaling=True"

    def statistic_inputs(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The (T·B, C) matrix F.batch_norm normalizes: layer-scaled tokens, pads mean-filled.

        Public so that a probe can recompute μ_B and σ²_B from a hooked input.
        """
        return mean_filled(group_scale(x, 1, LAYER_SCALING_EPS), pad_mask)  # LayerScaling

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        # At least float32 for the statistics, as PyTorch's BN under autocast.
        inp = x.to(torch.promote_types(x.dtype, torch.float32))
        rows = self.statistic_inputs(inp, pad_mask)
        factor = 0.0
        if self.training:
            self.num_batches_tracked += 1
            factor = self.momentum
            if factor is None:  # cumulative moving average, as the official code
                factor = 1.0 / int(self.num_batches_tracked)
            self.last_count = rows.shape[0]
        y = F.batch_norm(
            rows,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            factor,
            self.eps,
        )
        return y.reshape(x.shape).to(x.dtype)


@NORMS.register("bn_official")
def build_official_batchnorm(
    num_features: int,
    layout: str,
    momentum: float | None = 0.05,
    eps: float = 1e-5,
    sync_stats: bool = False,
) -> nn.Module:
    if layout != "sequence":
        raise unsupported_layout("bn_official", layout)
    if sync_stats:  # the official module's need_sync is hard-coded False: refuse, not compute else
        raise UserError(
            "norm=bn_official reproduces the official code, whose BN statistics are per "
            "process (never synchronized); run it with distributed.sync_bn=false"
        )
    return OfficialMaskedBatchNorm(num_features, eps=eps, momentum=momentum)
