"""BN layers' statistics for inference: PreciseBN population statistics over batches, and BN
normalizing each batch with its own statistics at test time.

Used by normlab.train.inference_stats, which tests a finished run's weights three ways (EMA running
statistics, population statistics, each evaluation batch's own statistics); see its docstring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.norms.masked_batchnorm import MaskedBatchNorm
from normlab.norms.official_batchnorm import OfficialMaskedBatchNorm

# normlab's BN layers over (B, T, C) tokens; each has statistic_inputs(x, pad_mask), the rows its
# statistics run over (masked BN: the real tokens; bn_official: all T·B positions, pads mean-filled).
SEQUENCE_BN = (MaskedBatchNorm, OfficialMaskedBatchNorm)

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def bn_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every BN-family layer that keeps running statistics, in module order:
    PyTorch's BatchNorm (1d/2d/3d, SyncBatchNorm) and normlab's sequence BNs (SEQUENCE_BN)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (_BatchNorm, *SEQUENCE_BN)) and m.running_mean is not None
    ]


def _pad_mask(args: tuple, kwargs: dict) -> torch.Tensor | None:
    return kwargs.get("pad_mask", args[1] if len(args) > 1 else None)


def _statistic_rows(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """The (N, C) matrix a layer's batch statistics run over: for the masked BN its real tokens
    (after its layer scaling, if on), for bn_official all positions (layer-scaled, pads
    mean-filled); for PyTorch's BN every position, features on dim 1."""
    x = args[0]
    if isinstance(module, SEQUENCE_BN):
        return module.statistic_inputs(x, _pad_mask(args, kwargs))
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _batch_forward(module: nn.Module) -> Callable[..., torch.Tensor]:
    own_forward = type(module).forward

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        # The layer's own training-mode forward, so its statistics are exactly training's (pads
        # masked, layer scaling, float32), on scratch copies of its buffers so that the running
        # update it makes is thrown away. `training` is set here, per call, because evaluators
        # (beam search, evaluate_classifier) call model.eval() themselves.
        saved = {k: getattr(module, k) for k in _BUFFERS}
        was_training = module.training
        for k, v in saved.items():
            if v is not None:
                setattr(module, k, v.clone())
        module.training = True
        try:
            return own_forward(module, *args, **kwargs)
        finally:
            module.training = was_training
            for k, v in saved.items():
                setattr(module, k, v)

    return forward


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[list[str]]:
    """Within: every BN-family layer normalizes each batch with that batch's own statistics (pads
    left out) and leaves its running buffers untouched; every other module is in eval mode, and
    stays so whatever an evaluator does with model.eval(). Yields the names of the BN layers."""
    was_training = model.training
    layers = bn_layers(model)
    model.eval()
    for _, m in layers:
        m.forward = _batch_forward(m)  # an instance attribute shadows the class's forward
    try:
        yield [name for name, _ in layers]
    finally:
        for _, m in layers:
            m.__dict__.pop("forward", None)
        model.train(was_training)


@dataclass(frozen=True)
class PopulationStats:
    mean: torch.Tensor  # float64, per feature
    var: torch.Tensor  # float64, biased (divided by count)
    count: int  # values per feature


def collect_population_stats(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[Any], Any] | None = None,
    *,
    max_batches: int | None = None,
    min_values: int | None = None,
) -> tuple[dict[str, PopulationStats], int]:
    """Population mean and biased variance of every BN-family layer's input over `batches`, with
    the model in `batch_statistics` mode (BN on batch statistics as in training, no dropout).

    `forward(batch)` runs the model on a batch (default `model(batch)`). It stops after
    `max_batches`, or once every layer has `min_values` values per feature, or when `batches` ends.
    Returns the statistics by layer name and the number of batches used.
    """
    forward = model if forward is None else forward
    layers = bn_layers(model)
    sums: dict[str, list] = {}  # name -> [Σx, Σx², n], float64

    def accumulate(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            rows = _statistic_rows(module, args, kwargs).detach().double()
            s = sums.setdefault(name, [0.0, 0.0, 0])
            s[0] = s[0] + rows.sum(0)
            s[1] = s[1] + (rows * rows).sum(0)
            s[2] += rows.shape[0]

        return hook

    handles = [m.register_forward_pre_hook(accumulate(n), with_kwargs=True) for n, m in layers]
    used = 0
    try:
        with batch_statistics(model), torch.no_grad():
            for batch in batches:
                forward(batch)
                used += 1
                if max_batches is not None and used >= max_batches:
                    break
                complete = len(sums) == len(layers)
                if (
                    min_values is not None
                    and complete
                    and min(s[2] for s in sums.values()) >= min_values
                ):
                    break
    finally:
        for h in handles:
            h.remove()
    unseen = [name for name, _ in layers if name not in sums]
    if unseen:
        raise ValueError(f"BN layers {unseen} saw no input in {used} batches")
    stats = {}
    for name, (s1, s2, n) in sums.items():
        mean = s1 / n
        stats[name] = PopulationStats(mean, (s2 / n - mean * mean).clamp_min(0), n)
    return stats, used


@torch.no_grad()
def install_population_stats(model: nn.Module, stats: dict[str, PopulationStats]) -> None:
    """Make `stats` the running statistics of the model's BN-family layers."""
    for name, m in bn_layers(model):
        m.running_mean.copy_(stats[name].mean.to(m.running_mean.dtype))
        # The *biased* population variance: in eval mode BN divides by √(running_var + ε) as it
        # is, and in training it divides by the biased variance of the positions it normalizes,
        # so the biased variance of the population is the matching quantity. (PyTorch's EMA stores
        # unbiased batch variances because a batch is a small sample; here the n ≥ 10⁵ positions
        # are the population measured, and n/(n−1) would change it by < 10⁻⁵ anyway.)
        m.running_var.copy_(stats[name].var.to(m.running_var.dtype))


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{k}": getattr(m, k).clone()
        for name, m in bn_layers(model)
        for k in _BUFFERS
        if getattr(m, k, None) is not None
    }


@torch.no_grad()
def restore_bn_buffers(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    for name, m in bn_layers(model):
        for k in _BUFFERS:
            if f"{name}.{k}" in saved:
                getattr(m, k).copy_(saved[f"{name}.{k}"])


def ema_vs_population(model: nn.Module, stats: dict[str, PopulationStats]) -> dict[str, Any]:
    """Per layer, how far the EMA statistics sit from the population's: the probe's D_μ and D_σ²
    ((1/d)‖·‖₂) and the scale-free mean_c |σ²_ema/σ²_pop − 1|."""
    out = {}
    for name, m in bn_layers(model):
        mu, var = m.running_mean.double(), m.running_var.double()
        pop = stats[name]
        d = mu.numel()
        out[name] = {
            "mean_dist": float((mu - pop.mean).norm() / d),
            "var_dist": float((var - pop.var).norm() / d),
            "var_rel": float((var / pop.var.clamp_min(1e-30) - 1).abs().mean()),
        }
    return out


def values_per_batch(module: nn.Module, args: tuple, kwargs: dict) -> int:
    x, mask = args[0], _pad_mask(args, kwargs)
    if isinstance(module, OfficialMaskedBatchNorm):  # its statistics count the pads too
        return int(x.shape[0] * x.shape[1])
    if isinstance(module, MaskedBatchNorm):
        return int(x.shape[0] * x.shape[1]) if mask is None else int((~mask).sum())
    return x.numel() // x.shape[1]
