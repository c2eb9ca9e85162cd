"""Does bfloat16 change a conclusion? One run in float32 and the same run (same config and seed)
under bfloat16 autocast, compared on what the suite concludes from: the final metrics, and the
Figure 2 statistics of the first BN layer per 20% window (their medians, and the bf16/fp32 ratio).

The yardstick is the seed-to-seed spread: a difference smaller than what another seed gives is no
difference a conclusion could rest on. `spread` maps a metric to that spread (a sample std over
seeds measured elsewhere, stated with its source). A pair may instead carry a `twin`: the float32
run again with another seed. Its final metrics give the spread of those not in `spread` (the sample
std of two values, |a − b|/√2), and its window medians the seed-to-seed ratio that bf16's window
ratios are judged against. A metric without either is reported, not judged. The window yardstick
is normlab.analysis.bn_variants' (a bf16 run is one more variant of its float32 base).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normlab.analysis.bn_variants import median_ratios, read_summary, within_seed
from normlab.analysis.comparisons import medians
from normlab.analysis.series import load_series

FINAL_METRICS = ("test_acc", "valid_loss", "bleu", "sacrebleu")
WINDOW_COLUMNS = ("mean_dist", "var_dist", "tid_mean", "tid_var")


@dataclass
class Pair:
    label: str
    fp32: Path
    bf16: Path
    twin: Path | None = None  # the float32 run with another seed


def _precision(summary: dict[str, Any]) -> str:
    return str(summary.get("precision", summary.get("config", {}).get("trainer", {}).get("amp")))


def compare(pair: Pair, spread: dict[str, tuple[float, str]]) -> dict[str, Any]:
    """Final metrics and window medians of both runs, their differences, and the verdicts."""
    a, b = read_summary(pair.fp32), read_summary(pair.bf16)
    t = read_summary(pair.twin) if pair.twin else {}
    finals = []
    for m in FINAL_METRICS:
        if m in a and m in b:
            diff = float(b[m]) - float(a[m])
            std, source = spread.get(m, (math.nan, ""))
            if m not in spread and m in t:
                std = abs(float(t[m]) - float(a[m])) / math.sqrt(2)
                source = f"seeds {a.get('seed')} and {t.get('seed')} in float32"
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
    st = load_series("twin", pair.twin) if pair.twin else None
    windows = []
    for col in WINDOW_COLUMNS:
        ma, mb = medians(sa, col), medians(sb, col)
        row = {"column": col, "fp32": ma, "bf16": mb, "ratio": median_ratios(ma, mb)}
        if st is not None:
            # bf16 moves a window median no more than another seed does: the largest |log ratio|
            # over the windows, bf16's against the twin's (None: a window without data).
            row["seed_ratio"] = median_ratios(ma, medians(st, col))
            row["within_seed"] = within_seed(row["ratio"], row["seed_ratio"])
        windows.append(row)
    return {
        "label": pair.label,
        "layer": sa.layer,
        "fp32_run": str(pair.fp32),
        "bf16_run": str(pair.bf16),
        "twin_run": str(pair.twin) if pair.twin else None,
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
            *([f"- float32, another seed: `{r['twin_run']}`"] if r.get("twin_run") else []),
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
        twin = r.get("twin_run") is not None
        lines += [
            "",
            "| Figure 2 median, bf16 / fp32 | 0-20% | 20-40% | 40-60% | 60-80% | 80-100% |"
            + (" within the seed spread |" if twin else ""),
            "|---|---|---|---|---|---|" + ("---|" if twin else ""),
        ]
        for w in r["windows"]:
            cells = " | ".join(f"{x:.3f}" for x in w["ratio"])
            if twin:
                seed = " | ".join(f"{x:.3f}" for x in w["seed_ratio"])
                verdict = {None: "not judged", True: "yes", False: "NO"}[w["within_seed"]]
                lines.append(f"| {w['column']} | {cells} | {verdict} |")
                lines.append(f"| {w['column']}, other seed / fp32 | {seed} | |")
            else:
                lines.append(f"| {w['column']} | {cells} |")
        lines.append("")
    return "\n".join(lines) + "\n"
