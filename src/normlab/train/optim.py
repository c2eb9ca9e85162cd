"""Optimizers and learning-rate schedules, built from `configs/optim/<name>.yaml`.

Schedules are step-wise `LambdaLR`s whose milestones are given in epochs of the chosen scale and
converted with the task's steps per epoch, so a scale that shortens training keeps the recipe's shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from normlab.errors import UserError


def _no_decay(name: str, p: nn.Parameter) -> bool:
    # Weight decay on norm gains/biases is what the paper's recipes do (PyTorch default): keep it,
    # but make excluding them one switch away (optim.decay_norm_and_bias=false).
    return p.ndim <= 1


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "multistep", "inverse_sqrt", "cosine")
# key -> (lowest allowed, whether the lowest is allowed, highest allowed or None, what it is)
_RANGES = {
    "lr": (0.0, False, None, "the learning rate, a positive number, e.g. {key}=0.1"),
    "momentum": (0.0, True, 1.0, "SGD's momentum, in [0, 1), e.g. {key}=0.9"),
    "weight_decay": (0.0, True, None, "a weight decay of 0 or more, e.g. {key}=1e-4"),
    "eps": (0.0, False, None, "Adam's epsilon, a small positive number, e.g. {key}=1e-8"),
    "gamma": (0.0, False, None, "the lr factor at each milestone, e.g. {key}=0.1"),
    "warmup_steps": (0.0, True, None, "a number of steps, 0 or more, e.g. {key}=100"),
    "warmup_init_lr": (0.0, True, None, "the lr at step 0 of the warmup, e.g. {key}=1e-7"),
    "min_lr": (0.0, True, None, "the lr the cosine ends at, 0 or more, e.g. {key}=1e-5"),
    "epochs": (0.0, False, None, "the cosine's length in epochs, e.g. {key}=${{trainer.epochs}}"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_value(key: str, value: Any) -> None:
    low, low_ok, high, what = _RANGES[key.rpartition(".")[2]]
    fix = what.format(key=key)
    if not _is_number(value):
        raise UserError(f"{key}={value!r} is not a number; give {fix}")
    if value < low or (value == low and not low_ok) or (high is not None and value >= high):
        raise UserError(f"{key}={value!r} is out of range; give {fix}")


def check_optim_config(cfg: Mapping[str, Any]) -> None:
    """One sentence naming the key, the value and the fix for an optimizer or schedule setting
    that torch would reject with a traceback (or silently accept, as a negative lr)."""
    name = cfg.get("name")
    if name not in OPTIMIZERS:
        raise UserError(
            f"optim.name={name!r} is not an optimizer; use one of {', '.join(OPTIMIZERS)}"
        )
    for key in ("lr", "momentum", "weight_decay", "eps"):
        if cfg.get(key) is not None:
            _check_value(f"optim.{key}", cfg[key])
    betas = cfg.get("betas")
    if betas is not None and (
        len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas)
    ):
        raise UserError(f"optim.betas={list(betas)} must be two numbers in [0, 1), e.g. [0.9,0.98]")
    sched = cfg.get("schedule") or {}
    kind = sched.get("name")
    if kind not in SCHEDULES:
        raise UserError(
            f"optim.schedule.name={kind!r} is not a schedule; use one of {', '.join(SCHEDULES)}"
        )
    for key in ("gamma", "warmup_steps", "warmup_init_lr", "min_lr", "epochs"):
        if sched.get(key) is not None:
            _check_value(f"optim.schedule.{key}", sched[key])
    if kind == "inverse_sqrt" and not sched.get("warmup_steps"):
        raise UserError(
            "optim.schedule.warmup_steps must be at least 1 for the inverse_sqrt schedule "
            "(its decay is lr*sqrt(warmup/step)); e.g. optim.schedule.warmup_steps=4000"
        )
    if kind == "cosine" and sched.get("epochs") is None:
        raise UserError(
            "optim.schedule.epochs is not set; the cosine schedule needs its length, "
            "e.g. optim.schedule.epochs=${trainer.epochs}"
        )
    milestones = sched.get("milestones")
    if kind == "multistep" and not all(_is_number(m) and m >= 0 for m in milestones or []):
        raise UserError(
            f"optim.schedule.milestones={list(milestones or [])} must be epochs (numbers >= 0), "
            "e.g. optim.schedule.milestones=[80,120]"
        )


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
    if name == "cosine":
        return _cosine_factor(cfg, steps_per_epoch, base_lr)
    raise UserError(f"unknown lr schedule {name!r}; valid names: {', '.join(SCHEDULES)}")


def _cosine_factor(cfg: Mapping[str, Any], steps_per_epoch: int, base_lr: float):
    """Linear warmup from warmup_init_lr to lr over warmup_steps, then a half cosine from lr down
    to min_lr at `epochs` epochs, min_lr after that (the cosine spans the steps after the warmup,
    as Hugging Face's get_cosine_schedule_with_warmup and timm's warmup_prefix=True)."""
    warmup = int(cfg.get("warmup_steps") or 0)
    total = int(round(float(cfg["epochs"]) * steps_per_epoch))
    init = float(cfg.get("warmup_init_lr") or 0.0) / base_lr
    floor = float(cfg.get("min_lr") or 0.0) / base_lr

    def factor(step: int) -> float:  # step = updates done so far, as inverse_sqrt's
        if step < warmup:
            return init + (1 - init) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch, base_lr))
