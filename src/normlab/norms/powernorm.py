"""PowerNorm (Shen et al., ICML 2020): BatchNorm without mean subtraction, by the quadratic mean.

Per feature c, over the statistic's positions (images: N·H·W; sequences: the non-pad tokens),
ψ²_B = mean x² is the batch's quadratic mean. Two layers (docs/design.md §4):

- `pnv`, PowerNorm-Vanilla: y = γ·x/sqrt(ψ²_B + eps) + β with exact backprop through ψ_B (plain
  autograd). A running ψ² (`running_phi`) follows BN's convention, running ← (1−m)·running + m·ψ²_B,
  and replaces ψ²_B at inference.
- `pn`, PowerNorm (paper Algorithm 2): the forward divides by the running ψ_{t−1} from the previous
  step; the running value moves as ψ²_t = α_fwd·ψ²_{t−1} + (1−α_fwd)·ψ²_B (α = weight of the OLD
  value, as in the paper and the official code); the backward is the paper's approximation
  x̃ = γ∂L/∂y − ν_{t−1}·x̂, ∂L/∂x = x̃/ψ, with ν_t = ν_{t−1}(1 − (1−α_bkw)Γ_t) + (1−α_bkw)Λ_t,
  Γ_t = mean x̂², Λ_t = mean (γ∂L/∂y)·x̂. During `warmup_iters` steps the forward uses ψ_B instead.
  That forward and backward are an autograd Function of their own, in `powernorm_function.py`.

What the official code (sIncerass/powernorm, fairseq/modules/norms/mask_powernorm.py with
fairseq/modules/norm_select.py and trans-scripts/train/train-iwslt14.sh) does, and where we differ:

- It runs every token through GroupScaling (group_scaling.py; groups = encoder attention heads) in
  training and eval, before the statistics. Ours: `group_scaling` (default: on for sequences, off
  for images, which the official code never normalizes with PN).
- eps sits inside the root everywhere: sqrt(ψ² + eps). Same here.
- Warmup = the LR warmup (`warmup_iters=args.warmup_updates`, 8000 for IWSLT14); the step counter
  is incremented before the forward and steps 1..W use ψ_B. In warmup the backward is still
  Algorithm 2's approximation (ν term) and ν keeps being updated. Same here. The official code
  also folds a cumulative average into running_phi during warmup (before its EMA update), which
  mostly erases the initial value 1 at step 1; ours is the plain EMA at every step (the difference
  fades within ~1/(1−α_fwd) steps and never touches the forward after warmup).
- Its ν buffer `ema_gz` holds ν/(1−α_bkw): it computes x̃ = g − (1−α_bkw)·ema_gz·x̂ and adds
  mean(x̃·x̂) to ema_gz, which is Algorithm 2 after that rescaling. Ours stores the paper's ν.
- Its backward divides by the batch ψ_B even after warmup, while its forward divided by ψ_{t−1};
  Algorithm 2 divides by the ψ the forward used. Ours: `backward_phi="forward"` (Algorithm 2) by
  default, `"batch"` reproduces the official code.
- Its Γ and Λ average over all B·T positions, pads included (so ν depends on how much padding a
  batch has), and pads get the ν term in their gradient. Ours: real tokens only; a pad's gradient
  is γ∂L/∂y/ψ (pads never entered ψ_B), so pads change nothing at real tokens.
- It has no PN-V: `pnv` is PN with exact backprop, sharing the same group scaling so that the two
  differ only in what Algorithm 2 changes.

State (`running_phi`, `ema_gz`, `num_batches_tracked`) is all buffers, so a checkpoint restores it
and a resumed run continues bitwise. ν is updated in the backward pass: one backward per training
forward is assumed (no activation checkpointing, no double backward through the layer).

For the batch-statistics probe: `probe_kind = "pn"`, `running_phi` (ψ², the stored running
value), `last_batch_phi` (ψ²_B of the last training forward, detached, not saved), `feature_dim`,
`scaled_input` (the group-scaled input the statistics and x̂ run over) and
`differentiates_batch_phi` (True for PN-V only: PN's loss does not depend on ψ²_B).
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.errors import UserError
from normlab.norms import NORMS, check_groups, unsupported_layout
from normlab.norms.group_scaling import group_scale
from normlab.norms.powernorm_function import (
    PowerNormFunction,
    feature_mean,
    per_feature,
    stat_dtype,
)

BACKWARD_PHI = ("forward", "batch")


# -- the modules ---------------------------------------------------------------------------------
class _PowerNormBase(nn.Module):
    """What PN and PN-V share: layout, group scaling, affine, running ψ² and the probe's hooks."""

    probe_kind = "pn"  # the batch-statistics probe records ψ statistics for these layers
    differentiates_batch_phi = False  # does the loss depend on ψ²_B through this layer's forward?

    def __init__(
        self,
        num_features: int,
        layout: str,
        eps: float,
        affine: bool,
        group_scaling: bool,
        groups: int,
    ) -> None:
        super().__init__()
        self.num_features, self.layout, self.eps, self.affine = num_features, layout, eps, affine
        self.group_scaling, self.groups = group_scaling, groups
        self.feature_dim = 1 if layout == "image" else -1  # where the probe finds the features
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_phi", torch.ones(num_features))  # ψ², as the official code
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.last_batch_phi: torch.Tensor | None = None  # ψ²_B of the last training forward

    def extra_repr(self) -> str:
        scaling = f"groups={self.groups}" if self.group_scaling else "off"
        return (
            f"{self.num_features}, layout={self.layout}, eps={self.eps}, affine={self.affine}, "
            f"group_scaling={scaling}"
        )

    def scaled_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input the statistics and x̂ run over: `x` after group scaling, if that is on."""
        return group_scale(x, self.groups, self.eps) if self.group_scaling else x

    def _keep(self, pad_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The real-token mask (B, T), or None where every position counts (images, no mask)."""
        return None if pad_mask is None or self.layout == "image" else ~pad_mask.bool()

    def _batch_phi(self, z: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        return feature_mean(z.to(stat_dtype(z)).pow(2), self.layout, self._keep(pad_mask))

    def _normalize_with(self, z: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        y = z * per_feature(torch.rsqrt(phi + self.eps), self.layout)
        if self.affine:
            y = y * per_feature(self.weight, self.layout) + per_feature(self.bias, self.layout)
        return y


class PowerNormV(_PowerNormBase):
    """PN-V: divide by the batch quadratic mean ψ_B, exact gradients; `forward(x, pad_mask=None)`."""

    differentiates_batch_phi = True  # the probe records ∂L/∂ψ²_B for PN-V

    # No defaults here: the options' defaults are configs/norm/pnv.yaml's, mirrored (and checked
    # against it) by `build_powernorm_v`, which resolves group_scaling=None per layout first.
    def __init__(
        self,
        num_features: int,
        *,
        layout: str,
        momentum: float,
        eps: float,
        affine: bool,
        group_scaling: bool,
        groups: int,
    ) -> None:
        super().__init__(num_features, layout, eps, affine, group_scaling, groups)
        self.momentum = momentum

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}"

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        z = self.scaled_input(x)
        if not self.training:
            return self._normalize_with(z, self.running_phi)
        phi_b = self._batch_phi(z, pad_mask)  # differentiable: exact backprop through ψ_B
        with torch.no_grad():
            self.last_batch_phi = phi_b.detach()
            self.num_batches_tracked += 1
            m = self.momentum  # BN's convention: m is the weight of the NEW value
            self.running_phi.mul_(1 - m).add_(phi_b.to(self.running_phi.dtype), alpha=m)
        return self._normalize_with(z, phi_b)


class PowerNorm(_PowerNormBase):
    """PN (Algorithm 2): running ψ in the forward, approximate backward; `forward(x, pad_mask)`."""

    # No defaults here: the options' defaults are configs/norm/pn.yaml's, mirrored (and checked
    # against it) by `build_powernorm`, which resolves group_scaling=None per layout first.
    def __init__(
        self,
        num_features: int,
        *,
        layout: str,
        alpha_fwd: float,
        alpha_bkw: float,
        warmup_iters: int,
        eps: float,
        affine: bool,
        group_scaling: bool,
        groups: int,
        backward_phi: str,
    ) -> None:
        super().__init__(num_features, layout, eps, affine, group_scaling, groups)
        self.alpha_fwd, self.alpha_bkw = alpha_fwd, alpha_bkw
        self.warmup_iters, self.backward_phi = warmup_iters, backward_phi
        self.register_buffer("ema_gz", torch.zeros(num_features))  # ν of Algorithm 2

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, alpha_fwd={self.alpha_fwd}, alpha_bkw={self.alpha_bkw}, "
            f"warmup_iters={self.warmup_iters}, backward_phi={self.backward_phi}"
        )

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        z = self.scaled_input(x)
        if not self.training:
            return self._normalize_with(z, self.running_phi)
        keep = self._keep(pad_mask)
        with torch.no_grad():
            phi_b = self._batch_phi(z.detach(), pad_mask)
            self.num_batches_tracked += 1  # before the forward: steps 1..warmup_iters use ψ_B
            in_warmup = self.num_batches_tracked <= self.warmup_iters  # a tensor: no host sync
            phi_fwd = torch.where(in_warmup, phi_b, self.running_phi.to(phi_b.dtype))  # ψ²_{t−1}
        phi_bkw = phi_fwd if self.backward_phi == "forward" else phi_b
        y = PowerNormFunction.apply(
            z,
            self.weight,
            self.bias,
            phi_fwd,
            phi_bkw,
            phi_b,
            self.ema_gz,
            keep,
            self.alpha_bkw,
            self.eps,
            self.layout,
        )
        with torch.no_grad():
            self.last_batch_phi = phi_b
            a = self.alpha_fwd  # the paper's convention: α is the weight of the OLD value
            self.running_phi.mul_(a).add_(phi_b.to(self.running_phi.dtype), alpha=1 - a)
        return y


