"""Everything a run records besides its checkpoints: config.yaml, metrics.csv (one row per step),
eval.csv (one row per evaluation), probe/ (the probe's rows), the wandb mirror and summary.json.

The training loop hands over what to record and gets back the metric files' offsets for its
checkpoint; the recorder knows nothing of training (normlab.tracking does not import normlab.train).
Under torchrun rank 0 records the run. Another rank records only its own probe rows, and only when
its BN statistics are its own (per-rank BN: probe/rank<r>/; synchronized statistics would repeat
rank 0's), and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from normlab.io_utils import atomic_write_json, atomic_write_text
from normlab.probe.batch_stats import BN_COLUMNS, DRIFT_COLUMNS, PN_COLUMNS
from normlab.probe.store import ProbeStore
from normlab.tracking.metrics_file import MetricsFile
from normlab.tracking.wandb_mirror import WandbMirror

PROBE_SERIES = (*BN_COLUMNS, *PN_COLUMNS, *DRIFT_COLUMNS)  # mirrored to wandb per layer
SUMMARY = "summary.json"


def completed_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a run in `run_dir` that finished (status complete), else None."""
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") == "complete" else None


class RunRecorder:
    """Opens a run's records: new ones, or, resuming (`resume_step` and the checkpoint's
    `offsets`), the existing ones cut back to the checkpoint, so that they end up as an
    uninterrupted run's."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        config: dict[str, Any],
        *,
        rank: int,
        own_probe_rows: bool,
        train_keys: Sequence[str],
        eval_keys: Sequence[str],
        resume_step: int | None = None,
        offsets: Mapping[str, int] | None = None,
    ) -> None:
        self.dir, self.config, self.main = Path(run_dir), config, rank == 0
        self.probe_store: ProbeStore | None = None
        if self.main or own_probe_rows:
            folder = self.dir / "probe" if self.main else self.dir / "probe" / f"rank{rank}"
            flush_every = (cfg.get("probe") or {}).get("flush_every", 1000)
            self.probe_store = ProbeStore(folder, flush_every)
            if resume_step is not None:
                self.probe_store.truncate_after(resume_step)
        self.metrics: MetricsFile | None = None
        self.evals: MetricsFile | None = None
        self.wandb: WandbMirror | None = None
        if not self.main:
            return
        atomic_write_text(self.dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        columns = ["step", "epoch", "lr", "loss", "loss_normalizer", *train_keys, "items_per_s"]
        self.metrics = MetricsFile(self.dir / "metrics.csv", columns, _at(offsets, "metrics"))
        columns = ["step", "epoch", *eval_keys]
        self.evals = MetricsFile(self.dir / "eval.csv", columns, _at(offsets, "eval"))
        if cfg.logger.name == "wandb":
            self.wandb = WandbMirror(cfg.logger, self.dir, config, name=self.dir.name)

    def log_step(self, row: Mapping[str, Any], items_per_s: float) -> None:
        """One training step's row (`step`, `epoch`, `lr`, `loss`, ...)."""
        if self.metrics is not None:
            self.metrics.write({**row, "items_per_s": items_per_s})
        if self.wandb:
            self.wandb.log({f"train/{k}": v for k, v in row.items() if k != "step"}, row["step"])

    def log_probe(self, rows: list[Mapping[str, Any]], step: int) -> None:
        """The probe's rows of one step: stored, and every statistic column of every kind (bn, pn,
        ln drift) mirrored per layer."""
        if self.probe_store is not None:
            self.probe_store.add(rows)
        if self.wandb and rows:
            self.wandb.log(
                {
                    f"probe/{r['layer']}/{k}": float(r[k])
                    for r in rows
                    for k in PROBE_SERIES
                    if k in r and r[k] == r[k]  # NaN: not defined for this layer/step
                },
                step,
            )

    def log_eval(self, step: int, epoch: int, metrics: Mapping[str, Any]) -> None:
        if self.evals is not None:
            self.evals.write({"step": step, "epoch": epoch, **metrics})
            self.evals.flush()
        if self.wandb:
            self.wandb.log({f"eval/{k}": v for k, v in metrics.items()}, step)

    def flush(self) -> dict[str, int] | None:
        """Everything recorded so far to disk, for a checkpoint: on rank 0 the metric files'
        offsets, which the checkpoint keeps so that a resume cuts the files back to them."""
        if self.probe_store is not None:
            self.probe_store.flush()
        if self.metrics is None or self.evals is None:
            return None
        return {"metrics": self.metrics.flush(), "eval": self.evals.flush()}

    def close(self) -> None:
        """Write what is buffered and close the files (the wandb run stays open for `finish`)."""
        if self.probe_store is not None:
            self.probe_store.flush()
        for file in (self.metrics, self.evals):
            if file is not None:
                file.close()

    def diverged(self, step: int) -> None:
        """A NaN or infinite value at `step`: summary.json says so; the rows so far are kept."""
        if not self.main:
            return
        if self.metrics is not None:
            self.metrics.flush()
        summary = {"status": "diverged", "diverged_at_step": step, "config": self.config}
        atomic_write_json(self.dir / SUMMARY, summary)
        if self.wandb:
            self.wandb.finish(exit_code=1)

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write summary.json of a complete run (an interrupted run's would be mistaken for a
        result), give wandb its flat entries, end the wandb run; returns `summary`."""
        if summary["status"] == "complete" and self.main:
            atomic_write_json(self.dir / SUMMARY, summary)
        if self.wandb:
            self.wandb.summary({k: v for k, v in summary.items() if not isinstance(v, dict)})
            self.wandb.finish()
        return summary


def _at(offsets: Mapping[str, int] | None, name: str) -> int | None:
    """A metric file's offset to cut back to; None: a new run, a new file."""
    return None if offsets is None else offsets[name]
