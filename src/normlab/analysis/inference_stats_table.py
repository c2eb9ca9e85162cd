"""The table of BN's inference statistics (normlab.train.inference_stats): table.md, table.csv and
provenance.json from the results of several runs."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from normlab.io_utils import atomic_write_json, atomic_write_text

TABLE_METRICS = ("test_acc", "test_loss", "valid_loss", "bleu", "sacrebleu")


def _cell(metric: str, value: Any) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    if metric.endswith("_acc"):
        return f"{100 * value:.2f}%"
    if metric.endswith("_loss"):
        return f"{value:.4f}"
    return f"{value:.2f}"


def table_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run, mode) of the runs that were not skipped."""
    rows = []
    for r in results:
        for mode, entry in r.get("modes", {}).items():
            row = {k: r[k] for k in ("experiment", "scale", "norm", "run_dir", "weights")}
            row |= {"mode": mode, "statistics": entry["statistics"]}
            row |= {m: entry.get(m) for m in TABLE_METRICS}
            rows.append(row)
    return rows


def to_markdown(results: Sequence[dict[str, Any]]) -> str:
    rows = table_rows(results)
    metrics = [m for m in TABLE_METRICS if any(r[m] is not None for r in rows)]
    head = ["run", "mode", "statistics", *metrics]
    lines = [
        "# BN's inference statistics: EMA vs population (PreciseBN) vs batch",
        "",
        "The weights each run was tested with, evaluated with BN's running (EMA) statistics, with",
        "population statistics recomputed over training batches, and with each evaluation batch's",
        "own statistics (dropout off). Made by `make inference-stats` (scripts/inference_stats.py).",
        "A Transformer's valid loss is of its checkpoint average (the weights BLEU is tested with),",
        "so it differs from the valid loss of the run's last epoch in its summary.json.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = [row["experiment"], row["mode"], row["statistics"]]
        cells += [_cell(m, row[m]) for m in metrics]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    for r in results:
        if "skipped" in r:
            lines.append(f"- {r['run_dir']}: {r['skipped']}")
            continue
        line = f"- {r['experiment']} ({r['run_dir']}): weights {r['weights']}"
        gaps = r["modes"].get("precise", {}).get("ema_vs_population")
        if gaps:
            worst = max(gaps, key=lambda k: gaps[k]["var_rel"])
            line += (
                f"; largest EMA vs population variance gap: {worst}, "
                f"mean |σ²_ema/σ²_pop − 1| = {gaps[worst]['var_rel']:.3g}"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def to_csv(results: Sequence[dict[str, Any]]) -> str:
    rows = table_rows(results)
    buf = io.StringIO()
    fields = ["experiment", "scale", "norm", "mode", "statistics", *TABLE_METRICS]
    writer = csv.DictWriter(buf, [*fields, "weights", "run_dir"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_results(
    results: Sequence[dict[str, Any]], out_dir: str | Path, wall_s: float, command: list[str]
) -> Path:
    """table.md, table.csv and provenance.json (code, hardware, runs, wall time) in `out_dir`."""
    from normlab.tracking.provenance import environment, git_info

    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "table.md", to_markdown(results))
    atomic_write_text(out_dir / "table.csv", to_csv(results))
    device = next((r["device"] for r in results if "device" in r), "cpu")
    runs = []
    for r in results:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        keep = ("git_commit", "git_dirty", "data_source", "data_detail", "scale", "steps")
        keep += ("wall_s", "device", "cpu", "gpu", "torch", "config")
        runs.append(
            {"run_dir": r["run_dir"], "weights": r.get("weights"), "skipped": r.get("skipped")}
            | {"run_" + k if k == "wall_s" else k: summary.get(k) for k in keep}
        )
    atomic_write_json(
        out_dir / "provenance.json",
        {
            "made_with": git_info() | {"env": environment(device)},
            "command": command,
            "wall_s": round(wall_s, 2),
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runs": runs,
        },
    )
    return out_dir
