"""Typed schemas for the parts of the config every run shares, and the checks made before a run.

Hydra already refuses overrides of keys that do not exist; these schemas also catch typos and wrong
types inside YAML files (a preset that says `trainer.epoch`), each as one sentence.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from normlab.errors import UserError


# Types only: the values (and defaults) are configs/train.yaml's, the one place a run gets them
# from. A field with no default is `???` to OmegaConf, so checking a node against these schemas
# never adds a value of its own; tests/test_house_helpers.py keeps it that way.
@dataclass
class TrainerConfig:
    epochs: int
    max_steps: int | None
    batch_size: int
    eval_batch_size: int
    eval_every: int
    grad_clip: float | None
    channels_last: bool
    amp: str | None
    compile: bool
    threads: int | None
    progress: Any
    sync_every: Any  # auto | null | an int >= 1 (normlab.train.parts.sync_interval)
    simulate_interrupt_at_step: int | None
    keep_epoch_checkpoints: int
    early_stop_patience: int | None
    early_stop_metric: str


@dataclass
class RunConfig:
    experiment_name: str
    task: str
    seed: int
    device: str
    resume: str


# Keys that change how or where a run is computed, watched or cached, never what it computes. They
# are the one list behind two decisions that must agree: the run directory's name leaves them out,
# so the same run is found whatever they are set to (configs/hydra/default.yaml reads the list
# through the `run_name_exclusions` resolver, registered in normlab.cli), and reusing or resuming a
# run does not compare them (normlab.train.checkpoint.config_differences). The list lives here, not
# in YAML, because the comparison must work without composing a config; and Hydra reads it through
# a resolver rather than keeping a copy that a test checks, so there is no second list to update.
# A key matches itself and every key below it (`logger` covers `logger.mode`) when configs are
# compared; Hydra drops from the name only an override of exactly that key or group.
UNCOMPUTED_KEYS = (
    # Where it computes: `device=auto` (the default) already resumed a run on another machine's
    # device; a resume reads every tensor onto the CPU and moves it to this run's device
    # (normlab.train.parts.RunParts.restore), so a GPU checkpoint resumes on a CPU and back.
    # Results differ between devices as between thread counts: not bit for bit.
    "device",
    "launcher",  # where --multirun jobs run (a config group; no key in the job's config)
    "logger",  # how it is watched
    "resume",
    "trainer.progress",
    "trainer.threads",
    "trainer.sync_every",  # how often the step's numbers are copied to the host, not what they are
    "trainer.simulate_interrupt_at_step",  # a test's interruption; the resumed run omits it
    "distributed.backend",
    "data.cache_dir",
    "data.download",
    "data.out_dir",  # where a copy of the prepared text goes
    "data.workers",  # processes preparing the data (their output keeps the input's order)
)
# Out of the name but compared: the run tree's folders already name the experiment and scale
# (runs/<experiment>/<scale>/<name>), and a machine has one copy of the data, so its location
# would only lengthen names; a resume with other data is still refused.
NAMED_BY_FOLDERS = ("experiment", "scale")
DATA_LOCATION_KEYS = ("data.root", "data.source", "data.prepared_dir", "data.archive", "data.dir")


def run_name_exclusions() -> list[str]:
    """The overrides that do not appear in a run directory's name (Hydra's `exclude_keys`)."""
    return [*NAMED_BY_FOLDERS, *UNCOMPUTED_KEYS, *DATA_LOCATION_KEYS]


def is_uncomputed(key: str) -> bool:
    """Whether the dotted config `key` is, or lies below, one of UNCOMPUTED_KEYS."""
    return any(key == k or key.startswith(k + ".") for k in UNCOMPUTED_KEYS)


_KINDS = {
    int: ("a whole number", "10"),
    float: ("a number", "0.5"),
    bool: ("true or false", "true"),
}


def _expected(schema: type, key: str) -> tuple[str, str]:
    """What a schema field takes, in words, and an example value: ('a whole number', '10')."""
    hint = typing.get_type_hints(schema).get(key)
    args = typing.get_args(hint) or (hint,)
    for kind, (words, example) in _KINDS.items():
        if kind in args:
            return (f"{words} (or null)" if type(None) in args else words), example
    return "a string", "auto"


def _check_schema(schema: type, node: Any, where: str, prefix: str = "") -> None:
    """One sentence naming the key, its value and the fix, for a wrong type or an unknown key."""
    try:
        OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", "") or "")
        name = f"{prefix}{key}"
        if isinstance(err, ConfigKeyError) and key:
            valid = ", ".join(prefix + f.name for f in dataclasses.fields(schema))
            raise UserError(
                f"invalid {where} config: there is no key {name}; valid keys: {valid}"
            ) from None
        if key and key in node:
            words, example = _expected(schema, key)
            raise UserError(
                f"invalid {where} config: {name}={node[key]!r} is not {words}; "
                f"give {words}, e.g. {name}={example}"
            ) from None
        msg = str(err).splitlines()[0]
        raise UserError(f"invalid {where} config: {msg}") from None


def _missing_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys still at `???` (a config that needs the user to give a value)."""
    missing: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if value == "???":
                missing.append(f"{prefix}{key}")
            elif isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return missing


def validate_config(cfg: DictConfig) -> None:
    """Every check that can be made before data is loaded or a model is built."""
    from normlab.data import check_dataset_config
    from normlab.models import MODELS, check_model_norm
    from normlab.norms import check_norm_config
    from normlab.train.optim import check_optim_config
    from normlab.train.tasks import TASKS

    if missing := _missing_keys(cfg):
        raise UserError(f"{missing[0]} is not set; add {missing[0]}=<value> to the command line")
    _check_schema(TrainerConfig, cfg.trainer, "trainer", "trainer.")
    top = {k: cfg[k] for k in ("experiment_name", "task", "seed", "device", "resume")}
    _check_schema(RunConfig, top, "top-level")
    if cfg.resume not in ("auto", "never"):
        raise UserError(f"resume={cfg.resume!r} is not valid; use resume=auto or resume=never")
    for key in ("epochs", "batch_size", "eval_batch_size", "eval_every", "max_steps"):
        if cfg.trainer[key] is not None and int(cfg.trainer[key]) < 1:
            raise UserError(f"trainer.{key}={cfg.trainer[key]} must be at least 1")
    if str(cfg.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                f"device={cfg.device} was asked for but no CUDA GPU is visible; use device=cpu"
            )
    TASKS.get(str(cfg.task))
    MODELS.get(str(cfg.model.name))
    check_model_norm(str(cfg.model.name), str(cfg.norm.name))
    check_dataset_config(cfg.data)
    check_norm_config(cfg.norm)
    check_optim_config(cfg.optim)
