"""Does the variance distance grow with updates, and is it the input's scale or its relative
fluctuation? Figure 2's long-horizon companion: fig2_growth.png/.svg, fig2_growth.json and a
section of fig2_summary.txt.

Per run (first BN layer): var_dist, the input variance batch_var_mean, their quotient (the relative
distance), tid_var, and the model's own input-scale measure from metrics.csv (embed_rms or
stem_weight_norm), each against updates on log axes. The fits are robust: the median per
log-spaced bin of steps, then a Theil-Sen line through log(median) vs log(step), over the run after
its warmup and its first 20% window. The fitted power law of var_dist, extrapolated to the paper's
50,000 updates, is compared with the paper's Transformer_BN last-window median of 1.37.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from normlab.analysis.series import Series
from normlab.analysis.verdicts import (
    RATIO_TOL,
    SLOPE_TOL,
    explain_growth,
    finite,
    ratio,
    theil_sen,
    trend_of,
)
from normlab.analysis.windows import WINDOWS, boxes_per_window

PAPER_VAR_DIST = 1.37  # the paper's Transformer_BN variance distance, median of its last window
PAPER_UPDATES = 50_000
PAPER_D = 512
REACH = 2.0  # "within reach": the extrapolation comes within a factor 2 of the paper's value
FIT_BINS = 10
MIN_PER_BIN = 5  # probed steps a bin needs for its median to count
MIN_SPAN = 2.0  # a fit needs its last step >= 2x its first, or log step barely varies
# (key, column, axis label) of the quantities fitted; "input_scale" is the model's own measure.
QUANTITIES = (
    ("var_dist", "var_dist", "variance distance  (1/d)‖σ²_B − σ²‖₂"),
    ("batch_var_mean", "batch_var_mean", "input variance  mean_c σ²_B,c"),
    ("var_dist_rel", "var_dist_rel", "relative distance  var_dist / batch_var_mean"),
    ("tid_var", "tid_var", "TID (variance)"),
    ("input_scale", None, "input-scale measure / its first value"),
)


def fit_range(s: Series) -> tuple[int, int, str]:
    """(first, last step, why): after the first window and after warmup, if that leaves a span."""
    end = s.steps_trained
    first_window = math.ceil(end / WINDOWS)
    start = max(first_window, s.warmup_steps)
    if end >= MIN_SPAN * start:
        why = f"after the first window (step {first_window})"
        if s.warmup_steps > first_window:
            why = f"after warmup (step {s.warmup_steps}, later than the first window's end)"
        elif s.warmup_steps:
            why += f"; warmup ({s.warmup_steps} steps) ends before it"
        return start, end, why
    return (
        first_window,
        end,
        f"after the first window (step {first_window}); the run has not left its warmup "
        f"({s.warmup_steps} steps) by a factor {MIN_SPAN:g}, so the fit includes warmup steps",
    )


def binned_medians(
    step: np.ndarray,
    values: np.ndarray,
    start: float,
    end: float,
    bins: int = FIT_BINS,
    min_per_bin: int = MIN_PER_BIN,
) -> tuple[np.ndarray, np.ndarray]:
    """(median step, median value) per log-spaced bin of [start, end], positive finite values
    only; bins with fewer than `min_per_bin` of them are left out."""
    step, values = np.asarray(step, float), np.asarray(values, float)
    ok = np.isfinite(values) & (values > 0) & (step >= start) & (step <= end)
    step, values = step[ok], values[ok]
    edges = np.geomspace(max(start, 1), max(end, 1), bins + 1)
    idx = np.clip(np.searchsorted(edges, step, side="right") - 1, 0, bins - 1)
    xs, ys = [], []
    for b in range(bins):
        m = idx == b
        if m.sum() >= min_per_bin:
            xs.append(np.median(step[m]))
            ys.append(np.median(values[m]))
    return np.array(xs), np.array(ys)


def power_fit(step: np.ndarray, values: np.ndarray, start: float, end: float) -> dict[str, Any]:
    """values ≈ exp(intercept) · step**slope over [start, end] (Theil-Sen on binned medians)."""
    x, y = binned_medians(step, values, start, end)
    if x.size < 3:
        return {"slope": math.nan, "intercept": math.nan, "bins": int(x.size)}
    slope, intercept = theil_sen(np.log(x), np.log(y))
    return {"slope": slope, "intercept": intercept, "bins": int(x.size)}


def predict(fit: dict[str, Any], step: float) -> float:
    return math.exp(fit["intercept"] + fit["slope"] * math.log(step))


def quantity(s: Series, key: str, column: str | None) -> np.ndarray | None:
    if key == "input_scale":
        col = s.input_scale_column
        if col is None or col not in s.columns:
            return None
        v = s.columns[col]
        first = v[np.isfinite(v)][:1]
        return v / first[0] if first.size and first[0] else None
    return s.columns.get(column)


def analyse_run(s: Series, compare_with_paper: bool) -> dict[str, Any]:
    start, end, why = fit_range(s)
    out: dict[str, Any] = {
        "label": s.label,
        "layer": s.layer,
        "d": s.d,
        "steps_trained": s.steps_trained,
        "steps_source": s.steps_source,
        "warmup_steps": s.warmup_steps,
        "input_scale_column": s.input_scale_column,
        "fit": {"start": start, "end": end, "range": why},
        "quantities": {},
    }
    for key, column, _ in QUANTITIES:
        v = quantity(s, key, column)
        if v is None:
            continue
        fit = power_fit(s.step, v, start, end)
        med = [b.median for b in boxes_per_window(s.frac, v)]
        last_second = ratio(med[-1], med[1])
        out["quantities"][key] = fit | {
            "column": s.input_scale_column if key == "input_scale" else column,
            "window_medians": med,
            "last_over_second": last_second,
            "trend": trend_of(fit["slope"], last_second),
        }
    q = out["quantities"]
    trend = {k: q[k]["trend"] if k in q else "unknown" for k, _, _ in QUANTITIES}
    out["var_dist_trend"] = trend["var_dist"]
    out["explained_by"] = explain_growth(
        trend["var_dist"], trend["var_dist_rel"], trend["batch_var_mean"], trend["tid_var"]
    )
    slope = {k: v["slope"] for k, v in q.items()}
    out["scale_share"] = ratio(slope.get("batch_var_mean", math.nan), slope["var_dist"])
    fit = q["var_dist"]
    at_paper = predict(fit, PAPER_UPDATES) if finite(fit["slope"]) else math.nan
    out["var_dist_at_paper_updates"] = at_paper
    if compare_with_paper:
        d_matched = PAPER_VAR_DIST * math.sqrt(PAPER_D / s.d)
        needed = math.nan
        if finite(fit["slope"]) and end < PAPER_UPDATES:
            needed = math.log(PAPER_VAR_DIST / predict(fit, end)) / math.log(PAPER_UPDATES / end)
        out["paper"] = {
            "var_dist": PAPER_VAR_DIST,
            "updates": PAPER_UPDATES,
            "d": PAPER_D,
            "d_matched_var_dist": d_matched,
            "within_reach": (at_paper >= PAPER_VAR_DIST / REACH) if finite(at_paper) else None,
            "within_reach_d_matched": (at_paper >= d_matched / REACH) if finite(at_paper) else None,
            "slope_needed": needed,
        }
    return out


def growth_analysis(all_series: list[Series]) -> dict[str, Any]:
    """The growth verdict of every run; the paper comparison for the last (the Transformer)."""
    return {
        "thresholds": {
            "slope_flat_below": SLOPE_TOL,
            "last_over_second_flat_within": RATIO_TOL,
            "within_reach_factor": REACH,
            "fit_bins": FIT_BINS,
            "min_steps_per_bin": MIN_PER_BIN,
        },
        "runs": [analyse_run(s, i == len(all_series) - 1) for i, s in enumerate(all_series)],
    }


def _sign(x: float) -> str:
    return f"{x:+.3g}" if finite(x) else "nan"


def growth_text(result: dict[str, Any]) -> list[str]:
    lines = [
        "growth with updates (fig2_growth.png/.svg, fig2_growth.json): Theil-Sen slope of "
        f"log(median per log-spaced bin of steps, {FIT_BINS} bins) vs log(step) over the fit range, "
        "and last/second 20%-window median. A quantity rises when slope >= "
        f"{SLOPE_TOL:g} and last/second >= {RATIO_TOL:g}, falls when slope <= -{SLOPE_TOL:g} and "
        f"last/second <= 1/{RATIO_TOL:g}, is flat when |slope| < {SLOPE_TOL:g} and last/second "
        f"within {RATIO_TOL:g}x, else mixed. var_dist's growth is 'scale' when var_dist / "
        "batch_var_mean is flat (or falls) and tid_var does not rise, 'fluctuation' when either "
        "rises and batch_var_mean does not, 'scale and fluctuation' when both. The paper's "
        f"{PAPER_VAR_DIST} is within reach when the fit extrapolated to {PAPER_UPDATES:,} updates "
        f"comes within {REACH:g}x of it.",
    ]
    for r in result["runs"]:
        f = r["fit"]
        lines.append(
            f"  {r['label']} ({r['steps_trained']} steps trained, {r['steps_source']}): fit over "
            f"steps {f['start']}-{f['end']}, {f['range']}"
        )
        for key, q in r["quantities"].items():
            name = f"{q['column']} ÷ step 1" if key == "input_scale" else key
            lines.append(
                f"    {name:26s} slope {_sign(q['slope']):>7s}  last/second {q['last_over_second']:7.3g}"
                f"  {q['trend']:7s} window medians "
                + " ".join(f"{m:.3g}" for m in q["window_medians"])
            )
        if "input_scale" not in r["quantities"]:
            lines.append(
                "    (no input-scale measure: metrics.csv has no embed_rms/stem_weight_norm)"
            )
        vd = r["quantities"]["var_dist"]
        why = r["explained_by"]
        if r["var_dist_trend"] == "rises" and finite(r["scale_share"]):
            share = round(r["scale_share"], 2) + 0.0  # no "-0%"
            why += f" (batch_var_mean's slope is {share:.0%} of var_dist's)"
        lines.append(
            f"    verdict: var_dist {r['var_dist_trend'].upper()} with updates (slope "
            f"{_sign(vd['slope'])}, last/second {vd['last_over_second']:.3g}); explained by: {why}"
        )
        at = r["var_dist_at_paper_updates"]
        p = r.get("paper")
        if p is None:
            lines.append(f"    extrapolated to {PAPER_UPDATES:,} updates: var_dist ≈ {at:.3g}")
            continue
        reach = {True: "IS within reach", False: "is NOT within reach", None: "UNKNOWN (no fit)"}
        lines.append(
            f"    extrapolated to {PAPER_UPDATES:,} updates: var_dist ≈ {at:.3g}; the paper's "
            f"{PAPER_VAR_DIST} (Transformer_BN, d={PAPER_D}, last window) {reach[p['within_reach']]} "
            f"of this trend ({ratio(PAPER_VAR_DIST, at):.3g}x above it); at d={r['d']} equal "
            f"per-channel deviations give {p['d_matched_var_dist']:.3g} (1/d·‖·‖ goes as 1/√d): "
            f"{reach[p['within_reach_d_matched']]}; reaching {PAPER_VAR_DIST} by then needs a "
            f"slope of {_sign(p['slope_needed'])} from the last step"
        )
    return lines


def clean_json(obj: Any) -> Any:
    """NaN/inf as null: strict JSON for other tools."""
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.floating | np.integer):
        return clean_json(obj.item())
    return obj
