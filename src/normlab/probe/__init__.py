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


def probe_note(probe: Any, norm_name: str) -> str | None:
    """A line to print once at start when the probe will record no batch statistics (the model
    has no BN-family layer), so that an empty probe/ folder is not a surprise; else None."""
    if probe is None:
        return None
    kinds = {layer.kind for layer in probe.layers}
    if kinds & {"bn", "pn"}:
        return None
    what = "only the LN layers' drift" if "ln" in kinds else "nothing"
    return (
        f"norm={norm_name} leaves this model without a BN-family layer, so the batch-statistics "
        f"probe records {what} (probe=none turns it off)"
    )
