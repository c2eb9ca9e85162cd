"""The generic training loop: any registered task, any norm, resumable bit for bit.

Per step it logs one row to metrics.csv; per epoch it evaluates (eval.csv) and writes
checkpoints/last.pt; at the end it writes summary.json. A run interrupted by SIGTERM/SIGINT writes a
checkpoint first, and rerunning the same command continues it; a completed run is not redone.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from normlab.errors import TrainingDiverged, UserError
from normlab.io_utils import atomic_write_json, atomic_write_text
from normlab.models import count_parameters
from normlab.probe import build_probe
from normlab.probe.store import ProbeStore
from normlab.tracking.metrics_file import MetricsFile
from normlab.tracking.provenance import environment, git_info
from normlab.tracking.wandb_mirror import WandbMirror
from normlab.train.checkpoint import (
    config_differences,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from normlab.train.interrupt import StopRequests
from normlab.train.optim import build_optimizer, build_scheduler
from normlab.train.run_dir import RunDirLock
from normlab.train.tasks import TASKS

TIMING_KEYS = ("wall_s", "train_s", "items_per_s", "finished_at", "resumed", "git_segments")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} was asked for but no CUDA GPU is visible; use device=cpu")
    return torch.device(name)


def train(cfg: DictConfig, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Train (or resume, or skip if complete) the run described by `cfg` in `run_dir`."""
    run_dir = Path(run_dir)
    with RunDirLock(run_dir):
        return _Run(cfg, run_dir).execute()


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
        self.device = pick_device(str(cfg.device))
        torch.manual_seed(cfg.seed)
        self.task = TASKS.get(str(cfg.task))(cfg, self.device)
        self.model = self.task.model
        self.probe = build_probe(cfg.get("probe"), self.model)
        self.probe_store = ProbeStore(
            self.dir / "probe", cfg.get("probe", {}).get("flush_every", 1000)
        )
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
        atomic_write_text(self.dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        self.metrics = MetricsFile(
            self.dir / "metrics.csv",
            ["step", "epoch", "lr", "loss", *self.task.train_keys, "items_per_s"],
            offsets and offsets["metrics"],
        )
        self.evals = MetricsFile(
            self.dir / "eval.csv",
            ["step", "epoch", *self.task.eval_keys],
            offsets and offsets["eval"],
        )
        self.wandb = None
        if cfg.logger.name == "wandb":
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
        set_rng_state(ckpt["rng"])
        self.probe_store.truncate_after(self.step)
        if self.probe is not None:
            self.probe.load_state_dict(ckpt.get("probe", {}))
        print(f"resuming {self.dir} at step {self.step} (epoch {self.epoch})")
        return ckpt["offsets"]

    # ----------------------------------------------------------------------------- the loop
    def _loop(self, stop: StopRequests) -> str:
        cfg = self.cfg.trainer
        interrupt_at = cfg.get("simulate_interrupt_at_step")
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            disable=_progress_off(cfg.progress),
            dynamic_ncols=True,
            desc=f"{self.cfg.norm.name} s{self.cfg.seed}",
        )
        try:
            while self.step < self.total_steps and not self.early_stopped:
                t0, n0 = time.perf_counter(), 0
                for batch in self.task.train_batches(self.epoch, self.batch_in_epoch):
                    loss_value, n = self._train_step(batch)
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
                    if stop.requested or self.step >= self.total_steps:
                        break
                if stop.requested:
                    self._save()
                    bar.write(
                        f"stopped by signal {stop.signum} at step {self.step}; checkpoint saved"
                    )
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

    def _train_step(self, batch: Any) -> tuple[float, int]:
        t = time.perf_counter()
        self.model.train()
        if self.probe is not None:
            self.probe.begin_step(self.step + 1)
        loss, batch_metrics, n = self.task.train_loss(batch)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            self._diverged(loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.probe is not None:
            self.probe.after_backward()  # before clipping and the step touch the gradients
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
        row = {"step": self.step, "epoch": self.epoch, "lr": lr, "loss": loss_value}
        row |= {k: float(v) for k, v in batch_metrics.items()}
        self.metrics.write(row | {"items_per_s": round(n / dt, 1)})
        if self.wandb:
            self.wandb.log({f"train/{k}": v for k, v in row.items() if k != "step"}, self.step)
        return loss_value, n

    def _record_probe(self) -> None:
        rows = self.probe.end_step(self.step, self.epoch, self.step / self.total_steps)
        self.probe_store.add(rows)
        if self.wandb and rows:
            keys = ("mean_dist", "var_dist", "tid_mean", "tid_var", "grad_mean", "grad_var")
            self.wandb.log(
                {f"probe/{r['layer']}/{k}": float(r[k]) for r in rows for k in keys if k in r},
                self.step,
            )

    def _diverged(self, value: float) -> None:
        self.metrics.flush()
        if self.ckpt_path.exists():
            kept = f"the last good checkpoint {self.ckpt_path} (step {load_checkpoint(self.ckpt_path)['progress']['step']}) is kept"
        else:
            kept = "no checkpoint had been written yet"
        atomic_write_json(
            self.dir / "summary.json",
            {"status": "diverged", "diverged_at_step": self.step + 1, "config": self.config},
        )
        raise TrainingDiverged(
            f"the training loss became {value} at step {self.step + 1} (epoch {self.epoch}); "
            f"training stopped and {kept}; lower optim.lr or try another norm"
        )

    def _evaluate(self) -> None:
        self.last_eval = self.task.evaluate()
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
        if keep <= 0:
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
        if finalize is not None:
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
            "config": self.config,
        }
        if status == "complete":  # an interrupted run's summary would be mistaken for a result
            atomic_write_json(self.dir / "summary.json", summary)
        return summary


def _progress_off(setting: Any) -> bool | None:
    """tqdm's `disable`: None = on only when stderr is a terminal."""
    if setting in ("auto", None):
        return None
    return not bool(setting)
