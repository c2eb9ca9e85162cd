"""A finished run's small outputs, copied where they can be committed (e.g. results/runs/...).

A study that spans several machines or working periods keeps each finished run's summary, resolved
config, per-step metrics, evaluations, test translations and probe rows (consolidated into one
Parquet file), and leaves the checkpoints behind. The copy is itself a run directory for every
reader of run directories (figures, tables, aggregation), so they regenerate from it unchanged.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from normlab.errors import UserError
from normlab.probe.store import read_probe

SMALL_FILES = ("summary.json", "config.yaml", "metrics.csv", "eval.csv", "generate-test.txt")


def export_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy the small outputs of the complete run in `run_dir` to `dest` (replaced whole, atomically)."""
    run_dir, dest = Path(run_dir), Path(dest)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise UserError(
            f"{run_dir} holds no finished run (no summary.json); finish it by rerunning its "
            "training command before exporting it"
        )
    status = json.loads(summary_path.read_text()).get("status")
    if status != "complete":
        raise UserError(
            f"{run_dir} is not a complete run (status={status!r}); only complete runs are exported"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        for name in SMALL_FILES:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, tmp / name)
        if (run_dir / "probe").is_dir():
            table = read_probe(run_dir)
            steps = table.column("step")
            first, last = steps[0].as_py(), steps[-1].as_py()
            (tmp / "probe").mkdir()
            pq.write_table(
                table, tmp / "probe" / f"part-{first:010d}-{last:010d}.parquet", compression="zstd"
            )
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest
