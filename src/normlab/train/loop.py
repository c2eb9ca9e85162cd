"""The generic training loop: any registered task, any norm, resumable bit for bit.

Per step it logs one row to metrics.csv; per epoch it evaluates (eval.csv) and writes
checkpoints/last.pt; at the end it writes summary.json. A run interrupted by SIGTERM/SIGINT writes a
checkpoint first, and rerunning the same command continues it; a completed run is not redone.
Under torchrun every rank runs this loop on its shard of each batch and rank 0 alone writes files
(`normlab.train.distributed`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from normlab.errors import TrainingDiverged, UserError
from normlab.io_utils import atomic_write_json, atomic_write_text
from normlab.models import count_parameters
from normlab.norms.global_stats import synchronize_batch_stats
from normlab.probe import build_probe, probe_note
from normlab.probe.batch_stats import BN_COLUMNS, DRIFT_COLUMNS, PN_COLUMNS
from normlab.probe.store import ProbeStore
from normlab.tracking.metrics_file import MetricsFile
from normlab.tracking.provenance import environment, git_info
from normlab.tracking.wandb_mirror import WandbMirror
from normlab.train import distributed
from normlab.train.checkpoint import (
    config_differences,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from normlab.train.interrupt import StopRequests
from normlab.train.optim import build_optimizer, build_scheduler
from normlab.train.precision import amp_dtype, precision_name
from normlab.train.run_dir import RunDirLock, remove_stale_run_temporaries
from normlab.train.tasks import TASKS

PROBE_SERIES = (*BN_COLUMNS, *PN_COLUMNS, *DRIFT_COLUMNS)  # mirrored to wandb per layer
TIMING_KEYS = ("wall_s", "train_s", "items_per_s", "finished_at", "resumed", "git_segments")


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The training device; under torchrun each process takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} was asked for but no CUDA GPU is visible; use device=cpu")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def train(cfg: DictConfig, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Train (or resume, or skip if complete) the run described by `cfg` in `run_dir`."""
    run_dir = Path(run_dir)
    # Under torchrun only rank 0 owns (locks and writes) the run directory.
    lock = RunDirLock(run_dir) if distributed.launched_rank() == 0 else contextlib.nullcontext()
    with lock:
        return _Run(cfg, run_dir).execute()


class _NoFile:
    """Stands in for the metric files and the probe store on ranks other than 0."""

    def write(self, row: Any) -> None: ...

    def add(self, rows: Any) -> None: ...

    def flush(self) -> int:
        return 0

    def close(self) -> None: ...

    def truncate_after(self, step: int) -> None: ...


