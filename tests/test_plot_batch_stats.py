"""Figures 2/3/4 regenerated from smoke-scale run directories (made by the trainer)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import REPO, compose_config, make_fairseq_layout
from normlab.probe.store import read_probe
from normlab.train.loop import train


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, image_folder):
    base = [
        "scale=smoke",
        "data.source=imagefolder",
        f"data.root={image_folder}",
        "trainer.progress=false",
        "trainer.epochs=3",
        "trainer.threads=1",
    ]
    dirs = []
    for name, extra in (("low", "optim.lr=0.05"), ("high", "optim.lr=0.4")):
        d = tmp_path_factory.mktemp(name)
        train(compose_config([*base, extra]), d)
        dirs.append(d)
    return dirs


def _steps(run_dir) -> int:
    return json.loads((run_dir / "summary.json").read_text())["steps"]


def _script():
    spec = importlib.util.spec_from_file_location(
        "plot_batch_stats", REPO / "scripts" / "plot_batch_stats.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("fig", ["fig2", "fig3"])
def test_plot_script_writes_figure_csv_summary_provenance(two_runs, tmp_path, fig):
    low, high = two_runs
    out = tmp_path / fig
    rc = _script().main(
        [
            fig,
            "--run",
            f"lr 0.05={low}",
            "--run",
            f"lr 0.4={high}:blocks.0.norm1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    for name in (
        f"{fig}.png",
        f"{fig}.svg",
        f"{fig}_lines.png",
        f"{fig}_boxes.csv",
        f"{fig}_summary.txt",
        "provenance.json",
    ):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / f"{fig}_boxes.csv").read_text().splitlines()))
    # fig2: 6 drawn + 4 *_rel + batch_var_mean; fig3: 2 drawn + 2 *_rel + batch_var_mean + the
    # 2 summed-loss gradients + loss_normalizer (these runs log it)
    metrics = {"fig2": 11, "fig3": 8}[fig]
    assert len(rows) == 2 * metrics * 5
    assert {r["layer"] for r in rows} == {"stem_norm", "blocks.0.norm1"}
    for r in rows:
        assert (
            float(r["whisker_low"])
            <= float(r["q1"])
            <= float(r["median"])
            <= float(r["q3"])
            <= float(r["whisker_high"])
        )
    assert sum(int(r["n"]) for r in rows) == metrics * sum(
        _steps(d) for d in two_runs
    )  # every step in a window
    prov = json.loads((out / "provenance.json").read_text())
    assert [r["layer"] for r in prov["runs"]] == ["stem_norm", "blocks.0.norm1"]
    assert prov["runs"][0]["data_source"].startswith("CIFAR-10")
    text = (out / f"{fig}_summary.txt").read_text()
    assert "median ratio lr 0.4 / lr 0.05" in text
    # fig3: mean-loss, summed-loss and the paper's pairing (whose own trend (3) is the summed one)
    groups = {"fig2": 1, "fig3": 3}[fig]
    assert text.count("(1) ") == 2 * groups and text.count("(3) grows") == 2 * min(groups, 2)
    assert text.count("split: ") == 2 * groups + 2 * min(groups, 2)


def test_unknown_layer_is_one_sentence(two_runs, tmp_path, capsys):
    rc = _script().main(["fig2", "--run", f"a={two_runs[0]}:nope", "--out", str(tmp_path)])
    assert rc == 2
    assert "no probe rows for layer 'nope'" in capsys.readouterr().err


def test_fig4_compares_bn_variance_with_pn_quadratic_mean(tmp_path, image_folder):
    base = [
        "scale=smoke",
        "data.source=imagefolder",
        f"data.root={image_folder}",
        "trainer.progress=false",
        "trainer.epochs=2",
        "trainer.threads=1",
    ]
    for norm in ("bn", "pnv"):
        train(compose_config([*base, f"norm={norm}"]), tmp_path / norm)
    out = tmp_path / "fig4"
    rc = _script().main(
        [
            "fig4",
            "--run",
            f"BN={tmp_path / 'bn'}",
            "--run",
            f"PN-V={tmp_path / 'pnv'}",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader((out / "fig4_boxes.csv").read_text().splitlines()))
    drawn = {"stat_dist", "grad_stat", "stat_rms_dist", "tid_stat"}
    relative = {"stat_dist_rel", "stat_rms_dist_rel", "grad_stat_rel", "stat_scale"}
    assert {r["metric"] for r in rows} == drawn | relative
    # PN-V's relative distance is over its own input scale, ψ²_B (batch_phi_mean), BN's over σ²_B
    pn = read_probe(tmp_path / "pnv").to_pandas()
    pn = pn[pn["layer"] == pn.loc[pn["layer_index"].idxmin(), "layer"]]
    med = {(r["run"], r["metric"], r["window"]): float(r["median"]) for r in rows}
    window0 = pn[pn["step"] <= pn["step"].max() / 5]
    assert med[("PN-V", "stat_dist_rel", "0")] == pytest.approx(
        float(np.median(window0["phi_dist"] / window0["batch_phi_mean"]))
    )
    assert "5-21x smaller" in (out / "fig4_summary.txt").read_text()


def test_one_run_gets_its_medians_not_a_ratio_with_itself(two_runs, tmp_path):
    """bench-gpu plots the paper-scale ResNet-20 alone: medians per window, no verdicts."""
    out = tmp_path / "one"
    assert _script().main(["fig2", "--run", f"ResNet={two_runs[0]}", "--out", str(out)]) == 0
    text = (out / "fig2_summary.txt").read_text()
    assert "median per window of ResNet:" in text and "(1) " not in text
    assert "median ratio" not in text and "split" not in text
    rows = list(csv.DictReader((out / "fig2_boxes.csv").read_text().splitlines()))
    var_rows = [r for r in rows if r["metric"] == "var_dist"]
    line = next(x for x in text.splitlines() if x.strip().startswith("var_dist"))
    assert f"{float(var_rows[0]['median']):9.3g}".strip() in line


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    """A smoke Transformer_BN run through `normlab-train` (a subprocess, as a user runs it)."""
    root = tmp_path_factory.mktemp("translation")
    corpus = make_fairseq_layout(root / "corpus", {"valid": 160, "test": 16})
    cmd = [
        sys.executable, "-m", "normlab.train", "experiment=iwslt14_transformer", "scale=smoke",
        f"data.prepared_dir={corpus}", "norm=bn", "trainer.progress=false", "trainer.threads=1",
    ]  # fmt: skip
    env = {**os.environ, "NORMLAB_RUNS": str(root / "runs"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "runs" / "iwslt14_transformer" / "smoke" / "norm=bn"


def test_loss_normalizer_is_the_batch_token_count(translation_run):
    """metrics.csv's loss_normalizer against an independent count of the same batches' target
    tokens: the non-pad positions the probe saw in the decoder's first norm."""
    metrics = pd.read_csv(translation_run / "metrics.csv").set_index("step")
    probe = read_probe(translation_run).to_pandas()
    dec = probe[probe["layer"] == "decoder_layers.0.self_attn_norm"].set_index("step")
    assert len(dec) == len(metrics) > 1
    assert (metrics["loss_normalizer"] == dec["count"].reindex(metrics.index)).all()
    assert metrics["loss_normalizer"].nunique() > 1  # token batches: one count per batch


