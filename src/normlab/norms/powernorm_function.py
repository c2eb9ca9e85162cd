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
    `phi_bkw` is the ψ² the input gradient is divided by (Algorithm 2: the same as the forward's).
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        phi_fwd: torch.Tensor,
        phi_bkw: torch.Tensor,
        ema_gz: torch.Tensor,
        keep: torch.Tensor | None,
        alpha_bkw: float,
        eps: float,
        layout: str,
    ) -> torch.Tensor:
        dtype = stat_dtype(x)
        xhat = x.to(dtype) * per_feature(torch.rsqrt(phi_fwd.to(dtype) + eps), layout)
        y = xhat
        if weight is not None:
            y = xhat * per_feature(weight.to(dtype), layout) + per_feature(bias.to(dtype), layout)
        ctx.save_for_backward(xhat, phi_bkw, weight, keep)
        ctx.ema_gz = ema_gz  # a buffer, mutated in the backward: not a saved tensor
        ctx.alpha_bkw, ctx.eps, ctx.layout, ctx.x_dtype = alpha_bkw, eps, layout, x.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        xhat, phi_bkw, weight, keep = ctx.saved_tensors
        layout, nu = ctx.layout, ctx.ema_gz
        grad_y = grad_y.to(xhat.dtype)
        g = grad_y if weight is None else grad_y * per_feature(weight.to(xhat.dtype), layout)
        gamma_t = feature_mean(xhat * xhat, layout, keep)  # Γ_t
        lambda_t = feature_mean(g * xhat, layout, keep)  # Λ_t
        xhat_real = xhat if keep is None else xhat * keep.unsqueeze(-1).to(xhat.dtype)
        x_tilde = g - per_feature(nu.to(xhat.dtype), layout) * xhat_real  # ν_{t−1}
        grad_x = x_tilde * per_feature(torch.rsqrt(phi_bkw.to(xhat.dtype) + ctx.eps), layout)
        with torch.no_grad():
            a = 1.0 - ctx.alpha_bkw
            nu.mul_((1.0 - a * gamma_t).to(nu.dtype)).add_((a * lambda_t).to(nu.dtype))
        grad_w = grad_b = None
        if weight is not None:
            dims = (0, 2, 3) if layout == "image" else tuple(range(grad_y.dim() - 1))
            grad_w = (grad_y * xhat).sum(dim=dims).to(weight.dtype)
            grad_b = grad_y.sum(dim=dims).to(weight.dtype)
        return grad_x.to(ctx.x_dtype), grad_w, grad_b, None, None, None, None, None, None, None
