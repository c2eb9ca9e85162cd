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


def sweep_report(sweep_dir: Path, started: float) -> dict[str, str]:
    """Status of every job folder in `sweep_dir` that this sweep touched (by modification time)."""
    report = {}
    for run_dir in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()):
        # Hydra rewrites .hydra/overrides.yaml when a job starts in the folder.
        marker = run_dir / ".hydra" / "overrides.yaml"
        if marker.exists() and marker.stat().st_mtime >= started - 1:
            report[run_dir.name] = job_status(run_dir, started)
    return report


class SweepReport(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

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
