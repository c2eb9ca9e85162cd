"""Which of the official Transformer_BN's differences from our masked BN moves the Figure 2
distances? Runs that each change one thing (LayerScaling, momentum 0.05, both, the official module
with its mean-filled pads) against the masked-BN base run, on the first BN layer's medians per 20%
window, with the base run's seed twin as the yardstick: a variant "moves" a metric when its largest
|log(variant/base)| over the windows exceeds the twin's, else it is "within seed spread".

An effect (`Effect`) is the window ratio of any two runs, e.g. the pads' = bn_official / (LayerScaling
+ momentum), judged against the same yardstick, so the decomposition is read from the data.

The yardstick functions (median_ratios, largest_log_ratio, within_seed) and read_summary serve
normlab.analysis.precision_pair too, whose bf16 run is a variant of its float32 base in the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from normlab.analysis.batch_stats_figure import RUN_KEYS
from normlab.analysis.comparisons import medians
from normlab.analysis.series import Series, load_series
from normlab.analysis.verdicts import ratio
from normlab.analysis.windows import WINDOWS, window_label
from normlab.errors import UserError

FINAL_METRICS = ("bleu", "sacrebleu", "valid_loss")
# The probe columns compared (src/normlab/probe/batch_stats.py BN_COLUMNS): the distances, the input
# scale they track, the scale-free TIDs, the unnormalized distance, feature concentration, and the
# batch's real-token share (what the official module's mean-filled pads depend on).
WINDOW_COLUMNS = {
    "mean_dist": "D_μ = (1/d)‖μ_B − μ‖₂",
    "var_dist": "D_σ² = (1/d)‖σ²_B − σ²‖₂",
    "batch_var_mean": "input variance, mean_c σ²_B,c",
    "tid_mean": "TID of the mean",
    "tid_var": "TID of the variance",
    "var_dist_l2": "‖σ²_B − σ²‖₂, unnormalized",
    "participation_ratio": "participation ratio of σ²_B (d: spread evenly, 1: one feature)",
    "max_var_share": "largest feature's share of σ²_B",
    "real_fraction": "real (non-pad) share of the batch's positions",
}
MOVES, WITHIN, NOT_JUDGED = "moves", "within seed spread", "not judged (a window has no data)"


# -- the seed yardstick -------------------------------------------------------------------------


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def median_ratios(base: Sequence[float], other: Sequence[float]) -> list[float]:
    """other/base per window; NaN where either median is missing or the base's is 0."""
    return [ratio(y, x) for x, y in zip(base, other, strict=True)]


def largest_log_ratio(ratios: Sequence[float]) -> float:
    """max |log r| over the windows: inf when a ratio is 0 or negative (no log to compare, but
    certainly a change), NaN when a window has no ratio at all (nothing to judge)."""
    if any(math.isnan(r) for r in ratios):
        return math.nan
    return max((abs(math.log(r)) if r > 0 else math.inf) for r in ratios)


def within_seed(ratios: Sequence[float], seed_ratios: Sequence[float]) -> bool | None:
    """Whether `ratios` move the window medians no more than another seed does (None: a window
    lacks data on either side, so there is no verdict rather than a wrong one)."""
    mine, seed = largest_log_ratio(ratios), largest_log_ratio(seed_ratios)
    if math.isnan(mine) or math.isnan(seed):
        return None
    return mine <= seed


def verdict(ratios: Sequence[float], seed_ratios: Sequence[float]) -> str:
    return {None: NOT_JUDGED, True: WITHIN, False: MOVES}[within_seed(ratios, seed_ratios)]


# -- the comparison -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    label: str
    path: Path


@dataclass(frozen=True)
class Effect:
    """name = numerator run / denominator run, both given by their labels."""

    name: str
    numerator: str
    denominator: str


def parse_run(text: str, flag: str) -> Run:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise UserError(
            f"{flag} {text!r} is not LABEL=RUN_DIR; write e.g. {flag} bn=runs/.../norm=bn"
        )
    return Run(label, Path(path))


def parse_effect(text: str) -> Effect:
    name, sep, rest = text.partition("=")
    numerator, slash, denominator = rest.partition("/")
    if not (sep and slash and name and numerator and denominator):
        raise UserError(
            f"--effect {text!r} is not NAME=LABEL/LABEL; write e.g. --effect pads=bn_official/LS+mom"
        )
    return Effect(name, numerator, denominator)