# -- builders ------------------------------------------------------------------------------------
def _resolve_group_scaling(
    name: str, layout: str, num_features: int, group_scaling: bool | None, groups: int
) -> bool:
    """None = the official code's choice: on for sequences, off for images."""
    if layout not in ("image", "sequence"):
        raise unsupported_layout(name, layout)
    if layout == "image":
        if group_scaling:
            raise UserError(
                "norm.group_scaling=true divides each token by the RMS of its groups of features "
                "and exists only for Transformers; set norm.group_scaling=false (or null) for "
                "image models"
            )
        return False
    enabled = True if group_scaling is None else bool(group_scaling)
    if enabled:
        heads = " (for group scaling, usually the attention heads)"
        check_groups(groups, num_features, "features", heads)
    return enabled


def _check_fraction(option: str, value: float, meaning: str, closed_right: bool = False) -> None:
    ok = 0 < value <= 1 if closed_right else 0 < value < 1
    if not ok:
        interval = "(0, 1]" if closed_right else "(0, 1)"
        raise UserError(f"norm.{option}={value} is outside {interval}: it is {meaning}")


@NORMS.register("pnv")
def build_powernorm_v(
    num_features: int,
    layout: str,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    group_scaling: bool | None = None,
    groups: int = 4,
) -> nn.Module:
    """PN-V; options as in configs/norm/pnv.yaml."""
    _check_fraction(
        "momentum", momentum, "the weight of the batch's ψ²_B in the running ψ² (BN: 0.1)", True
    )
    scaling = _resolve_group_scaling("pnv", layout, num_features, group_scaling, groups)
    return PowerNormV(
        num_features,
        layout=layout,
        momentum=momentum,
        eps=eps,
        affine=affine,
        group_scaling=scaling,
        groups=groups,
    )


