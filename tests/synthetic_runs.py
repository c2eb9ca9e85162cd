"""Run directories with made-up probe series, for the analysis tests: the same files a training
run writes (probe/part-*.parquet, metrics.csv, optionally summary.json and config.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

BN_FLOATS = ("mean_dist", "var_dist", "mean_rms_dist", "var_rms_dist", "tid_mean", "tid_var")
BN_FLOATS += ("grad_mean", "grad_var", "batch_var_mean")


def write_run(
    run_dir: Path,
    steps: int,
    columns: dict[str, np.ndarray],
    *,
    planned: int | None = None,
    layer: str = "stem_norm",
    d: int = 16,
    metrics: dict[str, np.ndarray] | None = None,
    summary: dict | None = None,
    config: dict | None = None,
    seed: int = 0,
) -> Path:
    """Probe rows for steps 1..steps of one BN layer; columns not given are lognormal noise.
    `planned`: the steps the run had planned (the probe's frac is step/planned, as the trainer's)."""
    rng = np.random.default_rng(seed)
    step = np.arange(1, steps + 1)
    planned = planned or steps
    table = {
        "step": step,
        "epoch": step // 100,
        "frac": step / planned,
        "layer": [layer] * steps,
        "layer_index": np.zeros(steps, dtype=int),
        "kind": ["bn"] * steps,
        "d": np.full(steps, d),
        "count": np.full(steps, 128),
    }
    for c in BN_FLOATS:
        v = columns.get(c)
        table[c] = np.asarray(v, float) if v is not None else rng.lognormal(-3, 0.3, steps)
    (run_dir / "probe").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), run_dir / "probe" / f"part-{1:010d}-{steps:010d}.parquet")
    metrics = {"loss": rng.lognormal(0, 0.1, steps)} | (metrics or {})
    lines = [",".join(["step", *metrics])]
    lines += [
        ",".join([str(s), *(repr(float(metrics[k][i])) for k in metrics)])
        for i, s in enumerate(step)
    ]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    if config is not None:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def lognormal(rng: np.random.Generator, median: np.ndarray | float, sigma: float, n: int):
    return np.asarray(median) * rng.lognormal(0, sigma, n)
