"""Box statistics of a probe series per 20% window of training (Tukey whiskers, 1.5·IQR).

The windows are fractions of the steps a run actually trained, not of the steps it planned: an
early-stopped run's last window is its own last 20%, not an empty one (`trained_fraction`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

WINDOWS = 5  # the paper's companion figures: 0-20%, 20-40%, ..., 80-100% of training


@dataclass
class BoxStats:
    window: int  # 0..4
    label: str  # "0-20%"
    n: int
    q1: float
    median: float
    q3: float
    whisker_low: float  # the lowest value within q1 - 1.5 IQR
    whisker_high: float  # the highest value within q3 + 1.5 IQR
    outliers: int  # values beyond the whiskers
    max: float

    def as_row(self) -> dict:
        return asdict(self)


def trained_fraction(step: np.ndarray, steps_trained: int) -> np.ndarray:
    """step / steps_trained: the fraction of the training a run actually did (in (0, 1])."""
    if steps_trained <= 0:
        raise ValueError(f"steps_trained must be positive, got {steps_trained}")
    return np.asarray(step, dtype=float) / float(steps_trained)


def window_of(frac: np.ndarray, windows: int = WINDOWS) -> np.ndarray:
    """Window index of each fraction of training in (0, 1]: step/total_steps."""
    return np.clip(np.ceil(np.asarray(frac) * windows).astype(int) - 1, 0, windows - 1)


def window_label(w: int, windows: int = WINDOWS) -> str:
    step = 100 // windows
    return f"{w * step}-{(w + 1) * step}%"


def tukey(values: np.ndarray, window: int, windows: int = WINDOWS) -> BoxStats:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        nan = float("nan")
        return BoxStats(window, window_label(window, windows), 0, nan, nan, nan, nan, nan, 0, nan)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    iqr = q3 - q1
    inside = v[(v >= q1 - 1.5 * iqr) & (v <= q3 + 1.5 * iqr)]
    return BoxStats(
        window=window,
        label=window_label(window, windows),
        n=int(v.size),
        q1=float(q1),
        median=float(med),
        q3=float(q3),
        whisker_low=float(inside.min()),
        whisker_high=float(inside.max()),
        outliers=int(v.size - inside.size),
        max=float(v.max()),
    )


def boxes_per_window(
    frac: np.ndarray, values: np.ndarray, windows: int = WINDOWS
) -> list[BoxStats]:
    w = window_of(frac, windows)
    values = np.asarray(values, dtype=float)
    return [tukey(values[w == k], k, windows) for k in range(windows)]