def check_runs(runs: Sequence[Run], effects: Sequence[Effect] = ()) -> None:
    """One sentence on the first problem: a label given twice, an effect naming no run, a run
    folder without summary.json (missing, or not finished)."""
    labels = [r.label for r in runs]
    for label in labels:
        if labels.count(label) > 1:
            raise UserError(f"the label {label!r} names two runs; give each run its own label")
    for e in effects:
        for label in (e.numerator, e.denominator):
            if label not in labels:
                raise UserError(
                    f"--effect {e.name!r} names {label!r}, which labels no run; the labels are "
                    f"{', '.join(labels)}"
                )
    for r in runs:
        if not (r.path / "summary.json").exists():
            raise UserError(
                f"{r.path} has no summary.json: train and commit that run first "
                "(make fig2-bn-variants without NOTRAIN=1), or give its right folder"
            )


def _judged(
    label: str, base: Sequence[float], other: Sequence[float], seed: Sequence[float]
) -> dict[str, Any]:
    r = median_ratios(base, other)
    finite = [x for x in r if math.isfinite(x)]
    return {
        "label": label,
        "ratio": r,
        "median_ratio": float(np.median(finite)) if finite else math.nan,
        "largest_log_ratio": largest_log_ratio(r),
        "verdict": verdict(r, seed),
    }


def _run_record(role: str, run: Run, s: Series, summary: dict[str, Any]) -> dict[str, Any]:
    """What the report says of one run, provenance included: its commit(s) over every segment,
    data, hardware and wall time, as the figures' provenance.json does."""
    return {
        "role": role,
        "label": run.label,
        "run": str(run.path),
        "layer": s.layer,
        "d": s.d,
        "steps": s.steps_trained,
        "norm": s.config.get("norm"),
        "seed": summary.get("seed"),
        "finals": {m: summary.get(m) for m in FINAL_METRICS},
        "provenance": {k: summary.get(k) for k in (*RUN_KEYS, "torch")} | s.provenance,
    }


def compare(
    base: Run, twin: Run, variants: Sequence[Run], effects: Sequence[Effect] = ()
) -> dict[str, Any]:
    """The first BN layer of every run: window medians, each variant's and each effect's ratio
    per window with its verdict against the twin, and every run's final metrics."""
    runs = [base, twin, *variants]
    check_runs(runs, effects)
    series = {r.label: load_series(r.label, r.path) for r in runs}
    roles = ["base", "twin", *["variant"] * len(variants)]
    records = [
        _run_record(role, r, series[r.label], read_summary(r.path))
        for role, r in zip(roles, runs, strict=True)
    ]
    # A column no run logs (real_fraction before the probe had it) is left out, not shown as NaN.
    columns = [c for c in WINDOW_COLUMNS if any(s.has(c) for s in series.values())]
    med = {c: {label: medians(s, c) for label, s in series.items()} for c in columns}
    seed = {c: median_ratios(med[c][base.label], med[c][twin.label]) for c in columns}
    rows = []
    for c in columns:
        b = med[c][base.label]
        rows.append(
            {
                "column": c,
                "description": WINDOW_COLUMNS[c],
                "medians": med[c],
                "seed_ratio": seed[c],
                "seed_largest_log_ratio": largest_log_ratio(seed[c]),
                "variants": [_judged(v.label, b, med[c][v.label], seed[c]) for v in variants],
            }
        )
    decomposition = [
        {
            "name": e.name,
            "numerator": e.numerator,
            "denominator": e.denominator,
            "columns": [
                {"column": c} | _judged(e.name, med[c][e.denominator], med[c][e.numerator], seed[c])
                for c in columns
            ],
        }
        for e in effects
    ]
    return {
        "windows": [window_label(w) for w in range(WINDOWS)],
        "base": base.label,
        "twin": twin.label,
        "runs": records,
        "columns": rows,
        "decomposition": decomposition,
    }


# -- the report ---------------------------------------------------------------------------------


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, fmt)


def _finals_table(result: dict[str, Any]) -> list[str]:
    base = result["runs"][0]["finals"]
    lines = [
        "| run | " + " | ".join(FINAL_METRICS) + " |",
        "|---|" + "---|" * len(FINAL_METRICS),
    ]
    for r in result["runs"]:
        cells = []
        for m in FINAL_METRICS:
            v, b = r["finals"].get(m), base.get(m)
            diff = "" if r["role"] == "base" or v is None or b is None else f" ({v - b:+.3g})"
            cells.append(_num(v) + diff)
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines


