"""The batch-statistics probe: per training step, how far each BN-family layer's batch statistics
sit from its running statistics, and the gradients of the loss with respect to those statistics.

It sees norm modules only (any model built from the norm factory, or a user's own, works):
- BN-family = a module in training mode with `running_mean`/`running_var` buffers and a `momentum`
  (nn.BatchNorm1d/2d/3d, SyncBatchNorm, normlab's masked sequence BN). Features sit on dim 1, or on
  the dim the module names in `feature_dim` (sequence norms: -1). A `pad_mask` argument (True at
  pads) keeps pads out of every statistic.
- A layer whose statistics run over rows derived from its input (`layer_scaling`, or
  `pads_in_statistics` for `bn_official`, which normalizes all T·B positions with the pads
  mean-filled) provides them through `statistic_inputs(x, pad_mask)`: μ_B, σ²_B, `count` (the
  number of those rows: T·B for `bn_official`, the real tokens otherwise) and the gradient sums refer
  to exactly those rows; with `pads_in_statistics` the output gradient is summed over every
  position. `real_fraction` is the batch's share of real (non-pad) positions, 1.0 for a layer
  called without a pad mask (images: every position is a value).
- Feature concentration of σ²_B: `participation_ratio` (Σ_c σ²_c)²/Σ_c σ⁴_c (d: all features
  equal, 1: one feature carries everything) and `max_var_share` max_c σ²_c/Σ_c σ²_c.
- μ_B and σ²_B are recovered from the running-average update (snapshot before the forward, invert
  the EMA after it): two d-vector operations instead of a pass over the activations.
- The gradients need one pass over the layer's output gradient in the backward pass:
  ∂L/∂μ_B = −γ/√(σ²_B+ε) · Σᵢ ∂L/∂yᵢ and ∂L/∂σ²_B = −γ/2 · (σ²_B+ε)^(−3/2) · Σᵢ ∂L/∂yᵢ (xᵢ − μ_B),
  the partial derivatives through y = γ(x − μ_B)/√(σ²_B+ε) + β (the σ²_B path adds nothing to
  ∂L/∂μ_B because Σᵢ(xᵢ − μ_B) = 0), which equal autograd's through an explicit BN.
- PowerNorm-family = a module in training mode with a `running_phi` buffer (the running quadratic
  mean ψ²) and the class attribute `probe_kind = "pn"` (normlab's `pn` and `pnv`). Its rows, kind
  "pn", hold the ψ analogues of the BN columns: phi_dist = (1/d)‖ψ²_B − ψ²‖₂ against the running ψ²
  before the step's update, its 1/√d variant, tid_phi, batch_phi_mean, and grad_phi. ψ²_B is read
  from the layer itself (`last_batch_phi`, stored by its forward), which is exact whatever the
  layer's running-average convention. grad_phi = (1/d)‖∂L/∂ψ²_B‖₂ with
  ∂L/∂ψ²_B = −γ/2 · (ψ²_B+ε)^(−3/2) · Σᵢ ∂L/∂yᵢ zᵢ, the partial derivative through y = γz/√(ψ²_B+ε) + β
  (z: the layer's input after its group scaling, `scaled_input`), recorded only for layers whose
  forward divides by ψ_B with exact gradients (`differentiates_batch_phi`, i.e. PN-V). PN divides by
  the running ψ_{t−1} and backpropagates Algorithm 2's approximation: its loss does not depend on
  ψ²_B, so there is no ∂L/∂ψ²_B to record and grad_phi stays NaN rather than a hypothetical number.
- Multi-process runs (torchrun): every rank runs the probe. A layer with per-rank statistics gives
  each rank's own μ_B, σ²_B and gradients (read before the gradients are averaged; the trainer
  stores rank r's rows apart from rank 0's); a layer with synchronized statistics gives the global ones: `count` is the layer's
  `last_count` (all ranks' values), and the trainer sets `reduce_grad_sums` to an all-reduce mean so
  that the hooked gradient sums are those of the global batch, as γ/β's are after averaging.
- LayerNorm-family layers (LayerNorm, GroupNorm with one group) have no running statistics: for
  them the probe records, clearly named `*_drift`, how much the per-feature batch mean/variance of
  their input changes from one probed step to the next — a comparison series, not D_μ/D_σ².

One file although it is longer than the house's ~350 lines: the notes above specify every column,
and the code computing them shares one per-layer state (`_Layer`) between the forward pre-hook, the
forward hook and the backward hook, so each formula, its note and the hooks it needs read together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from normlab.probe import stats

BN_COLUMNS = (
    "mean_dist",  # D_μ = (1/d)‖μ_B − μ‖₂
    "var_dist",  # D_σ² = (1/d)‖σ²_B − σ²‖₂
    "mean_rms_dist",  # (1/√d)‖μ_B − μ‖₂
    "var_rms_dist",  # (1/√d)‖σ²_B − σ²‖₂
    "tid_mean",
    "tid_var",
    "grad_mean",  # (1/d)‖∂L/∂μ_B‖₂
    "grad_var",  # (1/d)‖∂L/∂σ²_B‖₂
    "batch_var_mean",  # mean_c σ²_B,c: the input's scale, which the 1/d distances track
    "var_dist_l2",  # ‖σ²_B − σ²‖₂, unnormalized
    "participation_ratio",  # (Σ_c σ²_B,c)² / Σ_c σ⁴_B,c: d if spread evenly, 1 if one feature
    "max_var_share",  # max_c σ²_B,c / Σ_c σ²_B,c
    "real_fraction",  # real (non-pad) share of the batch's positions; 1.0 without a pad mask
)
PN_COLUMNS = (
    "phi_dist",  # D_ψ² = (1/d)‖ψ²_B − ψ²‖₂ (paper Fig. 4), comparable with BN's var_dist
    "phi_rms_dist",  # (1/√d)‖ψ²_B − ψ²‖₂
    "tid_phi",  # (1/d)Σ_c |ψ_c/ψ_B,c − 1|: the scale-free analogue of tid_var
    "grad_phi",  # (1/d)‖∂L/∂ψ²_B‖₂ (PN-V only; NaN for PN, whose loss does not depend on ψ²_B)
    "batch_phi_mean",  # mean_c ψ²_B,c: the input's scale, which the 1/d distances track
)
DRIFT_COLUMNS = ("mean_drift", "var_drift")


def is_bn_family(m: nn.Module) -> bool:
    return (
        isinstance(getattr(m, "running_mean", None), torch.Tensor)
        and isinstance(getattr(m, "running_var", None), torch.Tensor)
        and hasattr(m, "momentum")
    )


def is_pn_family(m: nn.Module) -> bool:
    return getattr(type(m), "probe_kind", None) == "pn" and isinstance(
        getattr(m, "running_phi", None), torch.Tensor
    )


def is_ln_family(m: nn.Module) -> bool:
    return isinstance(m, nn.LayerNorm) or (isinstance(m, nn.GroupNorm) and m.num_groups == 1)


def _feature_dim(m: nn.Module, x: torch.Tensor) -> int:
    if isinstance(m, nn.LayerNorm):
        return x.dim() - 1
    return getattr(m, "feature_dim", 1) % x.dim()


def _pad_mask(args: tuple, kwargs: dict) -> torch.Tensor | None:
    mask = kwargs.get("pad_mask")
    if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
        mask = args[1]
    return mask


def _grads_from_affine(module: nn.Module, keep: torch.Tensor | None) -> bool:
    """Whether ∂L/∂γ and ∂L/∂β of this layer are the sums over exactly the statistic's positions:
    PyTorch's BatchNorm with an affine and no padding (pads, or a layer-scaled input, take the
    hook path that sums over real tokens only)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return isinstance(module, _BatchNorm) and module.affine and keep is None


