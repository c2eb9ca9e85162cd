"""Two runs compared per 20% window, and the comparison split into its factors: the 1/d
normalization (different d), the input's scale (batch_var_mean to the metric's power), the loss
normalizer (summed-loss gradients), and what is left, the fluctuation relative to the input scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from normlab.analysis.series import SCALE_POWER, Series, relative_name, scale_column
from normlab.analysis.verdicts import decomposition, ratio
from normlab.analysis.windows import BoxStats, boxes_per_window

# Metrics normalized by 1/d; their 1/√d twins (the *_rms_dist columns) are not.
PER_D = {"mean_dist", "var_dist", "grad_mean", "grad_var", "phi_dist", "grad_phi"}
PER_D |= {"stat_dist", "grad_stat"}


def boxes(s: Series, column: str) -> list[BoxStats]:
    values = s.columns.get(column)
    if values is None:
        values = np.full(s.step.shape, np.nan)
    return boxes_per_window(s.frac, values)


def medians(s: Series, column: str | None) -> list[float]:
    """Window medians; None (a factor that does not apply to this run) is 1 in every window."""
    if column is None:
        return [1.0] * 5
    return [b.median for b in boxes(s, column)]


def window_ratios(o: Series, oc: str | None, b: Series, bc: str | None) -> list[float]:
    return [ratio(x, y) for x, y in zip(medians(o, oc), medians(b, bc), strict=True)]


def _median(values: list[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.median(v)) if v else float("nan")


@dataclass
class Comparison:
    """other_col of the other run against base_col of the base run. factors: (label, other's
    column or None, base's column or None, power); rel: the scale-free column of both runs."""

    other_col: str
    base_col: str
    rel: str
    factors: list[tuple[str, str | None, str | None, float]] = field(default_factory=list)
    per_d: bool = False

    @classmethod
    def same(cls, column: str, extra: tuple = ()) -> Comparison:
        """The column of both runs, split into input scale (and any extra factors) and relative."""
        root = column.removesuffix("_summed")
        scale = scale_column(root)
        factors = [("input scale", scale, scale, SCALE_POWER[root]), *extra]
        return cls(column, column, relative_name(root), factors, root in PER_D)


def split(o: Series, b: Series, c: Comparison) -> tuple[float, list[tuple[str, float]]]:
    """(median over windows of the other/base ratio, [(factor, its median ratio over windows)]);
    the last factor is the relative one."""
    total = _median(window_ratios(o, c.other_col, b, c.base_col))
    dim = math.sqrt(b.d / o.d) if c.per_d else 1.0
    factors = []
    if c.per_d and o.d != b.d:
        factors.append(("1/d normalization", dim))
    for label, oc, bc, power in c.factors:
        factors.append((label, _median(window_ratios(o, oc, b, bc)) ** power))
    factors.append(("relative", _median(window_ratios(o, c.rel, b, c.rel)) / dim))
    return total, factors


def split_text(o: Series, b: Series, c: Comparison) -> str:
    total, factors = split(o, b, c)
    return decomposition(total, factors)


def growth_split(s: Series, c: Comparison) -> tuple[float, list[tuple[str, float]]]:
    """Last/first window median of one run's other_col, split the same way (d does not change)."""

    def last_first(col: str | None) -> float:
        m = medians(s, col)
        return ratio(m[-1], m[0])

    factors = [(label, last_first(oc) ** power) for label, oc, _, power in c.factors if oc]
    return last_first(c.other_col), [*factors, ("relative", last_first(c.rel))]


def growth_text(s: Series, c: Comparison) -> str:
    total, factors = growth_split(s, c)
    return decomposition(total, factors)
