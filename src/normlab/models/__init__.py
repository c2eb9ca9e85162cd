"""Models, built by name from `configs/model/<name>.yaml` and the run's norm config.

A model module registers `@MODELS.register("name")` on a builder
`(norm: NormSpec, **options) -> nn.Module`; the options are the YAML's keys other than `name`.
`norm` is the run's norm config (`cfg.norm`); the builder turns it into a factory once, for the
layout its norms see (`resolve_norm(norm, "image")` for feature maps, `"sequence"` for tokens), and
resolves its own per-position overrides the same way. Models only ever create norm layers through
that factory, so a task never chooses how a model's norms are built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from normlab.errors import UserError
from normlab.norms import NormSpec
from normlab.registry import Registry

MODELS: Registry = Registry("model", "normlab.models", "model")


def build_model(cfg: Mapping[str, Any], norm: NormSpec, **task_options: Any) -> nn.Module:
    """Build the model named by `cfg.name` with the YAML's options and those the task supplies;
    `norm`: the run's norm config (or a factory made already, used as it is)."""
    builder = MODELS.get(str(cfg["name"]))
    options = {k: v for k, v in cfg.items() if k != "name"} | task_options
    try:
        return builder(norm=norm, **options)
    except TypeError as err:  # an option the builder does not take: a typo in the config
        raise UserError(f"model {cfg['name']!r} rejected its options: {err}") from None


def check_model_norm(model_name: str, norm_name: str) -> None:
    """Refuse, before anything runs, a norm that a model's builder declares it cannot train with
    (`builder.refused_norms = {norm name: the sentence saying why and what to use instead}`)."""
    builder = MODELS.get(model_name)
    reason = getattr(builder, "refused_norms", {}).get(norm_name)
    if reason:
        raise UserError(reason)


def model_norm_note(model_name: str, norm_name: str, lr: float) -> str | None:
    """What a model's builder says about training with a norm at this lr, to print once at start:
    `builder.norm_notes = {norm name: (highest lr that needs no note, the note)}`."""
    highest, note = getattr(MODELS.get(model_name), "norm_notes", {}).get(norm_name, (None, None))
    return note if highest is not None and lr > highest else None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
