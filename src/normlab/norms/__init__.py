"""Normalization layers behind one factory.

Models ask for "a norm over `num_features` features" through a `NormFactory` and never name a
concrete class, so `norm=bn|ln|gn|none|...` swaps the layer everywhere. A norm is one module in this
package that registers a builder with `@NORMS.register("name")`, plus `configs/norm/<name>.yaml`
whose keys (other than `name`) are the builder's keyword options. A model is given the run's norm
config and turns it into a factory for its own layout with `resolve_norm`: one registry look-up,
which checks the name and the options and yields the builder every layer is then made with.

Layouts: "image" modules take (N, C, H, W); "sequence" modules take (B, T, C) plus a padding mask
(B, T) that is True at pad positions, and must leave pads out of every statistic.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

from torch import nn

from normlab.errors import UserError
from normlab.registry import Registry

Layout = Literal["image", "sequence"]
NormFactory = Callable[[int], nn.Module]
# What a model builder is given: the run's norm config (name + options), or a factory made already.
NormSpec = Mapping[str, Any] | NormFactory

NORMS: Registry = Registry("norm", "normlab.norms", "norm")

# Set by the run, not by a norm's YAML: `sync_stats=true` under torchrun with distributed.sync_bn=true
# (statistics over the global batch). A builder that takes it gets it; the others have no batch
# statistics to synchronize, or keep them per process as the paper's code does (PowerNorm).
RUN_OPTIONS = ("sync_stats",)


def norm_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The builder options of a norm config: every key except `name`."""
    return {k: v for k, v in cfg.items() if k != "name"}


def _builder(cfg: Mapping[str, Any]) -> Callable[..., nn.Module]:
    """The registered builder of a norm config, once its name and options are known to be valid:
    the one registry look-up, shared by the check and the factory."""
    if "name" not in cfg:
        raise UserError("the norm config has no `name`; choose one with norm=<name>")
    builder = NORMS.get(str(cfg["name"]))
    params = inspect.signature(builder).parameters
    accepted = [p for p in params if p not in ("num_features", "layout", *RUN_OPTIONS)]
    for key in norm_options(cfg):
        if key not in accepted and key not in RUN_OPTIONS:
            raise UserError(
                f"norm {cfg['name']!r} has no option {key!r}; its options are "
                f"{', '.join(accepted) or '(none)'}"
            )
    return builder


def check_norm_config(cfg: Mapping[str, Any]) -> None:
    """Fail with one sentence if the name is unknown or an option is not one the norm takes."""
    _builder(cfg)


def norm_factory(cfg: Mapping[str, Any], layout: Layout) -> NormFactory:
    """A callable `num_features -> nn.Module` for the norm described by `cfg` (name + options)."""
    builder = _builder(cfg)
    params = inspect.signature(builder).parameters
    options = {k: v for k, v in norm_options(cfg).items() if k not in RUN_OPTIONS or k in params}

    def make(num_features: int) -> nn.Module:
        return builder(num_features, layout=layout, **options)

    return make


def resolve_norm(norm: NormSpec, layout: Layout) -> NormFactory:
    """What a model builder does with the norm it is given: a norm config becomes the factory for
    the model's `layout` (the model, not the task, knows what its norms see); a factory already
    made (a test's, a benchmark's, a user's own layer) is used as it is."""
    return norm if callable(norm) else norm_factory(norm, layout)


def unsupported_layout(name: str, layout: str) -> UserError:
    """The error a builder raises for a layout it does not implement."""
    return UserError(f"norm {name!r} has no {layout} version; pick another norm for this model")


def check_groups(groups: int, num_features: int, unit: str, why: str = "") -> None:
    """The one divisor check of every norm that splits a layer's features into `groups` groups
    (GroupNorm's channels, group scaling's features per token): fail with one sentence, listing
    the divisors, unless `groups` splits a layer of `num_features` `unit` evenly. `why` names the
    usual choice, if any."""
    if groups < 1 or num_features % groups:
        divisors = [g for g in range(1, num_features + 1) if num_features % g == 0]
        raise UserError(
            f"norm.groups={groups} does not divide a layer of {num_features} {unit}; choose a "
            f"divisor of every layer's width{why}, e.g. one of {divisors}"
        )
