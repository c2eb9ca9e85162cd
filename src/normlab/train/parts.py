"""What a run trains with, built from its config on every rank: the device, the task (data and
model), the probe, the optimizer and its schedule; how they go into a checkpoint and come back, and
what summary.json says about them.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from normlab.errors import UserError
from normlab.models import count_parameters
from normlab.probe import build_probe, probe_note
from normlab.train import distributed
from normlab.train.optim import build_optimizer, build_scheduler
from normlab.train.precision import amp_dtype, precision_name
from normlab.train.tasks import TASKS


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The training device; under torchrun each process takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} was asked for but no CUDA GPU is visible; use device=cpu")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def sync_interval(value: Any, device: torch.device) -> int:
    """trainer.sync_every as a number of steps: how many steps' numbers (loss, batch metrics, probe
    rows) stay on the device before one copy brings them all to the host. `auto` or null: 1 on a
    CPU, where a copy costs nothing, 50 on a GPU, where each copy waits for the queued kernels."""
    if value is None or value == "auto":
        return 50 if device.type == "cuda" else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(
            f"trainer.sync_every={value!r} is not a number of steps; give a whole number of at "
            "least 1 (e.g. trainer.sync_every=50) or auto (1 on a CPU, 50 on a GPU)"
        )
    return value


@dataclass
class RunParts:
    world: distributed.World
    device: torch.device
    task: Any  # a normlab.train.tasks.Task
    probe: Any  # a normlab.probe BatchStatsProbe, or None (probe=none)
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch.optim.lr_scheduler.LRScheduler
    amp_dtype: torch.dtype | None
    steps_per_epoch: int
    total_steps: int
    sync_every: int = 1  # steps between copies of the per-step numbers to the host

    @property
    def model(self) -> torch.nn.Module:
        return self.task.model

    @classmethod
    def build(cls, cfg: DictConfig, world: distributed.World) -> RunParts:
        device = pick_device(str(cfg.device), world.local_rank)
        sync_every = sync_interval(cfg.trainer.get("sync_every", "auto"), device)  # before the data
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        task = TASKS.get(str(cfg.task))(_model_config(cfg, world), device)
        model = task.model
        if world.distributed:
            distributed.broadcast_state(model)
            if world.rank:  # dropout differs between ranks; rank 0 draws as one process would
                torch.manual_seed(cfg.seed * 1_000_003 + world.rank)
        dtype = amp_dtype(cfg.trainer.get("amp"), device)
        if cfg.trainer.get("compile"):
            model.compile()  # in place: state_dict keys and the probe's hooks stay as they are
        probe = build_probe(cfg.get("probe"), model)
        if world.main and (note := probe_note(probe, str(cfg.norm.name))):
            print(f"normlab: note: {note}", file=sys.stderr)
        if probe is not None and world.sync_bn and world.distributed:
            probe.reduce_grad_sums = distributed.all_reduce_mean
        optimizer = build_optimizer(cfg.optim, model)
        steps_per_epoch = task.steps_per_epoch()
        scheduler = build_scheduler(cfg.optim.schedule, optimizer, steps_per_epoch)
        total_steps = cfg.trainer.epochs * steps_per_epoch
        if cfg.trainer.max_steps:
            total_steps = min(total_steps, int(cfg.trainer.max_steps))
        _warn_long_norm_warmup(cfg.norm, total_steps)
        return cls(
            world,
            device,
            task,
            probe,
            optimizer,
            scheduler,
            dtype,
            steps_per_epoch,
            total_steps,
            sync_every,
        )

    def checkpoint_entries(self) -> dict[str, Any]:
        """The checkpoint's entries for the trained objects (see `restore`)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "probe": self.probe.state_dict() if self.probe is not None else {},
        }

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Load a checkpoint's entries. They were read onto the CPU and go to this run's device,
        whichever device wrote them (`device` does not change a run: normlab.config)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.probe is not None:
            self.probe.load_state_dict(ckpt.get("probe", {}), self.device)

    def summary_fields(self, cfg: DictConfig) -> dict[str, Any]:
        """summary.json's entries about the model, the data and how they were computed."""
        return {
            "experiment": cfg.experiment_name,
            "scale": cfg.scale.name,
            "model": cfg.model.name,
            "norm": cfg.norm.name,
            "seed": cfg.seed,
            "params": count_parameters(self.model),
            "data_source": self.task.data_source,
            "data_detail": self.task.data_detail,
            "precision": precision_name(self.amp_dtype),
            "world_size": self.world.size,
            "bn_statistics": "global batch (synchronized)" if self.world.sync_bn else "per rank",
        }


def _model_config(cfg: DictConfig, world: distributed.World) -> DictConfig:
    """The config the task builds its model from: the run's, plus `norm.sync_stats=true` under
    torchrun with distributed.sync_bn=true, so that every BN layer is built synchronized (one
    process has nothing to synchronize with, and its BN stays PyTorch's own)."""
    if not (world.distributed and world.sync_bn):
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.norm.sync_stats = True
    return cfg


def _warn_long_norm_warmup(norm: DictConfig, total_steps: int) -> None:
    """A norm whose warmup (PowerNorm's batch-statistics phase) outlasts the run never leaves it."""
    warmup = int(norm.get("warmup_iters", 0) or 0)
    if warmup > total_steps:
        warnings.warn(
            f"norm.warmup_iters={warmup} is longer than the run ({total_steps} steps), "
            "so the norm uses batch statistics throughout; lower norm.warmup_iters",
            stacklevel=2,
        )
