"""Where a run stands: the counters the loop advances, a checkpoint keeps and a resume restores.

The fields are listed once, here: `progress()` is checkpoints/last.pt's "progress" entry (one key per
field, under the field's name, as checkpoints have been written since format 1), `resume()` reads it
back and `summary_fields()` reports it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs done
    batch_in_epoch: int = 0  # batches of the current epoch done (a resume skips them)
    train_s: float = 0.0  # seconds spent in training steps, every segment of the run
    items: int = 0  # images or target tokens trained on
    wall_s: float = 0.0  # wall time of the segments before this one (saved: up to the save)
    resumed: int = 0  # how many times the run was resumed
    best: float = math.inf  # early stopping: the best value of trainer.early_stop_metric so far
    bad_evals: int = 0  # evaluations since that value last improved
    early_stopped: bool = False
    git_segments: list[dict[str, Any]] = field(default_factory=list)  # the code of each segment
    # When this segment started (perf_counter): not saved, a resumed segment has its own.
    started: float = field(default_factory=time.perf_counter, repr=False, compare=False)

    def wall_time(self) -> float:
        """Seconds of wall time of the whole run, every segment up to now."""
        return self.wall_s + time.perf_counter() - self.started

    def progress(self) -> dict[str, Any]:
        """The checkpoint's "progress" entry: every field but `started`, wall time up to now."""
        saved = {f.name: getattr(self, f.name) for f in _saved_fields()}
        return saved | {"wall_s": self.wall_time()}

    def resume(self, progress: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's "progress", as one more segment of that run.

        Compatibility: checkpoints written before early stopping and git segments existed lack
        those keys; a missing key keeps its field's default (its value in those runs).
        """
        this_segment = self.git_segments
        for f in _saved_fields():
            if f.name in progress:
                setattr(self, f.name, progress[f.name])
        self.resumed = progress.get("resumed", 0) + 1
        self.git_segments = list(progress.get("git_segments", [])) + this_segment

    def record_eval(self, value: float | None, patience: int | None) -> None:
        """Early stopping: count evaluations without an improvement of `value` (lower is better);
        stop after `patience` of them in a row. Nothing to count without patience or value."""
        if not patience or value is None:
            return
        if value < self.best:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
            self.early_stopped = self.bad_evals >= patience

    def summary_fields(self, unit: str) -> dict[str, Any]:
        """summary.json's entries about the run's progress and speed (`unit`: what items are)."""
        return {
            "wall_s": round(self.wall_time(), 2),
            "train_s": round(self.train_s, 2),
            "items_per_s": round(self.items / max(self.train_s, 1e-9), 1),
            "unit": unit,
            "resumed": self.resumed,
            "early_stopped": self.early_stopped,
        }


def _saved_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainState) if f.name != "started"]
