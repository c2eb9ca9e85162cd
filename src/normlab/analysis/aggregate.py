"""Collect the runs of a sweep into one table: mean ± std over seeds per configuration.

A run is a folder holding `config.yaml` (written when it starts) and, once it has finished,
`summary.json`. Runs without a complete summary are listed as incomplete with the reason.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from normlab.train.checkpoint import flatten


@dataclass
class Group:
    key: tuple
    runs: list[dict[str, Any]] = field(default_factory=list)

    def stat(self, metric: str) -> tuple[float, float, int]:
        """(mean, sample std, n) of `metric` over the group's runs that have it; the std of one run
        is NaN (undefined), not 0, so neither the table nor the CSV claims a spread it has not seen."""
        values = [float(r[metric]) for r in self.runs if _is_number(r.get(metric))]
        if not values:
            return math.nan, math.nan, 0
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), std, len(values)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def find_runs(sweep_dir: str | Path) -> list[Path]:
    """Every run folder below `sweep_dir` (itself included)."""
    sweep_dir = Path(sweep_dir)
    # Hydra keeps its own config.yaml in each run's .hydra/: ours is the one beside summary.json.
    skip = {".hydra", "checkpoints"}
    return sorted({p.parent for p in sweep_dir.rglob("config.yaml") if not skip & set(p.parts)})


def load_run(run_dir: Path) -> dict[str, Any]:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    row: dict[str, Any] = {"run_dir": str(run_dir), "config": flatten(config)}
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        row |= {k: v for k, v in summary.items() if k != "config"}
    else:
        row["status"] = (
            "running or interrupted"
            if (run_dir / "checkpoints" / "last.pt").exists()
            else "not started"
        )
    return row


def aggregate(sweep_dir: str | Path, by: list[str]) -> tuple[list[Group], list[dict[str, Any]]]:
    """(groups of complete runs keyed by the config values of `by`, incomplete runs)."""
    groups: dict[tuple, Group] = {}
    incomplete = []
    for run_dir in find_runs(sweep_dir):
        row = load_run(run_dir)
        if row.get("status") != "complete":
            incomplete.append(row)
            continue
        key = tuple(row["config"].get(k) for k in by)
        groups.setdefault(key, Group(key)).runs.append(row)
    return list(groups.values()), incomplete


def fmt(mean: float, std: float, n: int, digits: int = 2) -> str:
    if n == 0:
        return "–"
    if n == 1:  # one run has no spread (its std is NaN)
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def to_markdown(
    groups: list[Group], by: list[str], metrics: list[str], extra: dict[str, dict] | None = None
) -> str:
    """A Markdown table; `extra` maps a column title to {group key: text} (e.g. the paper's numbers)."""
    extra = extra or {}
    head = [*by, *metrics, *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [str(v) for v in g.key]
        cells += [fmt(*g.stat(m)) for m in metrics]
        cells += [str(col.get(g.key, "–")) for col in extra.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv_rows(groups: list[Group], by: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        row = dict(zip(by, g.key, strict=True))
        for m in metrics:
            mean, std, n = g.stat(m)
            row |= {f"{m}_mean": mean, f"{m}_std": std, f"{m}_n": n}
        row["runs"] = len(g.runs)
        rows.append(row)
    return rows


def incomplete_lines(incomplete: list[dict[str, Any]]) -> list[str]:
    out = []
    for row in incomplete:
        status = row.get("status", "?")
        if status == "diverged":
            status = f"diverged at step {row.get('diverged_at_step')}"
        out.append(f"- {row['run_dir']}: {status}")
    return out


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text (header from the first row); empty when there are none."""
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
