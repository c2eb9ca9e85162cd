"""Datasets, built by name from `configs/data/<name>.yaml`.

A dataset module registers `@DATASETS.register("name")` on a loader taking the YAML's keys (other
than `name`) as keyword arguments. Data knows nothing of models, evaluation or tracking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from normlab.registry import Registry

DATASETS: Registry = Registry("dataset", "normlab.data", "data")


def check_dataset_config(cfg: Mapping[str, Any]) -> None:
    """One sentence for an unknown dataset or a key its loader does not take (a YAML typo, or a
    preset's key meant for another dataset), before anything is loaded."""
    import inspect

    from normlab.errors import UserError

    name = str(cfg["name"])
    params = inspect.signature(DATASETS.get(name)).parameters
    for key in cfg:
        if key != "name" and key not in params:
            raise UserError(
                f"data={name} has no option data.{key}; its options are "
                f"{', '.join(f'data.{p}' for p in params)} (remove data.{key} or pick another data=)"
            )


def load_dataset(cfg: Mapping[str, Any]) -> Any:
    check_dataset_config(cfg)
    loader = DATASETS.get(str(cfg["name"]))
    return loader(**{k: v for k, v in cfg.items() if k != "name"})


def default_cache_dir() -> str:
    """A writable per-user cache (a data folder may be read-only)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "normlab")
