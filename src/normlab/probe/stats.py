"""The batch-statistics quantities of docs/design.md §2, as plain functions of per-feature vectors.

Inputs are 1-D tensors over the layer's d features: the batch statistics the forward pass used
(mu_b, var_b: biased) and the running statistics as stored *before* this step's update (mu, var).
Each function names the line of the docs/design.md §2 table it implements.
"""

from __future__ import annotations

import torch


def dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(1/d)·‖a − b‖₂ — "mean distance" D_μ and "variance distance" D_σ² (paper Fig. 2), and the
    PN analogue D_ψ² = (1/d)·‖ψ²_B − ψ²‖₂ (paper Fig. 4)."""
    return torch.linalg.vector_norm(a - b) / a.numel()


def rms_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(1/√d)·‖a − b‖₂ — the "RMS variants" (ours: neutral to the layer width d)."""
    return torch.linalg.vector_norm(a - b) / a.numel() ** 0.5


def l2_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a − b‖₂ unnormalized — `var_dist_l2` = ‖σ²_B − σ²‖₂ (ours: shows which width normalization,
    if any, brings a measurement to the paper's plotted values)."""
    return torch.linalg.vector_norm(a - b)


def participation_ratio(var_b: torch.Tensor) -> torch.Tensor:
    """(Σ_c σ²_c)² / Σ_c σ⁴_c of the per-feature batch variances (ours: feature concentration).

    d when every feature has the same variance, 1 when one feature carries all of it; NaN when
    every variance is zero (no spread to share).
    """
    return var_b.sum() ** 2 / (var_b * var_b).sum()


def max_var_share(var_b: torch.Tensor) -> torch.Tensor:
    """max_c σ²_c / Σ_c σ²_c: the largest single feature's share of the batch variance (ours).

    1/d when every feature has the same variance, 1 when one feature carries all of it.
    """
    return var_b.max() / var_b.sum()


def tid_mean(mu: torch.Tensor, mu_b: torch.Tensor, var_b: torch.Tensor, eps: float) -> torch.Tensor:
    """TID (mean) = (1/d)·Σ_c |μ_c − μ_B,c| / σ_B,c (Wang et al. 2022), σ_B with the layer's eps."""
    return ((mu - mu_b).abs() / (var_b + eps).sqrt()).mean()


def tid_var(var: torch.Tensor, var_b: torch.Tensor, eps: float) -> torch.Tensor:
    """TID (variance) = (1/d)·Σ_c |σ_c / σ_B,c − 1| (Wang et al. 2022)."""
    return ((var + eps).sqrt() / (var_b + eps).sqrt() - 1).abs().mean()


def tid_phi(phi: torch.Tensor, phi_b: torch.Tensor, eps: float) -> torch.Tensor:
    """(1/d)·Σ_c |ψ_c / ψ_B,c − 1|, ψ = sqrt(ψ² + eps): TID (variance) with the quadratic mean ψ²
    in place of σ² (ours: the scale-free companion of D_ψ², as tid_var is D_σ²'s)."""
    return ((phi + eps).sqrt() / (phi_b + eps).sqrt() - 1).abs().mean()


def grad_norm(g: torch.Tensor) -> torch.Tensor:
    """(1/d)·‖∂L/∂μ_B‖₂ and (1/d)·‖∂L/∂σ²_B‖₂ — gradients of the batch statistics (paper Fig. 3) —
    and the PN analogue (1/d)·‖∂L/∂ψ²_B‖₂ (paper Fig. 4)."""
    return torch.linalg.vector_norm(g) / g.numel()


def batch_stats_from_running_update(
    old_mean: torch.Tensor,
    old_var: torch.Tensor,
    new_mean: torch.Tensor,
    new_var: torch.Tensor,
    momentum: float,
    count: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """μ_B and the biased σ²_B, recovered from one running-average update.

    PyTorch updates running = (1 − m)·running + m·batch, storing the *unbiased* batch variance
    (n/(n−1) times the biased one the forward pass normalized with). Inverting the update costs two
    d-vector operations instead of a pass over the activations. The subtraction loses a few digits
    when m is small (relative error ~ 1e-7 / m in float32); computed in float64 to keep them.
    """
    m = float(momentum)
    mu_b = (new_mean.double() - (1 - m) * old_mean.double()) / m
    var_unbiased = (new_var.double() - (1 - m) * old_var.double()) / m
    var_b = var_unbiased * (count - 1) / count
    return mu_b, var_b
