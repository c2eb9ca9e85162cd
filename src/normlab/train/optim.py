"""Optimizers and learning-rate schedules, built from `configs/optim/<name>.yaml`.

Schedules are step-wise `LambdaLR`s whose milestones are given in epochs of the chosen scale and
converted with the task's steps per epoch, so a scale that shortens training keeps the recipe's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from normlab.errors import UserError


def _no_decay(name: str, p: nn.Parameter) -> bool:
    # Weight decay on norm gains/biases is what the paper's recipes do (PyTorch default): keep it,
    # but make excluding them one switch away (optim.decay_norm_and_bias=false).
    return p.ndim <= 1


def build_optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    name = cfg["name"]
    params: Any = model.parameters()
    if not cfg.get("decay_norm_and_bias", True):
        named = list(model.named_parameters())
        params = [
            {"params": [p for n, p in named if not _no_decay(n, p)]},
            {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0},
        ]
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg.get("momentum", 0.0),
            weight_decay=cfg.get("weight_decay", 0.0),
            nesterov=cfg.get("nesterov", False),
        )
    if name in ("adam", "adamw"):
        # fairseq's Adam decays weights decoupled from the gradient, which is torch's AdamW.
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(
            params,
            lr=cfg["lr"],
            betas=tuple(cfg.get("betas", (0.9, 0.999))),
            eps=cfg.get("eps", 1e-8),
            weight_decay=cfg.get("weight_decay", 0.0),
        )
    raise UserError(f"unknown optimizer {name!r}; valid names: sgd, adam, adamw")


def lr_factor(cfg: Mapping[str, Any], steps_per_epoch: int, base_lr: float = 1.0):
    """step -> multiplier of the base lr, for the schedule in `cfg` (a dict with `name`)."""
    name = cfg["name"]
    if name == "constant":
        return lambda step: 1.0
    if name == "multistep":
        # milestones in epochs: lr is multiplied by gamma once each milestone epoch has started
        bounds = [int(round(m * steps_per_epoch)) for m in cfg["milestones"]]
        gamma = float(cfg.get("gamma", 0.1))
        return lambda step: gamma ** sum(step >= b for b in bounds)
    if name == "inverse_sqrt":
        # fairseq's inverse_sqrt: linear warmup from warmup_init_lr, then lr * sqrt(warmup / step)
        warmup = int(cfg["warmup_steps"])
        init = float(cfg.get("warmup_init_lr", 0.0)) / base_lr

        def factor(step: int) -> float:  # step = updates done so far, as fairseq's num_updates
            if step < warmup:
                return init + (1 - init) * step / warmup
            return (warmup / step) ** 0.5

        return factor
    raise UserError(f"unknown lr schedule {name!r}; valid names: constant, multistep, inverse_sqrt")


def build_scheduler(
    cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch, base_lr))
