"""Verdicts on the paper's claims from window statistics and fits, with the thresholds stated here
(and repeated in every summary that uses them). Pure functions of numbers: easy to test.

A missing number (a window without data, a run without a column) makes a verdict UNKNOWN, never
"flat" or "does not hold".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from normlab.analysis.windows import BoxStats

FAR = 10.0  # (1) "orders of magnitude": the Transformer's median >= 10x in every window
GROW, SHRINK = 2.0, 0.5  # (3) last/first window median
DOMINANT = 2.0  # a factor explains a ratio when its |log| is >= 2x every other factor's
NEUTRAL = 1.25  # a factor within 1.25x of 1 is no difference
SLOPE_TOL = 0.1  # growth fits: |d log y / d log step| below this is flat ...
RATIO_TOL = 1.15  # ... and so is a last/second window median within 1.15x


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def ratio(a: float, b: float) -> float:
    return a / b if b and finite(a) and finite(b) else float("nan")


def compare_claim(ratios: Sequence[float]) -> str:
    """(1) Transformer/vision median per window: is the Transformer's far larger?"""
    if not ratios or not all(finite(r) for r in ratios):
        return "UNKNOWN (a window has no data in one of the runs)"
    if all(r >= FAR for r in ratios):
        return f"HOLDS (>= {FAR:g}x in every window)"
    if all(r > 1 for r in ratios):
        return f"PARTLY (larger in every window, but {min(ratios):.3g}x at least, not orders of magnitude)"
    if any(r > 1 for r in ratios):
        return "MIXED (larger in some windows only)"
    return "DOES NOT HOLD (smaller for the Transformer in every window)"


def trend_claim(growth: float) -> str:
    """(3) last/first window median of one run."""
    if not finite(growth):
        return "UNKNOWN (no data in the first or the last window)"
    if growth > GROW:
        return f"GROWS (>{GROW:g}x)"
    if growth < SHRINK:
        return f"SHRINKS (<{SHRINK:g}x)"
    return "ROUGHLY FLAT"


def attribute(factors: Sequence[tuple[str, float]]) -> str:
    """Which of the factors of a ratio (ratio = product of the factors) it comes from."""
    if not factors or not all(finite(r) and r > 0 for _, r in factors):
        return "unknown (a factor is missing)"
    size = [(label, abs(math.log(r))) for label, r in factors]
    if all(s <= math.log(NEUTRAL) for _, s in size):
        return f"no factor beyond {NEUTRAL:g}x"
    top = max(size, key=lambda x: x[1])
    rest = max((s for label, s in size if label != top[0]), default=0.0)
    if top[1] >= DOMINANT * rest:
        return f"mostly {top[0]}"
    big = [label for label, s in size if s > math.log(NEUTRAL)]
    return ("both " + " and ".join(big)) if len(big) == 2 else "several: " + ", ".join(big)


def decomposition(total: float, factors: Sequence[tuple[str, float]]) -> str:
    """'0.058 ≈ input scale 0.12 × relative 0.48 → mostly input scale' (medians do not multiply
    exactly, hence ≈)."""
    parts = " × ".join(f"{label} {r:.3g}" for label, r in factors)
    return f"{total:.3g} ≈ {parts} → {attribute(factors)}"


def outlier_stats(boxes: Sequence[BoxStats], first: int = 0) -> tuple[float, float]:
    """(share of Tukey outliers among the probed steps, largest max/median) of boxes[first:]."""
    chosen = [b for b in boxes[first:] if b.n]
    if not chosen:
        return float("nan"), float("nan")
    share = sum(b.outliers for b in chosen) / sum(b.n for b in chosen)
    ext = [ratio(b.max, b.median) for b in chosen]
    ext = [e for e in ext if finite(e)]
    return share, (max(ext) if ext else float("nan"))


def outlier_claim(other: Sequence[BoxStats], base: Sequence[BoxStats]) -> str:
    """(2) extreme outliers. Decided on the windows after the first: the first 20% holds the
    start-up transient (ResNet-20's first ~50 steps), which says nothing about steady training."""
    o_after, b_after = outlier_stats(other, 1), outlier_stats(base, 1)
    o_all, b_all = outlier_stats(other), outlier_stats(base)
    if not all(finite(x) for x in (*o_after, *b_after)):
        verdict = "UNKNOWN (no data after the first window)"
    elif o_after[1] > b_after[1] and o_after[0] >= b_after[0]:
        verdict = "HOLDS"
    else:
        verdict = "DOES NOT HOLD"
    return (
        f"{verdict} (decided on 20-100%, after the start-up transient); "
        f"20-100%: outlier share {o_after[0]:.1%} vs {b_after[0]:.1%}, largest max/median "
        f"{o_after[1]:.3g} vs {b_after[1]:.3g}; all windows 0-100%: share {o_all[0]:.1%} vs "
        f"{b_all[0]:.1%}, largest max/median {o_all[1]:.3g} vs {b_all[1]:.3g}"
    )


# ----------------------------------------------------------------------------- growth with updates
def trend_of(slope: float, last_over_second: float) -> str:
    """'rises', 'falls', 'flat', 'mixed' (fit and window medians disagree) or 'unknown'."""
    if not (finite(slope) and finite(last_over_second)):
        return "unknown"
    if slope >= SLOPE_TOL and last_over_second >= RATIO_TOL:
        return "rises"
    if slope <= -SLOPE_TOL and last_over_second <= 1 / RATIO_TOL:
        return "falls"
    if abs(slope) < SLOPE_TOL and 1 / RATIO_TOL < last_over_second < RATIO_TOL:
        return "flat"
    return "mixed"


def explain_growth(dist: str, relative: str, scale: str, tid: str) -> str:
    """Why the variance distance grows, from the trends of var_dist, var_dist/batch_var_mean
    (relative), batch_var_mean (scale) and tid_var: 'scale' when the relative distance is flat (or
    falls) and tid_var does not rise; 'fluctuation' when the relative distance or tid_var rises
    while the input variance does not; 'scale and fluctuation' when both hold."""
    if dist == "unknown":
        return "unknown"
    if dist != "rises":
        return "no growth to explain"
    by_scale = relative in ("flat", "falls")
    by_fluctuation = relative == "rises" or tid == "rises"
    if by_scale and not by_fluctuation:
        return "scale"
    if by_fluctuation and (by_scale or scale == "rises"):
        return "scale and fluctuation"
    if by_fluctuation:
        return "fluctuation"
    return "unclear"


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept): the median of the pairwise slopes, robust to a few stray points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2:
        return float("nan"), float("nan")
    i, j = np.triu_indices(x.size, k=1)
    dx = x[j] - x[i]
    ok = dx != 0
    if not ok.any():
        return float("nan"), float("nan")
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    return slope, float(np.median(y - slope * x))