@NORMS.register("pn")
def build_powernorm(
    num_features: int,
    layout: str,
    alpha_fwd: float = 0.9,
    alpha_bkw: float = 0.9,
    warmup_iters: int = 0,
    eps: float = 1e-5,
    affine: bool = True,
    group_scaling: bool | None = None,
    groups: int = 4,
    backward_phi: str = "forward",
) -> nn.Module:
    """PN (Algorithm 2); options as in configs/norm/pn.yaml."""
    old = "the weight of the old value in ψ²_t = α·ψ²_{t−1} + (1−α)·ψ²_B (official code: 0.9)"
    _check_fraction("alpha_fwd", alpha_fwd, old)
    _check_fraction("alpha_bkw", alpha_bkw, "the weight of the old ν in its running average (0.9)")
    if warmup_iters < 0:
        raise UserError(f"norm.warmup_iters={warmup_iters} is negative; use 0 for no warmup")
    if backward_phi not in BACKWARD_PHI:
        raise UserError(
            f"norm.backward_phi={backward_phi!r} is not one of {', '.join(BACKWARD_PHI)} "
            f"(forward: Algorithm 2; batch: the official code's ψ_B)"
        )
    scaling = _resolve_group_scaling("pn", layout, num_features, group_scaling, groups)
    return PowerNorm(
        num_features,
        layout=layout,
        alpha_fwd=alpha_fwd,
        alpha_bkw=alpha_bkw,
        warmup_iters=int(warmup_iters),
        eps=eps,
        affine=affine,
        group_scaling=scaling,
        groups=groups,
        backward_phi=backward_phi,
    )
