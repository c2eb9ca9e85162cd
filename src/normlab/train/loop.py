"""The generic training loop: any registered task, any norm, resumable bit for bit.

Per step it records one row of metrics.csv; per epoch it evaluates (eval.csv) and writes
checkpoints/last.pt; at the end it writes summary.json. A step's numbers (loss, batch metrics,
probe rows) reach the host every `trainer.sync_every` steps in one copy, and always before an
evaluation, a checkpoint and the end (`normlab.train.step_records`). A run interrupted by
SIGTERM/SIGINT writes a checkpoint first, and rerunning the same command continues it; a completed
run is not redone.
Under torchrun every rank runs this loop on its shard of each batch and rank 0 alone writes files
(`normlab.train.distributed`). This module keeps the steps and epochs; what the run trains with is
built in `normlab.train.parts`, where it stands is `normlab.train.state.TrainState`, what last.pt
holds is `normlab.train.run_checkpoint`'s business and what it records where is
`normlab.tracking.run_recorder`'s.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from normlab.errors import UserError
from normlab.tracking.progress import ProgressBar
from normlab.tracking.provenance import git_info, now, run_provenance
from normlab.tracking.run_recorder import RunRecorder, completed_summary
from normlab.train import distributed
from normlab.train.checkpoint import diverged_error, epoch_checkpoints, save_epoch_checkpoint
from normlab.train.interrupt import StopRequests
from normlab.train.parts import RunParts
from normlab.train.preflight import check_same_config
from normlab.train.run_checkpoint import resume_run, save_run
from normlab.train.run_dir import RunDirLock, remove_stale_run_temporaries
from normlab.train.state import TrainState
from normlab.train.step_records import StepRecords

TIMING_KEYS = ("wall_s", "train_s", "items_per_s", "finished_at", "resumed", "git_segments")


def train(cfg: DictConfig, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Train (or resume, or skip if complete) the run described by `cfg` in `run_dir`."""
    run_dir = Path(run_dir)
    # Under torchrun only rank 0 owns (locks and writes) the run directory.
    lock = RunDirLock(run_dir) if distributed.launched_rank() == 0 else contextlib.nullcontext()
    with lock:
        return _Run(cfg, run_dir).execute()