class _Run:
    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.dir = run_dir
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.ckpt_path = run_dir / "checkpoints" / "last.pt"
        self.t_start = time.perf_counter()
        # The code that runs is the code at start: a commit made while a run goes on is not its.
        self.git_segments = [git_info() | {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]

    # ----------------------------------------------------------------------------- set-up
    def _completed_summary(self) -> dict[str, Any] | None:
        """The summary of a finished run with the same config, which is then not redone."""
        summary_path = self.dir / "summary.json"
        if not summary_path.exists() or self.cfg.resume == "never":
            return None
        import json

        summary = json.loads(summary_path.read_text())
        if summary.get("status") != "complete":
            return None
        self._check_same_config(summary.get("config", {}), summary_path)
        return summary

    def _check_same_config(self, saved: dict, where: Path) -> None:
        diffs = config_differences(saved, self.config)
        if diffs:
            raise UserError(
                f"{where} was made with a different config ({'; '.join(diffs)}); refusing to "
                "resume it: undo those overrides, or start a new run with hydra.run.dir=..."
            )

    def execute(self) -> dict[str, Any]:
        done = self._completed_summary()
        if done is not None:
            print(f"run already complete: {self.dir / 'summary.json'} (nothing to do)")
            return done
        cfg = self.cfg
        if cfg.trainer.threads:
            torch.set_num_threads(int(cfg.trainer.threads))
        dcfg = cfg.get("distributed") or {}
        self.world = distributed.init_world(
            str(dcfg.get("backend", "auto")), bool(dcfg.get("sync_bn", False)), str(cfg.device)
        )
        try:
            return self._execute()
        finally:
            distributed.close_world(self.world)

    def _execute(self) -> dict[str, Any]:
        cfg, world = self.cfg, self.world
        if world.main:  # under the run's lock: a temp file here is a killed writer's leftover
            remove_stale_run_temporaries(self.dir)
        self.device = pick_device(str(cfg.device), world.local_rank)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.task = TASKS.get(str(cfg.task))(cfg, self.device)
        self.model = self.task.model
        if world.distributed:
            if world.sync_bn:
                synchronize_batch_stats(self.model)
            distributed.broadcast_state(self.model)
            if world.rank:  # dropout differs between ranks; rank 0 draws as one process would
                torch.manual_seed(cfg.seed * 1_000_003 + world.rank)
        self.amp_dtype = amp_dtype(cfg.trainer.get("amp"), self.device)
        if cfg.trainer.get("compile"):
            self.model.compile()  # in place: state_dict keys and the probe's hooks stay as they are
        self.probe = build_probe(cfg.get("probe"), self.model)
        if world.main and (note := probe_note(self.probe, str(cfg.norm.name))):
            print(f"normlab: note: {note}", file=sys.stderr)
        if self.probe is not None and world.sync_bn and world.distributed:
            self.probe.reduce_grad_sums = distributed.all_reduce_mean
        # Rank 0's rows in probe/; with per-rank BN each other rank's own in probe/rank<r>/ (with
        # synchronized BN they would repeat rank 0's global statistics).
        flush_every = cfg.get("probe", {}).get("flush_every", 1000)
        self.probe_store = _NoFile()
        if world.main:
            self.probe_store = ProbeStore(self.dir / "probe", flush_every)
        elif not world.sync_bn:
            self.probe_store = ProbeStore(self.dir / "probe" / f"rank{world.rank}", flush_every)
        self.optimizer = build_optimizer(cfg.optim, self.model)
        self.steps_per_epoch = self.task.steps_per_epoch()
        self.scheduler = build_scheduler(cfg.optim.schedule, self.optimizer, self.steps_per_epoch)
        self.total_steps = cfg.trainer.epochs * self.steps_per_epoch
        if cfg.trainer.max_steps:
            self.total_steps = min(self.total_steps, int(cfg.trainer.max_steps))

        self._warn_long_norm_warmup()
        self.step = self.epoch = self.batch_in_epoch = 0
        self.train_s = self.wall_before = 0.0
        self.items = self.resumed = 0
        self.last_eval: dict[str, float] = {}
        self.best, self.bad_evals, self.early_stopped = math.inf, 0, False
        offsets = self._resume() if self.ckpt_path.exists() and cfg.resume != "never" else None
        if offsets is None and self.ckpt_path.exists():
            raise UserError(
                f"{self.ckpt_path} exists and resume=never; delete the run directory or drop resume=never"
            )
        self.metrics = self.evals = _NoFile()
        if world.main:
            atomic_write_text(self.dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            self.metrics = MetricsFile(
                self.dir / "metrics.csv",
                [
                    "step",
                    "epoch",
                    "lr",
                    "loss",
                    "loss_normalizer",
                    *self.task.train_keys,
                    "items_per_s",
                ],
                offsets and offsets["metrics"],
            )
            self.evals = MetricsFile(
                self.dir / "eval.csv",
                ["step", "epoch", *self.task.eval_keys],
                offsets and offsets["eval"],
            )
        self.wandb = None
        if cfg.logger.name == "wandb" and world.main:
            self.wandb = WandbMirror(cfg.logger, self.dir, self.config, name=self.dir.name)
        try:
            with StopRequests() as stop:
                status = self._loop(stop)
        except TrainingDiverged:
            if self.wandb:
                self.wandb.finish(exit_code=1)
            raise
        finally:
            self.probe_store.flush()
            self.metrics.close()
            self.evals.close()
        if status == "complete":
            self._finalize()
        summary = self._summary(status)
        if self.wandb:
            self.wandb.summary({k: v for k, v in summary.items() if not isinstance(v, dict)})
            self.wandb.finish()
        return summary

    def _warn_long_norm_warmup(self) -> None:
        """A norm whose warmup (PowerNorm's batch-statistics phase) outlasts the run never leaves it."""
        warmups = {int(getattr(m, "warmup_iters", 0) or 0) for m in self.model.modules()}
        if max(warmups, default=0) > self.total_steps:
            import warnings

            warnings.warn(
                f"norm.warmup_iters={max(warmups)} is longer than the run ({self.total_steps} steps), "
                "so the norm uses batch statistics throughout; lower norm.warmup_iters",
                stacklevel=2,
            )

    def _resume(self) -> dict[str, int]:
        ckpt = load_checkpoint(self.ckpt_path)
        self._check_same_config(ckpt["config"], self.ckpt_path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        p = ckpt["progress"]
        self.step, self.epoch, self.batch_in_epoch = p["step"], p["epoch"], p["batch_in_epoch"]
        self.train_s, self.items, self.wall_before = p["train_s"], p["items"], p["wall_s"]
        self.resumed = p.get("resumed", 0) + 1
        self.last_eval = ckpt.get("last_eval", {})
        self.best, self.bad_evals = p.get("best", math.inf), p.get("bad_evals", 0)
        self.early_stopped = p.get("early_stopped", False)
        self.git_segments = p.get("git_segments", []) + self.git_segments
        set_rng_state(ckpt["rng"])  # rank 0's: the other ranks reseed their dropout below
        if self.world.rank:
            torch.manual_seed((self.cfg.seed * 1_000_003 + self.world.rank) * 7919 + self.step)
        self.probe_store.truncate_after(self.step)
        if self.probe is not None:
            self.probe.load_state_dict(ckpt.get("probe", {}))
        print(f"resuming {self.dir} at step {self.step} (epoch {self.epoch})")
        return ckpt["offsets"]

    # ----------------------------------------------------------------------------- the loop
    def _loop(self, stop: StopRequests) -> str:
        cfg = self.cfg.trainer
        interrupt_at = cfg.get("simulate_interrupt_at_step")
        self.stop_now = False
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            disable=_progress_off(cfg.progress) or not self.world.main,
            dynamic_ncols=True,
            desc=f"{self.cfg.norm.name} s{self.cfg.seed}",
        )
        try:
            while self.step < self.total_steps and not self.early_stopped:
                t0, n0 = time.perf_counter(), 0
                for batch in self.task.train_batches(self.epoch, self.batch_in_epoch):
                    loss_value, n = self._train_step(batch, stop)
                    n0 += n
                    self.batch_in_epoch += 1
                    bar.update(1)
                    if self.step % 10 == 0 or self.step == self.total_steps:
                        rate = n0 / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix_str(
                            f"ep {self.epoch} loss {loss_value:.3f} {rate:.0f} {self.task.unit}/s"
                        )
                    if interrupt_at is not None and self.step == int(interrupt_at):
                        import signal

                        os.kill(os.getpid(), signal.SIGTERM)  # the real signal path, for tests
                    if self._stopping(stop) or self.step >= self.total_steps:
                        break
                if self._stopping(stop):
                    self._save()
                    bar.write(f"stopped by a signal at step {self.step}; checkpoint saved")
                    return "interrupted"
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if self.epoch % cfg.eval_every == 0 or self.step >= self.total_steps:
                        self._evaluate()
                    self._save()
                    self._save_epoch_checkpoint()
                    if self.early_stopped:
                        bar.write(
                            f"early stop after epoch {self.epoch}: {cfg.early_stop_metric} "
                            f"did not improve for {cfg.early_stop_patience} evaluations"
                        )
                        break
            if self.batch_in_epoch:  # stopped mid-epoch by max_steps
                self._evaluate()
                self._save()
        finally:
            bar.close()
        return "complete"

    def _stopping(self, stop: StopRequests) -> bool:
        """A signal asked to stop: at once for one process; for several, the request all ranks
        agreed on during the last step's all-reduce, so that none waits for the others forever."""
        return self.stop_now if self.world.distributed else stop.requested

    def _train_step(self, batch: Any, stop: StopRequests) -> tuple[float, int]:
        t = time.perf_counter()
        self.model.train()
        world = self.world
        synced = world.distributed and world.sync_bn
        if self.probe is not None:
            self.probe.begin_step(self.step + 1)
        with torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None):
            loss, batch_metrics, n = self.task.train_loss(batch)
        loss_value = loss.item()
        n_local = n
        if world.distributed:
            # One small all-reduce: the global item count (to weight this rank's loss), and whether
            # any rank diverged or was asked to stop, so that all ranks act on the same step.
            n, bad, stops = distributed.sum_over_ranks(
                [n_local, not math.isfinite(loss_value), stop.requested], self.device
            )
            n = int(n)
            if bad:
                self._diverged(loss_value if not math.isfinite(loss_value) else math.nan)
            self.stop_now = bool(stops)  # every rank stops after the same step
            loss = loss * (n_local * world.size / n)
        elif not math.isfinite(loss_value):
            self._diverged(loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.probe is not None and not synced:
            self.probe.after_backward()  # before clipping and the step touch the gradients
        if world.distributed:
            shares = [loss_value * n_local / n] + [
                float(v) * n_local / n for v in batch_metrics.values()
            ]
            summed = distributed.average_gradients(
                self.model, world, torch.tensor(shares, dtype=torch.float64)
            ).tolist()
            loss_value = summed[0]
            batch_metrics = dict(zip(batch_metrics, summed[1:], strict=True))
            if self.probe is not None and synced:
                self.probe.after_backward()  # global γ/β gradients: read after the averaging
        if self.cfg.trainer.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.trainer.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.probe is not None:
            self._record_probe()
        dt = time.perf_counter() - t
        self.train_s += dt
        self.items += n
        # loss_normalizer: what the summed loss was divided by (tokens, images) before the backward;
        # fairseq's convention differentiates the sum, so its gradients are this many times ours.
        row = {"step": self.step, "epoch": self.epoch, "lr": lr, "loss": loss_value}
        row["loss_normalizer"] = n
        row |= {k: float(v) for k, v in batch_metrics.items()}
        self.metrics.write(row | {"items_per_s": round(n / dt, 1)})
        if self.wandb:
            self.wandb.log({f"train/{k}": v for k, v in row.items() if k != "step"}, self.step)
        return loss_value, n

    def _record_probe(self) -> None:
        rows = self.probe.end_step(self.step, self.epoch, self.step / self.total_steps)
        self.probe_store.add(rows)
        if self.wandb and rows:  # every statistic column of every kind (bn, pn, ln drift)
            self.wandb.log(
                {
                    f"probe/{r['layer']}/{k}": float(r[k])
                    for r in rows
                    for k in PROBE_SERIES
                    if k in r and r[k] == r[k]  # NaN: not defined for this layer/step
                },
                self.step,
            )

    def _diverged(self, value: float, what: str = "the training loss", step: int = 0) -> None:
        step = step or self.step + 1
        self.metrics.flush()
        if self.ckpt_path.exists():
            kept = f"the last good checkpoint {self.ckpt_path} (step {load_checkpoint(self.ckpt_path)['progress']['step']}) is kept"
        else:
            kept = "no checkpoint had been written yet"
        atomic_write_json(
            self.dir / "summary.json",
            {"status": "diverged", "diverged_at_step": step, "config": self.config},
        )
        raise TrainingDiverged(
            f"{what} became {value} at step {step} (epoch {self.epoch}); "
            f"training stopped and {kept}; lower optim.lr or try another norm"
        )

    def _evaluate(self) -> None:
        if self.world.distributed:  # rank 0's running statistics, so that every rank agrees
            distributed.broadcast_state(self.model)
        self.last_eval = self.task.evaluate()
        for key, value in self.last_eval.items():  # a NaN evaluation is a diverged run too
            if isinstance(value, float) and not math.isfinite(value):
                self._diverged(value, f"the evaluation's {key}", self.step)
        patience = self.cfg.trainer.early_stop_patience
        value = self.last_eval.get(self.cfg.trainer.early_stop_metric)
        if patience and value is not None:
            if value < self.best:
                self.best, self.bad_evals = value, 0
            else:
                self.bad_evals += 1
                self.early_stopped = self.bad_evals >= patience
        self.evals.write({"step": self.step, "epoch": self.epoch} | self.last_eval)
        self.evals.flush()
        if self.wandb:
            self.wandb.log({f"eval/{k}": v for k, v in self.last_eval.items()}, self.step)

    def _save(self) -> None:
        self.probe_store.flush()
        if not self.world.main:
            return
        offsets = {"metrics": self.metrics.flush(), "eval": self.evals.flush()}
        progress = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "train_s": self.train_s,
            "items": self.items,
            "wall_s": self.wall_before + time.perf_counter() - self.t_start,
            "resumed": self.resumed,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "early_stopped": self.early_stopped,
            "git_segments": self.git_segments,
        }
        save_checkpoint(
            self.ckpt_path,
            {
                "config": self.config,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": progress,
                "rng": rng_state(),
                "offsets": offsets,
                "last_eval": self.last_eval,
                "probe": self.probe.state_dict() if self.probe is not None else {},
            },
        )

    def epoch_checkpoints(self) -> list[Path]:
        return sorted((self.dir / "checkpoints").glob("epoch*.pt"))

    def _save_epoch_checkpoint(self) -> None:
        keep = int(self.cfg.trainer.keep_epoch_checkpoints)
        if keep <= 0 or not self.world.main:
            return
        path = self.dir / "checkpoints" / f"epoch{self.epoch:04d}.pt"
        save_checkpoint(
            path,
            {
                "model": self.model.state_dict(),
                "progress": {"epoch": self.epoch, "step": self.step},
            },
        )
        for old in self.epoch_checkpoints()[:-keep]:
            old.unlink()

    def _finalize(self) -> None:
        """Task-specific final evaluation (e.g. checkpoint averaging + beam search + BLEU)."""
        finalize = getattr(self.task, "finalize", None)
        if finalize is not None and self.world.main:
            self.last_eval = {**self.last_eval, **finalize(self.dir, self.epoch_checkpoints())}

    def _summary(self, status: str) -> dict[str, Any]:
        cfg = self.cfg
        summary: dict[str, Any] = {
            "status": status,
            "experiment": cfg.experiment_name,
            "scale": cfg.scale.name,
            "model": cfg.model.name,
            "norm": cfg.norm.name,
            "seed": cfg.seed,
            "params": count_parameters(self.model),
            "steps": self.step,
            "epochs": self.step / self.steps_per_epoch,
            "data_source": self.task.data_source,
            "data_detail": self.task.data_detail,
            **self.last_eval,
            "wall_s": round(self.wall_before + time.perf_counter() - self.t_start, 2),
            "train_s": round(self.train_s, 2),
            "items_per_s": round(self.items / max(self.train_s, 1e-9), 1),
            "unit": self.task.unit,
            "resumed": self.resumed,
            "early_stopped": self.early_stopped,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # commit and dirty flag when the run started; one entry per resumed segment after it
            **{k: self.git_segments[0][k] for k in ("git_commit", "git_dirty")},
            "git_segments": self.git_segments,
            **environment(str(self.device)),
            "precision": precision_name(self.amp_dtype),
            "world_size": self.world.size,
            "bn_statistics": "global batch (synchronized)" if self.world.sync_bn else "per rank",
            "config": self.config,
        }
        if (
            status == "complete" and self.world.main
        ):  # an interrupted run's summary would be mistaken for a result
            atomic_write_json(self.dir / "summary.json", summary)
        return summary


def _progress_off(setting: Any) -> bool | None:
    """tqdm's `disable`: None = on only when stderr is a terminal."""
    if setting in ("auto", None):
        return None
    return not bool(setting)
