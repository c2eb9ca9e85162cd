"""The growth analysis of Figure 2 on synthetic run directories with known causes of growth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from normlab.analysis.batch_stats_figure import make_figure
from normlab.analysis.growth import PAPER_UPDATES, analyse_run, fit_range, growth_analysis
from normlab.analysis.series import load_series
from synthetic_runs import lognormal, write_run

STEPS = 6000


def _scale_driven(tmp_path, seed=0):
    """var_dist ∝ step^0.4 because the input variance is: the relative distance and TID are flat."""
    rng = np.random.default_rng(seed)
    step = np.arange(1, STEPS + 1)
    bvm = lognormal(rng, 0.5 * step**0.4, 0.05, STEPS)
    cols = {
        "batch_var_mean": bvm,
        "var_dist": bvm * lognormal(rng, 0.01, 0.3, STEPS),
        "tid_var": lognormal(rng, 0.03, 0.3, STEPS),
    }
    metrics = {"embed_rms": 0.1 * step**0.2, "loss_normalizer": np.full(STEPS, 900.0)}
    config = {"optim": {"schedule": {"warmup_steps": 500}}, "scale": {"name": "synthetic"}}
    return write_run(tmp_path / "scale", STEPS, cols, d=128, metrics=metrics, config=config)


def _fluctuation_driven(tmp_path, seed=1):
    """Same input variance throughout; the batch variances wander further from the running ones
    relative to it (TID rises) and var_dist with them."""
    rng = np.random.default_rng(seed)
    step = np.arange(1, STEPS + 1)
    bvm = lognormal(rng, 1.5, 0.05, STEPS)
    rel = lognormal(rng, 0.001 * step**0.5, 0.3, STEPS)
    cols = {"batch_var_mean": bvm, "var_dist": bvm * rel, "tid_var": 3 * rel}
    metrics = {"embed_rms": np.full(STEPS, 0.09), "loss_normalizer": np.full(STEPS, 900.0)}
    return write_run(tmp_path / "fluct", STEPS, cols, d=128, metrics=metrics)


def test_power_law_growth_driven_by_input_scale_is_called_scale(tmp_path):
    s = load_series("T", _scale_driven(tmp_path))
    assert fit_range(s)[:2] == (1200, STEPS)  # after the first window (warmup ends before)
    r = analyse_run(s, compare_with_paper=True)
    q = r["quantities"]
    assert q["var_dist"]["slope"] == pytest.approx(0.4, abs=0.05)
    assert q["batch_var_mean"]["slope"] == pytest.approx(0.4, abs=0.02)
    assert q["input_scale"]["slope"] == pytest.approx(0.2, abs=0.01)
    assert q["var_dist_rel"]["trend"] == "flat" and q["tid_var"]["trend"] == "flat"
    assert r["var_dist_trend"] == "rises" and r["explained_by"] == "scale"
    # The extrapolation follows the fitted power law: 0.005 * 50000^0.4 ≈ 0.3, far below 1.37.
    assert r["var_dist_at_paper_updates"] == pytest.approx(0.005 * PAPER_UPDATES**0.4, rel=0.3)
    assert r["paper"]["within_reach"] is False


def test_rising_tid_is_called_fluctuation(tmp_path):
    s = load_series("T", _fluctuation_driven(tmp_path))
    r = analyse_run(s, compare_with_paper=False)
    assert r["quantities"]["tid_var"]["trend"] == "rises"
    assert r["quantities"]["batch_var_mean"]["trend"] == "flat"
    assert r["var_dist_trend"] == "rises" and r["explained_by"] == "fluctuation"
    assert "paper" not in r


def test_fit_starts_after_warmup_when_warmup_outlasts_the_first_window(tmp_path):
    run = _scale_driven(tmp_path)
    s = load_series("T", run)
    s.warmup_steps = 2000
    start, end, why = fit_range(s)
    assert (start, end) == (2000, STEPS) and why.startswith("after warmup")
    s.warmup_steps = 4000  # 6000 < 2 x 4000: too little left after warmup for a log fit
    start, _, why = fit_range(s)
    assert start == 1200 and "includes warmup steps" in why


def test_fig2_writes_growth_figure_json_and_verdict(tmp_path):
    base = _fluctuation_driven(tmp_path)
    other = _scale_driven(tmp_path)
    out = make_figure([("R", base, None), ("T", other, None)], "fig2", tmp_path / "out")
    for name in ("fig2_growth.png", "fig2_growth.svg", "fig2_growth.json"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "fig2_growth.json").read_text())
    assert [r["explained_by"] for r in data["runs"]] == ["fluctuation", "scale"]
    assert "paper" in data["runs"][1] and "paper" not in data["runs"][0]
    text = (out / "fig2_summary.txt").read_text()
    assert "growth with updates" in text and "slope >= 0.1" in text
    assert "explained by: scale" in text and "explained by: fluctuation" in text
    assert "is NOT within reach" in text


def test_growth_needs_a_var_dist_fit_not_a_guess(tmp_path):
    """Too few probed steps after the first window for any bin: slope NaN → trend unknown."""
    rng = np.random.default_rng(0)
    run = write_run(tmp_path / "short", 20, {"var_dist": rng.lognormal(-3, 0.3, 20)})
    r = growth_analysis([load_series("R", run)])["runs"][0]
    assert r["var_dist_trend"] == "unknown" and r["explained_by"] == "unknown"


def test_an_early_stopped_run_is_windowed_on_the_steps_it_trained(tmp_path):
    """600 of 1,000 planned steps (the probe's frac says step/1000): every window, the last
    included, holds 120 of its own steps, and the trend verdict is computed, not NaN-as-flat."""
    rng = np.random.default_rng(0)
    step = np.arange(1, 601)
    cols = {"var_dist": lognormal(rng, 0.01 * step**0.8, 0.1, 600)}
    summary = {"status": "complete", "steps": 600, "early_stopped": True}
    stopped = write_run(tmp_path / "stopped", 600, cols, planned=1000, summary=summary)
    going = write_run(tmp_path / "going", 300, {}, planned=1000)  # in progress: no summary
    out = make_figure([("R", going, None), ("T", stopped, None)], "fig2", tmp_path / "out")
    rows = pd.read_csv(out / "fig2_boxes.csv")
    n = rows[rows["metric"] == "var_dist"].groupby("run")["n"].apply(list)
    assert n["T"] == [120] * 5 and n["R"] == [60] * 5
    text = (out / "fig2_summary.txt").read_text()
    assert "windows on 600 steps trained (summary.json steps)" in text
    assert "windows on 300 steps trained (last probed step)" in text
    verdict = next(x for x in text.splitlines() if "(3) grows during training, var_dist" in x)
    assert "GROWS" in verdict  # 0.8 power over 600 steps: last/first window ≈ 5x