def _column_table(result: dict[str, Any], row: dict[str, Any]) -> list[str]:
    base, twin = result["base"], result["twin"]
    windows = " | ".join(result["windows"])
    lines = [
        f"### {row['column']}: {row['description']}",
        "",
        f"| | {windows} | largest \\|log ratio\\| | verdict |",
        "|---|" + "---|" * (len(result["windows"]) + 2),
    ]
    for label, m in row["medians"].items():
        lines.append(f"| {label}, median | " + " | ".join(_num(x) for x in m) + " | | |")
    seed_worst = _num(row["seed_largest_log_ratio"], ".3f")
    cells = " | ".join(_num(x, ".3f") for x in row["seed_ratio"])
    lines.append(f"| {twin} / {base} | {cells} | {seed_worst} | the yardstick |")
    for v in row["variants"]:
        cells = " | ".join(_num(x, ".3f") for x in v["ratio"])
        worst = _num(v["largest_log_ratio"], ".3f")
        lines.append(f"| {v['label']} / {base} | {cells} | {worst} | {v['verdict']} |")
    return [*lines, ""]


def _verdict_line(row: dict[str, Any], v: dict[str, Any]) -> str:
    return (
        f"- {row['column']}, {v['label']}: **{v['verdict']}** (median ratio "
        f"{_num(v['median_ratio'], '.3f')}, largest |log ratio| {_num(v['largest_log_ratio'], '.3f')} "
        f"vs the seed twin's {_num(row['seed_largest_log_ratio'], '.3f')})"
    )


def _effect_cell(e: dict[str, Any], c: dict[str, Any]) -> str:
    finite = [x for x in c["ratio"] if math.isfinite(x)]
    spread = f"{min(finite):.3f}–{max(finite):.3f}; " if finite else ""
    return f"{e['name']} {_num(c['median_ratio'], '.3f')}× ({spread}{c['verdict']})"


def _made_by(prov: dict[str, Any]) -> str:
    """'; commit abc1234 (clean), 46 min on <cpu>' from a run record's provenance."""
    parts = []
    if prov.get("git_commits"):
        state = {True: "dirty", False: "clean"}.get(prov.get("git_dirty"), "dirty state unknown")
        parts.append(f"commit {', '.join(c[:7] for c in prov['git_commits'])} ({state})")
    where = prov.get("gpu") or prov.get("cpu")
    took = f"{prov['wall_s'] / 60:.0f} min" if prov.get("wall_s") is not None else ""
    if took or where:
        parts.append(" on ".join(x for x in (took, where) if x))
    return "; " + ", ".join(parts) if parts else ""


def markdown(result: dict[str, Any]) -> str:
    base, twin = result["base"], result["twin"]
    lines = [
        "# Which difference from masked BN moves the Figure 2 distances",
        "",
        f"First BN layer of each run, medians per 20% window of training. Base: {base}; yardstick: "
        f"{twin} (the base with another seed). A variant **moves** a metric when its largest "
        f"|log(variant/base)| over the windows exceeds {twin}'s, else it is within seed spread.",
        "",
    ]
    for r in result["runs"]:
        norm = r["norm"] or {}
        setting = ", ".join(
            f"{k}={norm[k]}" for k in ("name", "momentum", "layer_scaling") if k in norm
        )
        lines.append(
            f"- {r['label']} ({r['role']}): `{r['run']}`, layer `{r['layer']}` (d={r['d']}), "
            f"{r['steps']} steps, seed {r['seed']}"
            + (f"; norm {setting}" if setting else "")
            + _made_by(r.get("provenance") or {})
        )
    lines += ["", "## Final metrics (difference from the base)", "", *_finals_table(result), ""]
    lines += ["## Window medians and ratios", ""]
    for row in result["columns"]:
        lines += _column_table(result, row)
    lines += ["## Verdicts", ""]
    for row in result["columns"]:
        lines += [_verdict_line(row, v) for v in row["variants"]]
    if result["decomposition"]:
        defs = "; ".join(
            f"{e['name']} = {e['numerator']} / {e['denominator']}" for e in result["decomposition"]
        )
        lines += [
            "",
            "## Decomposition",
            "",
            f"{defs}. Median ratio over the windows (range; verdict against {twin}):",
            "",
        ]
        for i, row in enumerate(result["columns"]):
            cells = [_effect_cell(e, e["columns"][i]) for e in result["decomposition"]]
            lines.append(f"- {row['column']}: " + ", ".join(cells))
    return "\n".join(lines) + "\n"
