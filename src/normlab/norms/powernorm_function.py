"""PowerNorm's per-feature arithmetic and Algorithm 2 as an autograd Function: the forward
y = γ·x/ψ + β with a fixed ψ, and the paper's approximate backward with its running ν. The layers
that use it, what Algorithm 2 is and where the official code differs are in `powernorm.py`.
"""

from __future__ import annotations

import torch


# -- layout helpers ------------------------------------------------------------------------------
def feature_mean(t: torch.Tensor, layout: str, keep: torch.Tensor | None) -> torch.Tensor:
    """Per-feature mean over the statistic's positions: (N, H, W) of an image batch; the tokens of a
    (B, T, C) batch where `keep` (B, T) is True (all of them when `keep` is None)."""
    if layout == "image":
        return t.mean(dim=(0, 2, 3))
    rows = t.reshape(-1, t.shape[-1])
    if keep is not None:
        rows = rows[keep.reshape(-1)]
    if rows.shape[0] == 0:
        raise ValueError("PowerNorm needs at least 1 real token per batch, got 0")
    return rows.mean(dim=0)


def per_feature(v: torch.Tensor, layout: str) -> torch.Tensor:
    """A (C,) vector shaped to broadcast against the layout's activations."""
    return v.view(1, -1, 1, 1) if layout == "image" else v


def stat_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics in at least float32, as BatchNorm does under autocast."""
    return torch.promote_types(x.dtype, torch.float32)


# -- Algorithm 2's forward and approximate backward -------------------------------------------------
class PowerNormFunction(torch.autograd.Function):
    """y = γ·x/ψ + β with ψ = sqrt(phi_fwd + eps) a constant; the backward of Algorithm 2.

    `ema_gz` (ν) is read and updated in place in the backward: ν_{t−1} enters x̃, then becomes ν_t.
    `phi_bkw` is the ψ² the input gradient is divided by (Algorithm 2: the same as the forward's);
    `phi_b` is the batch's ψ²_B = mean x² over the statistic's positions, which gives Γ_t.

    Each pass over the activations costs a sizeable share of LayerNorm's whole fused kernel, so
    the arithmetic takes as few as the algebra allows. x̂ = x/ψ is never stored: the per-feature
    1/ψ goes into the (C,) coefficients instead. Forward: β + x·(γ/ψ), one pass. Backward:
    ∂L/∂y·x, its sum and ∂L/∂y's, and ∂L/∂x in two (Algorithm 2 written out term by term takes
    eleven). Γ_t = mean x̂² takes none: it is ψ²_B/(ψ²+eps).
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        phi_fwd: torch.Tensor,
        phi_bkw: torch.Tensor,
        phi_b: torch.Tensor,
        ema_gz: torch.Tensor,
        keep: torch.Tensor | None,
        alpha_bkw: float,
        eps: float,
        layout: str,
    ) -> torch.Tensor:
        dtype, ctx.x_dtype = stat_dtype(x), x.dtype
        x = x.to(dtype)
        inv_psi = torch.rsqrt(phi_fwd.to(dtype) + eps)  # 1/ψ_{t−1}
        if weight is None:
            y = x * per_feature(inv_psi, layout)
        else:
            scale = per_feature(weight.to(dtype) * inv_psi, layout)
            y = torch.addcmul(per_feature(bias.to(dtype), layout), x, scale)
        ctx.save_for_backward(x, inv_psi, phi_bkw.to(dtype), phi_b.to(dtype), weight, keep)
        ctx.ema_gz = ema_gz  # a buffer, mutated in the backward: not a saved tensor
        ctx.alpha_bkw, ctx.eps, ctx.layout = alpha_bkw, eps, layout
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        x, inv_psi, phi_bkw, phi_b, weight, keep = ctx.saved_tensors
        layout, nu = ctx.layout, ctx.ema_gz
        dims = (0, 2, 3) if layout == "image" else tuple(range(x.dim() - 1))
        grad_y = grad_y.to(x.dtype)
        gamma = 1.0 if weight is None else weight.to(x.dtype)
        # Γ_t = mean x̂² = ψ²_B/ψ²: ψ²_B is mean x² over the same positions
        gamma_t = phi_b * inv_psi * inv_psi
        # Σ ∂L/∂y·x̂ over every position is ∂L/∂γ; Λ_t = mean (γ∂L/∂y)·x̂ over the real ones
        gy_x = grad_y * x
        grad_w = gy_x.sum(dim=dims) * inv_psi
        if keep is None:
            lambda_t = gamma * grad_w / (x.numel() // grad_w.numel())
        else:
            lambda_t = gamma * inv_psi * feature_mean(gy_x, layout, keep)
        # ∂L/∂x = (γ∂L/∂y − ν_{t−1}·x̂)/ψ_bkw, pads without the ν term
        inv_psi_bkw = torch.rsqrt(phi_bkw + ctx.eps)
        x_real = x if keep is None else x * keep.unsqueeze(-1).to(x.dtype)
        nu_term = -nu.to(x.dtype) * inv_psi * inv_psi_bkw  # ν_{t−1}, before ν becomes ν_t
        grad_x = torch.addcmul(
            grad_y * per_feature(gamma * inv_psi_bkw, layout), x_real, per_feature(nu_term, layout)
        )
        with torch.no_grad():
            a = 1.0 - ctx.alpha_bkw
            nu.mul_((1.0 - a * gamma_t).to(nu.dtype)).add_((a * lambda_t).to(nu.dtype))
        grad_w, grad_b = (
            (None, None)
            if weight is None
            else (grad_w.to(weight.dtype), grad_y.sum(dim=dims).to(weight.dtype))
        )
        return grad_x.to(ctx.x_dtype), grad_w, grad_b, *([None] * 8)