def _per_feature_sums(t: torch.Tensor, feature_dim: int, keep: torch.Tensor | None) -> torch.Tensor:
    """Σ over every position except the feature dim, only where `keep` (non-pad tokens)."""
    if keep is not None:
        t = t * keep.unsqueeze(-1).to(t.dtype)
    dims = [d for d in range(t.dim()) if d != feature_dim]
    return t.sum(dim=dims)


class _Layer:
    """Per-layer state between the forward pre-hook, the forward hook and the backward hook."""

    def __init__(self, name: str, index: int, module: nn.Module, kind: str) -> None:
        self.name, self.index, self.module, self.kind = name, index, module, kind
        self.row: dict[str, Any] | None = None
        self.pending: tuple | None = None  # gradients to read from γ/β after the backward
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None  # LN drift: last step's stats


class BatchStatsProbe:
    """Attach to a model; call `begin_step(step)` before the forward and `end_step(...)` after the
    optimizer step; `end_step` returns the rows of that step (one per layer)."""

    def __init__(
        self,
        model: nn.Module,
        every: int = 1,
        layers: str | Iterable[str] = "all",
        gradients: bool = True,
        ln_drift: bool = True,
    ) -> None:
        self.every = max(1, int(every))
        self.gradients = gradients
        found = []
        for name, m in model.named_modules():
            if is_bn_family(m):
                found.append((name, m, "bn"))
            elif is_pn_family(m):
                found.append((name, m, "pn"))
            elif ln_drift and is_ln_family(m):
                found.append((name, m, "ln"))
        self.layers = [_Layer(n, i, m, k) for i, (n, m, k) in enumerate(found)]
        if layers == "first":
            with_running = [lay for lay in self.layers if lay.kind in ("bn", "pn")]
            self.layers = with_running[:1] or self.layers[:1]
        elif layers != "all":
            wanted = set(layers)
            unknown = wanted - {lay.name for lay in self.layers}
            if unknown:
                from normlab.errors import UserError

                names = ", ".join(lay.name for lay in self.layers) or "(none)"
                raise UserError(
                    f"probe.layers names {sorted(unknown)} that are not norm layers of this model; "
                    f"its norm layers are: {names}"
                )
            self.layers = [lay for lay in self.layers if lay.name in wanted]
        self.active = False
        # Multi-process runs with synchronized BN: turns the gradient sums a backward hook took over
        # this rank's positions into the global batch's (an all-reduce mean); None = this rank's.
        self.reduce_grad_sums: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._handles = []
        for layer in self.layers:
            pre = layer.module.register_forward_pre_hook(self._pre_hook(layer), with_kwargs=True)
            post = layer.module.register_forward_hook(self._post_hook(layer), with_kwargs=True)
            self._handles += [pre, post]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the LN drift series exactly."""
        return {lay.name: lay.prev for lay in self.layers if lay.prev is not None}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        """`device`: the model's. A checkpoint is read onto the CPU, and the next step's
        statistics, on the model's device, are compared with these."""
        for lay in self.layers:
            prev = state.get(lay.name)
            lay.prev = None if prev is None else tuple(t.to(device) for t in prev)

    @property
    def layer_names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    # ------------------------------------------------------------------------- per step
    def begin_step(self, step: int) -> None:
        """`step` is the number of the step about to run (1-based, as logged)."""
        self.active = step % self.every == 0 or step == 1
        for layer in self.layers:
            layer.row = None
            layer.pending = None

    def after_backward(self) -> None:
        """Read the gradients that the backward left in the BN layers' γ and β (call before the
        optimizer step or any gradient clipping); `end_step` does it if it has not been done."""
        for layer in self.layers:
            if layer.pending is None:
                continue
            module, row, var_b, eps = layer.pending
            layer.pending = None
            if module.weight.grad is None or module.bias.grad is None:
                continue
            gamma = module.weight.detach().double()
            sum_g = module.bias.grad.detach().double()  # Σᵢ ∂L/∂yᵢ
            sum_gx = module.weight.grad.detach().double()  # Σᵢ ∂L/∂yᵢ·x̂ᵢ
            row["grad_mean"] = stats.grad_norm(-gamma * (var_b + eps).rsqrt() * sum_g)
            row["grad_var"] = stats.grad_norm(-0.5 * gamma / (var_b + eps) * sum_gx)

    def end_step(self, step: int, epoch: int, frac: float) -> list[dict[str, Any]]:
        self.after_backward()
        rows = []
        if self.active:
            for layer in self.layers:
                if layer.row is not None:
                    rows.append({"step": step, "epoch": epoch, "frac": frac} | layer.row)
        self.active = False
        return rows

    # ------------------------------------------------------------------------- hooks
    def _pre_hook(self, layer: _Layer):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not (self.active and module.training):
                return
            x = args[0]
            fdim = _feature_dim(module, x)
            mask = _pad_mask(args, kwargs)
            keep = None if mask is None else ~mask.bool()
            if keep is None:
                count, real_fraction = x.numel() // x.shape[fdim], 1.0
            else:  # left on the device (0-dim tensors) until the trainer copies the rows back
                count = keep.sum()
                real_fraction = count.double() / keep.numel()  # as the Python int / int
            if layer.kind == "pn":
                layer._old = module.running_phi.detach().clone()
                # grad_phi needs the normalized quantity z (after group scaling), PN-V only.
                exact = getattr(module, "differentiates_batch_phi", False)
                z = module.scaled_input(x.detach()) if self.gradients and exact else None
                layer._ctx = (z, fdim, keep, count, None, real_fraction)
                return
            grad_rows = None
            over_pads = getattr(module, "pads_in_statistics", False)
            if over_pads or getattr(module, "layer_scaling", False):
                # The statistics run over rows the layer derives from its input (its rescaled real
                # tokens; for bn_official every position, pads mean-filled), not its raw input:
                # take those rows (n, C), and the matching rows of the output gradient in the
                # backward (all of them when the pads are part of the statistics).
                grad_rows = None if over_pads else keep
                x = module.statistic_inputs(x.detach(), mask)
                fdim, keep, count = 1, None, x.shape[0]
            layer._ctx = (x, fdim, keep, count, grad_rows, real_fraction)
            if layer.kind == "bn":
                layer._old = (
                    module.running_mean.detach().clone(),
                    module.running_var.detach().clone(),
                )

        return hook

    def _post_hook(self, layer: _Layer):
        def hook(module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
            if not (self.active and module.training) or not hasattr(layer, "_ctx"):
                return
            x, fdim, keep, count, grad_rows, real_fraction = layer._ctx
            del layer._ctx
            if layer.kind == "bn":
                self._bn_row(layer, module, x, fdim, keep, count, out, grad_rows, real_fraction)
            elif layer.kind == "pn":
                self._pn_row(layer, module, x, fdim, keep, count, out)
            else:
                self._ln_row(layer, x, fdim, keep, count)

        return hook

    def _bn_row(
        self, layer, module, x, fdim, keep, count, out, grad_rows=None, real_fraction=1.0
    ) -> None:
        old_mean, old_var = layer._old
        del layer._old
        last_count = getattr(module, "last_count", None)  # all ranks' count if synchronized
        if last_count is not None:  # (`or` would read a tensor count from the device)
            count = last_count
        momentum = module.momentum
        if momentum is None:  # cumulative moving average: the weight of this batch is 1/n
            momentum = 1.0 / float(module.num_batches_tracked)
        mu_b, var_b = stats.batch_stats_from_running_update(
            old_mean, old_var, module.running_mean, module.running_var, momentum, count
        )
        mu, var = old_mean.double(), old_var.double()
        eps = float(module.eps)
        row = {
            "layer": layer.name,
            "layer_index": layer.index,
            "kind": "bn",
            "d": mu.numel(),
            "count": count,
            "mean_dist": stats.dist(mu_b, mu),
            "var_dist": stats.dist(var_b, var),
            "mean_rms_dist": stats.rms_dist(mu_b, mu),
            "var_rms_dist": stats.rms_dist(var_b, var),
            "tid_mean": stats.tid_mean(mu, mu_b, var_b, eps),
            "tid_var": stats.tid_var(var, var_b, eps),
            "batch_var_mean": var_b.mean(),
            "var_dist_l2": stats.l2_dist(var_b, var),
            "participation_ratio": stats.participation_ratio(var_b),
            "max_var_share": stats.max_var_share(var_b),
            "real_fraction": real_fraction,
            "grad_mean": math.nan,
            "grad_var": math.nan,
        }
        layer.row = row
        if self.gradients and out.requires_grad and _grads_from_affine(module, keep):
            # y = γ·x̂ + β over every position, so autograd's own ∂L/∂β = Σᵢ ∂L/∂yᵢ and
            # ∂L/∂γ = Σᵢ ∂L/∂yᵢ·x̂ᵢ are exactly the two sums the formulas need: the gradients cost
            # nothing beyond reading them after the backward (`after_backward`).
            layer.pending = (module, row, var_b, eps)
        elif self.gradients and out.requires_grad:
            gamma = module.weight.detach().double() if module.weight is not None else 1.0
            reduce = self.reduce_grad_sums if getattr(module, "sync_stats", False) else None

            def grad_hook(g: torch.Tensor) -> None:
                if x.dim() == 2 and g.dim() == 3:  # layer scaling: statistics over (N, C) rows
                    g = g[grad_rows] if grad_rows is not None else g.reshape(-1, g.shape[-1])
                s_g = _per_feature_sums(g.float(), fdim, keep).double()
                s_gx = _per_feature_sums((g * x.detach()).float(), fdim, keep).double()
                if reduce is not None:
                    s_g, s_gx = reduce(torch.stack([s_g, s_gx]))
                inv_std = (var_b + eps).rsqrt()
                d_mu = -gamma * inv_std * s_g
                d_var = -0.5 * gamma * inv_std**3 * (s_gx - mu_b * s_g)
                row["grad_mean"] = stats.grad_norm(d_mu)
                row["grad_var"] = stats.grad_norm(d_var)

            out.register_hook(grad_hook)

    def _pn_row(self, layer, module, z, fdim, keep, count, out) -> None:
        old_phi = layer._old
        del layer._old
        phi_b, phi = module.last_batch_phi.double(), old_phi.double()
        eps = float(module.eps)
        row = {
            "layer": layer.name,
            "layer_index": layer.index,
            "kind": "pn",
            "d": phi.numel(),
            "count": count,
            "phi_dist": stats.dist(phi_b, phi),
            "phi_rms_dist": stats.rms_dist(phi_b, phi),
            "tid_phi": stats.tid_phi(phi, phi_b, eps),
            "batch_phi_mean": phi_b.mean(),
            "grad_phi": math.nan,
        }
        layer.row = row
        if z is not None and out.requires_grad:
            gamma = module.weight.detach().double() if module.weight is not None else 1.0

            def grad_hook(g: torch.Tensor) -> None:
                s_gz = _per_feature_sums((g * z).float(), fdim, keep).double()
                d_phi = -0.5 * gamma * (phi_b + eps) ** -1.5 * s_gz
                row["grad_phi"] = stats.grad_norm(d_phi)

            out.register_hook(grad_hook)

    def _ln_row(self, layer, x, fdim, keep, count) -> None:
        xd = x.detach().float()
        s1 = _per_feature_sums(xd, fdim, keep).double() / count
        s2 = _per_feature_sums(xd * xd, fdim, keep).double() / count
        mean, var = s1, (s2 - s1 * s1).clamp_min(0)
        row = {
            "layer": layer.name,
            "layer_index": layer.index,
            "kind": "ln",
            "d": mean.numel(),
            "count": count,
            "batch_var_mean": var.mean(),
        }
        if layer.prev is not None:
            row["mean_drift"] = stats.dist(mean, layer.prev[0])
            row["var_drift"] = stats.dist(var, layer.prev[1])
        layer.prev = (mean, var)
        layer.row = row
