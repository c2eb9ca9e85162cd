"""Typed schemas for the parts of the config every run shares, and the checks made before a run.

Hydra already refuses overrides of keys that do not exist; these schemas also catch typos and wrong
types inside YAML files (a preset that says `trainer.epoch`), each as one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from normlab.errors import UserError


@dataclass
class TrainerConfig:
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 1000
    eval_every: int = 1
    grad_clip: float | None = None
    channels_last: bool = True
    amp: str | None = None
    compile: bool = False
    threads: int | None = None
    progress: Any = "auto"
    simulate_interrupt_at_step: int | None = None
    keep_epoch_checkpoints: int = 0
    early_stop_patience: int | None = None
    early_stop_metric: str = "valid_loss"


@dataclass
class RunConfig:
    experiment_name: str = "???"
    task: str = "???"
    seed: int = 0
    device: str = "auto"
    resume: str = "auto"


def _check_schema(schema: type, node: Any, where: str) -> None:
    try:
        OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as err:
        msg = str(err).splitlines()[0]
        raise UserError(f"invalid {where} config: {msg}") from None


def validate_config(cfg: DictConfig) -> None:
    """Every check that can be made before data is loaded or a model is built."""
    from normlab.data import DATASETS
    from normlab.models import MODELS
    from normlab.norms import check_norm_config
    from normlab.train.tasks import TASKS

    _check_schema(TrainerConfig, cfg.trainer, "trainer")
    top = {k: cfg[k] for k in ("experiment_name", "task", "seed", "device", "resume")}
    _check_schema(RunConfig, top, "top-level")
    if cfg.resume not in ("auto", "never"):
        raise UserError(f"resume={cfg.resume!r} is not valid; use resume=auto or resume=never")
    for key in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
        if int(cfg.trainer[key]) < 1:
            raise UserError(f"trainer.{key}={cfg.trainer[key]} must be at least 1")
    TASKS.get(str(cfg.task))
    MODELS.get(str(cfg.model.name))
    DATASETS.get(str(cfg.data.name))
    check_norm_config(cfg.norm)