class _Run:
    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg, self.dir = cfg, run_dir
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.ckpt_path = run_dir / "checkpoints" / "last.pt"
        # The code that runs is the code at start: a commit made while a run goes on is not its.
        self.state = TrainState(git_segments=[git_info() | {"started_at": now()}])
        self.last_eval: dict[str, float] = {}

    def execute(self) -> dict[str, Any]:
        done = completed_summary(self.dir) if self.cfg.resume != "never" else None
        if done is not None:
            check_same_config(done.get("config", {}), self.config, self.dir / "summary.json")
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
        self.parts = p = RunParts.build(cfg, world)
        if self.ckpt_path.exists() and cfg.resume == "never":
            raise UserError(
                f"{self.ckpt_path} exists and resume=never; delete the run directory or drop resume=never"
            )
        offsets = None
        if self.ckpt_path.exists():
            offsets, self.last_eval = resume_run(
                self.ckpt_path, self.config, p, self.state, rank=world.rank, seed=cfg.seed
            )
            print(f"resuming {self.dir} at step {self.state.step} (epoch {self.state.epoch})")
        self.recorder = RunRecorder(
            cfg, self.dir, self.config, rank=world.rank, own_probe_rows=not world.sync_bn,
            train_keys=p.task.train_keys, eval_keys=p.task.eval_keys,
            resume_step=None if offsets is None else self.state.step, offsets=offsets,
        )  # fmt: skip
        self.steps = StepRecords(self.state, p.sync_every, self.recorder, self._diverged)
        try:
            with StopRequests(cfg.trainer.get("simulate_interrupt_at_step")) as stop:
                status = self._loop(stop)
        except Exception:
            self.steps.flush_after_failure()
            raise
        finally:
            self.recorder.close()
        finalize = getattr(p.task, "finalize", None)  # e.g. checkpoint averaging + beam search
        if status == "complete" and finalize is not None and world.main:
            self.last_eval = {**self.last_eval, **finalize(self.dir, epoch_checkpoints(self.dir))}
        return self.recorder.finish(self._summary(status))

    # ----------------------------------------------------------------------------- the loop
    def _loop(self, stop: StopRequests) -> str:
        cfg, s, p = self.cfg.trainer, self.state, self.parts
        self.stop_now = False
        desc = f"{self.cfg.norm.name} s{self.cfg.seed}"
        bar = ProgressBar(cfg.progress, p.total_steps, s.step, self.world.main, desc, p.task.unit)
        try:
            while s.step < p.total_steps and not s.early_stopped:
                bar.new_epoch()
                for batch in p.task.train_batches(s.epoch, s.batch_in_epoch):
                    n = self._train_step(batch, stop)
                    s.batch_in_epoch += 1
                    bar.step(s.step, s.epoch, self.steps.last_loss, n)  # the host's newest loss
                    stop.after_step(s.step)
                    if self._stopping(stop) or s.step >= p.total_steps:
                        break
                if self._stopping(stop):
                    self._save()
                    bar.write(f"stopped by a signal at step {s.step}; checkpoint saved")
                    return "interrupted"
                if s.batch_in_epoch >= p.steps_per_epoch:
                    s.epoch, s.batch_in_epoch = s.epoch + 1, 0
                    if s.epoch % cfg.eval_every == 0 or s.step >= p.total_steps:
                        self._evaluate()
                    self._save()
                    if self.world.main:
                        keep = int(cfg.keep_epoch_checkpoints)
                        save_epoch_checkpoint(self.dir, p.model, s.epoch, s.step, keep)
                    if s.early_stopped:
                        bar.write(
                            f"early stop after epoch {s.epoch}: {cfg.early_stop_metric} "
                            f"did not improve for {cfg.early_stop_patience} evaluations"
                        )
                        break
            if s.batch_in_epoch:  # stopped mid-epoch by max_steps
                self._evaluate()
                self._save()
            self.steps.flush()  # nothing is left by now (evaluation and saving copy first): a guard
        finally:
            bar.close()
        return "complete"

    def _stopping(self, stop: StopRequests) -> bool:
        """A signal asked to stop: at once for one process; for several, the request all ranks
        agreed on during the last step's all-reduce, so that none waits for the others forever."""
        return self.stop_now if self.world.distributed else stop.requested

    def _train_step(self, batch: Any, stop: StopRequests) -> int:
        """One optimizer step; returns its number of items. Its row waits on the device for
        `StepRecords.flush`, which records it and checks its loss."""
        t = time.perf_counter()
        world, s, p = self.world, self.state, self.parts
        p.model.train()
        synced = world.distributed and world.sync_bn
        if p.probe is not None:
            p.probe.begin_step(s.step + 1)
        with torch.autocast(p.device.type, p.amp_dtype, enabled=p.amp_dtype is not None):
            loss, batch_metrics, n = p.task.train_loss(batch)
        n_local = n
        loss_value: float | torch.Tensor
        if world.distributed:  # every rank stops, or diverges, after the same step
            # agree_on_step waits for an all-reduce of host numbers every step anyway, so the
            # loss is read (and checked) here, before the backward, as it always was.
            loss_value = loss.item()
            n, bad, self.stop_now = distributed.agree_on_step(
                n_local, not math.isfinite(loss_value), stop.requested, p.device
            )
            if bad:
                self._diverged(loss_value if not math.isfinite(loss_value) else math.nan)
            loss = loss * (n_local * world.size / n)
        else:
            # Checked for NaN by `StepRecords.flush`, up to sync_every - 1 steps later: until then
            # the optimizer may step on a NaN loss. Harmless: the flush comes before any evaluation
            # or checkpoint, reports the first non-finite step, with its value and epoch, and
            # records nothing from it on, so the message and the files are those of sync_every=1.
            loss_value = loss.detach()
        p.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if p.probe is not None and not synced:
            p.probe.after_backward()  # before clipping and the step touch the gradients
        if world.distributed:
            loss_value, batch_metrics = distributed.average_step(
                p.model, world, loss_value, batch_metrics, n_local, n
            )
            if p.probe is not None and synced:
                p.probe.after_backward()  # global γ/β gradients: read after the averaging
        if self.cfg.trainer.grad_clip:
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), self.cfg.trainer.grad_clip)
        lr = p.optimizer.param_groups[0]["lr"]
        p.optimizer.step()
        p.scheduler.step()
        s.step += 1
        probe_rows = (
            [] if p.probe is None else p.probe.end_step(s.step, s.epoch, s.step / p.total_steps)
        )
        # loss_normalizer: what the summed loss was divided by (tokens, images) before the backward;
        # fairseq's convention differentiates the sum, so its gradients are this many times ours.
        row = {"step": s.step, "epoch": s.epoch, "lr": lr, "loss": loss_value, "loss_normalizer": n}
        self.steps.add(row, batch_metrics, probe_rows, n, started=t)
        return n

    def _diverged(
        self, value: float, what: str = "the training loss", step: int = 0, epoch: int | None = None
    ) -> None:
        self.steps.flush()  # the steps before it (when called by the flush: none left)
        step = step or self.state.step + 1
        epoch = self.state.epoch if epoch is None else epoch
        self.recorder.diverged(step)
        raise diverged_error(what, value, step, epoch, self.ckpt_path)

    def _evaluate(self) -> None:
        self.steps.flush()  # a NaN training loss first: the run stops at that step, unevaluated
        if self.world.distributed:  # rank 0's running statistics, so that every rank agrees
            distributed.broadcast_state(self.parts.model)
        self.last_eval = self.parts.task.evaluate()
        for key, value in self.last_eval.items():  # a NaN evaluation is a diverged run too
            if isinstance(value, float) and not math.isfinite(value):
                self._diverged(value, f"the evaluation's {key}", self.state.step)
        t = self.cfg.trainer  # early stopping counts evaluations without improvement
        self.state.record_eval(self.last_eval.get(t.early_stop_metric), t.early_stop_patience)
        self.recorder.log_eval(self.state.step, self.state.epoch, self.last_eval)

    def _save(self) -> None:
        self.steps.flush()  # every step up to the checkpoint on disk; a diverged run saves none
        offsets = self.recorder.flush()
        if self.world.main:
            save_run(self.ckpt_path, self.config, self.parts, self.state, offsets, self.last_eval)

    def _summary(self, status: str) -> dict[str, Any]:
        """summary.json, in this order: how far the run got, what it trained, its last evaluation,
        its progress and speed, its provenance and its config."""
        s, p = self.state, self.parts
        run = {"status": status, "steps": s.step, "epochs": s.step / p.steps_per_epoch}
        run |= p.summary_fields(self.cfg) | self.last_eval | s.summary_fields(p.task.unit)
        return run | run_provenance(s.git_segments, str(p.device)) | {"config": self.config}
