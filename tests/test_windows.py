"""Window box statistics against matplotlib's independent Tukey implementation."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import cbook

from normlab.analysis.windows import boxes_per_window, trained_fraction, tukey, window_of


def test_windows_split_training_in_fifths():
    frac = np.array([0.01, 0.2, 0.2001, 0.4, 0.6, 0.8, 0.81, 1.0])
    assert window_of(frac).tolist() == [0, 0, 1, 1, 2, 3, 4, 4]


def test_tukey_matches_matplotlib_boxplot_stats():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.lognormal(0, 1, 500), [80.0, 95.0]])
    ours = tukey(v, 0)
    (ref,) = cbook.boxplot_stats(v, whis=1.5)
    assert np.isclose(ours.median, ref["med"]) and np.isclose(ours.q1, ref["q1"])
    assert np.isclose(ours.q3, ref["q3"])
    assert np.isclose(ours.whisker_low, ref["whislo"]) and np.isclose(
        ours.whisker_high, ref["whishi"]
    )
    assert ours.outliers == len(ref["fliers"]) and ours.max == 95.0


def test_boxes_per_window_groups_by_fraction():
    frac = np.linspace(0.001, 1, 1000)
    boxes = boxes_per_window(frac, frac * 10)
    assert [b.n for b in boxes] == [200] * 5
    assert boxes[0].median < boxes[4].median


def test_windows_follow_the_steps_trained_not_the_steps_planned():
    """An early-stopped run (600 of 1,000 planned steps): its last window is its own last 20%."""
    step = np.arange(1, 601)
    planned = boxes_per_window(step / 1000, step.astype(float))
    assert [b.n for b in planned] == [200, 200, 200, 0, 0]  # what step/planned gave
    boxes = boxes_per_window(trained_fraction(step, 600), step.astype(float))
    assert [b.n for b in boxes] == [120] * 5
    assert boxes[-1].median == np.median(np.arange(481, 601))


def test_trained_fraction_refuses_an_empty_run():
    with pytest.raises(ValueError, match="positive"):
        trained_fraction(np.arange(1, 3), 0)