def test_fig3_reports_both_gradient_conventions(two_runs, translation_run, tmp_path):
    out = tmp_path / "fig3"
    args = ["fig3", "--run", f"R={two_runs[0]}", "--run", f"T={translation_run}"]
    assert _script().main([*args, "--out", str(out)]) == 0
    steps = pd.read_csv(out / "fig3_steps.csv")
    for run, run_dir in (("R", two_runs[0]), ("T", translation_run)):
        rows = steps[steps["run"] == run].set_index("step")
        logged = pd.read_csv(run_dir / "metrics.csv").set_index("step")["loss_normalizer"]
        assert (rows["loss_normalizer"] == logged.reindex(rows.index)).all()
        for c in ("grad_mean", "grad_var"):
            assert np.isfinite(rows[c]).all()
            np.testing.assert_allclose(
                rows[f"{c}_summed"], rows[c] * rows["loss_normalizer"], rtol=1e-12
            )
    text = (out / "fig3_summary.txt").read_text()
    assert "gradient conventions:" in text
    for title in ("mean-loss convention", "summed-loss convention", "most likely pairing"):
        assert title in text
    assert "(1) larger gradients, grad_var, summed (Transformer) vs mean (vision)" in text
    assert "loss normalizer" in text.split("summed-loss convention")[1]
    rows = list(csv.DictReader((out / "fig3_boxes.csv").read_text().splitlines()))
    assert {"grad_mean_summed", "grad_var_summed", "loss_normalizer"} <= {r["metric"] for r in rows}


