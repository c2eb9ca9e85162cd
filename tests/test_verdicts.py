"""The verdict rules on synthetic numbers: missing data is UNKNOWN, the outlier verdict ignores the
start-up transient, ratios are split into their factors, growth is called scale or fluctuation."""

from __future__ import annotations

import math

import numpy as np

from normlab.analysis.verdicts import (
    attribute,
    compare_claim,
    explain_growth,
    outlier_claim,
    theil_sen,
    trend_claim,
    trend_of,
)
from normlab.analysis.windows import boxes_per_window

NAN = float("nan")


def test_a_missing_window_is_unknown_never_flat():
    assert trend_claim(NAN).startswith("UNKNOWN")
    assert trend_claim(1.05) == "ROUGHLY FLAT"
    assert trend_claim(27.0).startswith("GROWS")
    assert compare_claim([0.5, 0.4, NAN, NAN, NAN]).startswith("UNKNOWN")
    assert compare_claim([0.5, 0.4, 0.3, 0.3, 0.2]).startswith("DOES NOT HOLD")
    assert compare_claim([12, 15, 30, 11, 10]).startswith("HOLDS")
    assert (
        trend_of(NAN, 1.0) == "unknown"
        and explain_growth("unknown", "flat", "rises", "flat") == "unknown"
    )


def test_outlier_verdict_is_decided_after_the_start_up_transient():
    rng = np.random.default_rng(0)
    n = 1000
    frac = np.arange(1, n + 1) / n
    # Vision baseline: calm, except a start-up transient of 50 steps 100x the median.
    base = rng.lognormal(0, 0.1, n)
    base[:50] *= 100
    # Transformer: noisier, with 8x spikes all through training.
    other = rng.lognormal(0, 0.3, n)
    other[rng.choice(np.arange(200, n), 30, replace=False)] *= 8
    text = outlier_claim(boxes_per_window(frac, other), boxes_per_window(frac, base))
    assert text.startswith("HOLDS (decided on 20-100%")
    after, everything = text.split("all windows 0-100%:")
    # both scopes are shown: over all windows the transient's ~100x would have decided it
    ext_all = [float(x) for x in everything.split("largest max/median")[1].split(" vs ")]
    assert ext_all[1] > 50 and ext_all[0] < ext_all[1]
    ext_after = [float(x) for x in after.split("largest max/median")[1].split(";")[0].split(" vs ")]
    assert ext_after[0] > ext_after[1]


def test_outlier_verdict_without_data_after_the_first_window_is_unknown():
    frac = np.linspace(0.01, 0.2, 50)
    b = boxes_per_window(frac, np.ones(50))
    assert outlier_claim(b, b).startswith("UNKNOWN")


def test_attribute_names_the_factor_a_ratio_comes_from():
    assert attribute([("input scale", 0.1), ("relative", 0.9)]) == "mostly input scale"
    assert attribute([("input scale", 1.1), ("relative", 8.0)]) == "mostly relative"
    assert attribute([("input scale", 0.2), ("relative", 5.0)]) == "both input scale and relative"
    assert attribute([("input scale", 1.1), ("relative", 0.9)]).startswith("no factor")
    assert attribute([("input scale", NAN), ("relative", 0.9)]).startswith("unknown")


def test_growth_is_scale_when_the_relative_distance_is_flat_and_fluctuation_when_tid_rises():
    assert trend_of(0.4, 1.5) == "rises" and trend_of(0.02, 1.03) == "flat"
    assert trend_of(-0.3, 0.7) == "falls" and trend_of(0.3, 1.02) == "mixed"
    assert explain_growth("rises", "flat", "rises", "flat") == "scale"
    assert explain_growth("rises", "rises", "flat", "rises") == "fluctuation"
    assert explain_growth("rises", "rises", "rises", "flat") == "scale and fluctuation"
    assert explain_growth("flat", "flat", "flat", "rises") == "no growth to explain"


def test_theil_sen_recovers_a_power_law_despite_a_stray_point():
    x = np.log(np.geomspace(100, 20000, 10))
    y = 0.37 * x - 2.0
    y[3] += 3.0  # one wild bin median
    slope, intercept = theil_sen(x, y)
    assert math.isclose(slope, 0.37, rel_tol=1e-9) and math.isclose(intercept, -2.0, rel_tol=1e-9)
