"""Does bfloat16 change a conclusion? One run in float32 and the same run (same config and seed)
under bfloat16 autocast, compared on what the suite concludes from: the final metrics, and the
Figure 2 statistics of the first BN layer per 20% window (their medians, and the bf16/fp32 ratio).

The yardstick is the seed-to-seed spread: a difference smaller than what another seed gives is no
difference a conclusion could rest on. `spread` maps a metric to that spread (a sample std over
seeds measured elsewhere, stated with its source); a metric without one is reported, not judged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normlab.analysis.comparisons import medians
from normlab.analysis.series import load_series

FINAL_METRICS = ("test_acc", "valid_loss", "bleu", "sacrebleu")
WINDOW_COLUMNS = ("mean_dist", "var_dist", "tid_mean", "tid_var")


@dataclass
class Pair:
    label: str
    fp32: Path
    bf16: Path


def _summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def _precision(summary: dict[str, Any]) -> str:
    return str(summary.get("precision", summary.get("config", {}).get("trainer", {}).get("amp")))


def compare(pair: Pair, spread: dict[str, tuple[float, str]]) -> dict[str, Any]:
    """Final metrics and window medians of both runs, their differences, and the verdicts."""
    a, b = _summary(pair.fp32), _summary(pair.bf16)
    finals = []
    for m in FINAL_METRICS:
        if m in a and m in b:
            diff = float(b[m]) - float(a[m])
            std, source = spread.get(m, (math.nan, ""))
            within = None if not math.isfinite(std) else abs(diff) <= 2 * std
            finals.append(
                {
                    "metric": m,
                    "fp32": a[m],
                    "bf16": b[m],
                    "diff": diff,
                    "seed_std": std,
                    "seed_std_source": source,
                    "within_2_std": within,
                }
            )
    sa, sb = load_series("fp32", pair.fp32), load_series("bf16", pair.bf16)
    windows = []
    for col in WINDOW_COLUMNS:
        ma, mb = medians(sa, col), medians(sb, col)
        windows.append(
            {
                "column": col,
                "fp32": ma,
                "bf16": mb,
                "ratio": [y / x if x else math.nan for x, y in zip(ma, mb, strict=True)],
            }
        )
    return {
        "label": pair.label,
        "layer": sa.layer,
        "fp32_run": str(pair.fp32),
        "bf16_run": str(pair.bf16),
        "precisions": [_precision(a), _precision(b)],
        "wall_s": [a.get("wall_s"), b.get("wall_s")],
        "finals": finals,
        "windows": windows,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines += [
            f"## {r['label']} (first BN layer `{r['layer']}`)",
            "",
            f"- float32: `{r['fp32_run']}` ({r['precisions'][0]}, {r['wall_s'][0]} s)",
            f"- bfloat16: `{r['bf16_run']}` ({r['precisions'][1]}, {r['wall_s'][1]} s)",
            "",
            "| metric | float32 | bf16 | bf16 − fp32 | seed std (source) | within 2 std |",
            "|---|---|---|---|---|---|",
        ]
        for f in r["finals"]:
            std = (
                "–"
                if not math.isfinite(f["seed_std"])
                else f"{f['seed_std']:.4g} ({f['seed_std_source']})"
            )
            within = {None: "not judged", True: "yes", False: "NO"}[f["within_2_std"]]
            lines.append(
                f"| {f['metric']} | {f['fp32']:.4g} | {f['bf16']:.4g} | {f['diff']:+.4g} | {std} | {within} |"
            )
        lines += [
            "",
            "| Figure 2 median, bf16 / fp32 | 0-20% | 20-40% | 40-60% | 60-80% | 80-100% |",
            "|---|---|---|---|---|---|",
        ]
        for w in r["windows"]:
            lines.append(f"| {w['column']} | " + " | ".join(f"{x:.3f}" for x in w["ratio"]) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