def test_fig3_of_a_run_without_loss_normalizer_reports_the_mean_convention_only(two_runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(two_runs[1], old)
    metrics = pd.read_csv(old / "metrics.csv").drop(columns=["loss_normalizer"])
    metrics.to_csv(old / "metrics.csv", index=False)
    out = tmp_path / "fig3"
    args = ["fig3", "--run", f"new={two_runs[0]}", "--run", f"old={old}", "--out", str(out)]
    assert _script().main(args) == 0
    text = (out / "fig3_summary.txt").read_text()
    line = next(x for x in text.splitlines() if x.startswith("gradient convention"))
    assert "mean loss only" in line and "old has no loss_normalizer" in line
    assert "_summed" not in text and "summed-loss convention" not in text
    assert "grad_mean_summed" not in pd.read_csv(out / "fig3_steps.csv").columns


def test_a_dirty_segment_of_a_resumed_run_marks_the_figure(two_runs, tmp_path, monkeypatch):
    """The trainer's summary.json keeps the first segment's git_dirty at the top level; a run
    resumed from a dirty tree must still read as dirty in the figure's provenance and summary."""
    resumed = tmp_path / "resumed"
    shutil.copytree(two_runs[1], resumed)
    summary = json.loads((resumed / "summary.json").read_text())
    summary["git_commit"], summary["git_dirty"] = "aaa", False
    summary["git_segments"] = [
        {"git_commit": "aaa", "git_dirty": False},
        {"git_commit": "bbb", "git_dirty": True},
    ]
    (resumed / "summary.json").write_text(json.dumps(summary))
    import normlab.tracking.provenance as provenance

    monkeypatch.setattr(provenance, "git_info", lambda: {"git_commit": "ccc", "git_dirty": False})
    out = tmp_path / "fig2"
    args = ["fig2", "--run", f"a={two_runs[0]}", "--run", f"b={resumed}", "--out", str(out)]
    assert _script().main(args) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["runs"][1]["git_dirty"] is True and prov["runs"][1]["git_commits"] == ["aaa", "bbb"]
    assert prov["runs"][1]["git_dirty_segments"] == [False, True]
    text = (out / "fig2_summary.txt").read_text()
    assert (
        "run b: commit aaa, bbb, tree dirty: YES" in text and "WARNING: made from a dirty" in text
    )
    assert "figure made at commit ccc, tree dirty: no" in text


def test_a_figure_from_a_dirty_tree_says_so(two_runs, tmp_path, monkeypatch):
    import normlab.tracking.provenance as provenance

    clean = tmp_path / "clean"
    shutil.copytree(two_runs[0], clean)
    summary = json.loads((clean / "summary.json").read_text())
    summary["git_segments"] = [{"git_commit": "aaa", "git_dirty": False}]
    (clean / "summary.json").write_text(json.dumps(summary))
    args = ["fig2", "--run", f"a={clean}"]
    monkeypatch.setattr(provenance, "git_info", lambda: {"git_commit": "ccc", "git_dirty": False})
    assert _script().main([*args, "--out", str(tmp_path / "clean_out")]) == 0
    assert "WARNING" not in (tmp_path / "clean_out" / "fig2_summary.txt").read_text()
    monkeypatch.setattr(provenance, "git_info", lambda: {"git_commit": "ccc", "git_dirty": True})
    assert _script().main([*args, "--out", str(tmp_path / "dirty_out")]) == 0
    text = (tmp_path / "dirty_out" / "fig2_summary.txt").read_text()
    assert (
        "figure made at commit ccc, tree dirty: YES" in text
        and "WARNING: made from a dirty" in text
    )
    prov = json.loads((tmp_path / "dirty_out" / "provenance.json").read_text())
    assert prov["made_with"]["git_dirty"] is True


def test_fig2_summary_reports_concentration_and_the_unnormalized_distance(two_runs, tmp_path):
    """Per run and window: median participation ratio and ‖σ²_B − σ²‖₂ of the plotted layer,
    recomputed here from the probe rows (window = ceil(5·step/steps) − 1)."""
    low, high = two_runs
    out = tmp_path / "conc"
    argv = ["fig2", "--run", f"low={low}", "--run", f"high={high}", "--out", str(out)]
    assert _script().main(argv) == 0
    text = (out / "fig2_summary.txt").read_text()
    rows = read_probe(high).to_pandas()
    rows = rows[rows["layer_index"] == rows["layer_index"].min()]
    window = np.clip(np.ceil(5 * rows["step"] / _steps(high)).astype(int) - 1, 0, 4)
    for column in ("participation_ratio", "var_dist_l2"):
        expected = [float(np.median(rows.loc[window == w, column])) for w in range(5)]
        line = next(x for x in text.splitlines() if x.strip().startswith("high ") and column in x)
        got = [float(v) for v in line.split("%:")[1:] for v in [v.split()[0]]]
        assert got == pytest.approx(expected, rel=1e-3)
        if column == "participation_ratio":  # between 1 and d by construction
            assert all(1.0 <= g <= float(rows["d"].iloc[0]) for g in got)
