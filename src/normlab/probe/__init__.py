"""The batch-statistics probe (docs/design.md §2): sees norm modules only, logs one row per (step, layer).

`build_probe(cfg, model)` returns a `BatchStatsProbe` or None when `probe=none`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def build_probe(cfg: Mapping[str, Any] | None, model: nn.Module):
    if not cfg or cfg.get("name", "none") == "none":
        return None
    from normlab.probe.batch_stats import BatchStatsProbe

    layers = cfg.get("layers", "all")
    if not isinstance(layers, str):
        layers = list(layers)
    return BatchStatsProbe(
        model,
        every=cfg.get("every", 1),
        layers=layers,
        gradients=cfg.get("gradients", True),
        ln_drift=cfg.get("ln_drift", True),
    )
