"""A Hydra callback that ends every --multirun with one line per job: complete, skipped (already
complete), resumed, diverged, interrupted or failed — and writes the same as sweep_report.json.

It reads the run directories (the jobs may run in other processes or on other machines), so the
report is the same whichever launcher ran them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from normlab.io_utils import atomic_write_json


def job_status(run_dir: Path, started: float) -> str:
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        status = summary.get("status")
        if status == "diverged":
            return f"diverged at step {summary.get('diverged_at_step')}"
        if status == "complete":
            if summary_path.stat().st_mtime < started:
                return "skipped (already complete)"
            return "resumed and completed" if summary.get("resumed") else "complete"
    if (run_dir / "checkpoints" / "last.pt").exists():
        return "interrupted or failed (checkpoint kept: rerun to resume)"
    return "failed before its first checkpoint"


MARKER = ".job."  # <sweep dir>/.job.<job folder name>: touched when a job of a sweep starts


def sweep_report(sweep_dir: Path, started: float) -> dict[str, str]:
    """Status of every job folder in `sweep_dir` that this sweep started (by its marker's time).

    The markers are files beside the run directories, not in them: a job that is skipped
    (complete) or refused writes nothing into its run directory."""
    report = {}
    for marker in sorted(sweep_dir.glob(f"{MARKER}*")):
        if marker.stat().st_mtime >= started - 1:  # a refused new job's folder is removed
            name = marker.name[len(MARKER) :]
            report[name] = job_status(sweep_dir / name, started)
    return report


class SweepReport(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.types import RunMode

        hydra_cfg = config.hydra
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(hydra_cfg.runtime.output_dir)
        marker = Path(hydra_cfg.sweep.dir) / f"{MARKER}{job_dir.name}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        report = sweep_report(sweep_dir, getattr(self, "started", 0.0))
        ok = sum(s.startswith(("complete", "resumed", "skipped")) for s in report.values())
        print(f"sweep {sweep_dir}: {ok} of {len(report)} jobs complete")
        for name, status in report.items():
            print(f"  {name}: {status}")
        atomic_write_json(sweep_dir / "sweep_report.json", report)
