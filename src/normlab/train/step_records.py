"""The training steps whose numbers are not on the host yet, and their copy there.

A step's loss, batch metrics and probe rows stay on the device and reach the host every
`trainer.sync_every` steps in one copy (`StepRecords.flush`), and always before an evaluation, a
checkpoint and the end (the loop flushes first): on a GPU every copy waits for the queued work, so
one wait per N steps instead of several per step. The flush records the steps in step order, as
sync_every=1 would have, so that any N writes the same files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from normlab.errors import TrainingDiverged
from normlab.probe.store import plain_rows
from normlab.tracking.run_recorder import RunRecorder
from normlab.train.state import TrainState


class OnNonfinite(Protocol):
    """What a non-finite loss calls: report the divergence at that step (and raise)."""

    def __call__(self, value: float, *, step: int, epoch: int) -> None: ...


@dataclass
class _PendingStep:
    """A finished step whose numbers are not on the host yet."""

    row: dict[str, Any]  # metrics.csv's row; loss and batch metrics may be device tensors
    metric_keys: list[str]  # the batch metrics among its columns (recorded as floats)
    probe_rows: list[dict[str, Any]]
    items: int


class StepRecords:
    """Queues each finished step's row, probe rows, items and seconds; every `every` steps, or when
    asked, copies them to the host and records them with `recorder`. `state.items` counts the steps'
    items, `state.train_s` their seconds, the copies included; `last_loss` is the newest loss on the
    host."""

    def __init__(
        self, state: TrainState, every: int, recorder: RunRecorder, on_nonfinite: OnNonfinite
    ) -> None:
        self.state, self.every, self.recorder = state, every, recorder
        self.on_nonfinite = on_nonfinite
        self.pending: list[_PendingStep] = []
        self.pending_s = 0.0  # seconds the pending steps took, up to their copy to the host
        self.last_loss: float | None = None  # the newest loss on the host (the progress bar's)

    def add(
        self,
        row: dict[str, Any],
        metrics: Mapping[str, Any],
        probe_rows: list[dict[str, Any]],
        items: int,
        started: float,
    ) -> None:
        """Queue a step that began at `started` (perf_counter): its metrics.csv `row` without the
        batch `metrics`, which join it; copy the queue to the host once it holds `every` steps."""
        # (a copy: a metric that is a view of a weight would otherwise change with the next steps)
        row |= {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in metrics.items()}
        self.pending.append(_PendingStep(row, list(metrics), probe_rows, items))
        self.state.items += items
        self.pending_s += time.perf_counter() - started
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        """Copy the pending steps' numbers to the host in one transfer, then record them in step
        order. A non-finite loss stops the run there, as if it had been read at its own step: the
        steps before it are recorded, it and those after it are not.

        items_per_s of each of these rows is their steps' items over their time, this copy (the
        wait for the device) included; with sync_every=1 it is the step's own rate."""
        if not self.pending:
            return
        t = time.perf_counter()
        pending, self.pending = self.pending, []
        flat = plain_rows([x.row for x in pending] + [r for x in pending for r in x.probe_rows])
        seconds = self.pending_s + time.perf_counter() - t
        self.pending_s = 0.0
        self.state.train_s += seconds
        items_per_s = round(sum(x.items for x in pending) / max(seconds, 1e-9), 1)
        rows, probe_rows = flat[: len(pending)], iter(flat[len(pending) :])
        for step, row in zip(pending, rows, strict=True):
            row["loss"] = float(row["loss"])
            for key in step.metric_keys:
                row[key] = float(row[key])
            if not math.isfinite(row["loss"]):
                self.on_nonfinite(row["loss"], step=row["step"], epoch=row["epoch"])
            self.last_loss = row["loss"]
            self.recorder.log_probe([next(probe_rows) for _ in step.probe_rows], row["step"])
            self.recorder.log_step(row, items_per_s=items_per_s)

    def flush_after_failure(self) -> None:
        """An error stopped the loop: record the steps that finished before it, as sync_every=1
        would have. A NaN among them is where sync_every=1 would have stopped first, so that
        divergence is what is reported; if the device cannot be read any more, the error stands."""
        try:
            self.flush()
        except TrainingDiverged:
            raise
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
