"""Figures 2/3 regenerated from a smoke-scale pair of run directories."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from helpers import REPO, compose_config
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
    metrics = {"fig2": 6, "fig3": 2}[fig]
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
    assert text.count("(1) ") == 2 and text.count("(3) grows") == 2


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
    assert {r["metric"] for r in rows} == {"stat_dist", "grad_stat", "stat_rms_dist", "tid_stat"}
    assert "5-21x smaller" in (out / "fig4_summary.txt").read_text()


def test_one_run_gets_its_medians_not_a_ratio_with_itself(two_runs, tmp_path):
    """bench-gpu plots the paper-scale ResNet-20 alone: medians per window, no verdicts."""
    out = tmp_path / "one"
    assert _script().main(["fig2", "--run", f"ResNet={two_runs[0]}", "--out", str(out)]) == 0
    text = (out / "fig2_summary.txt").read_text()
    assert "median per window of ResNet:" in text and "ratio" not in text and "(1) " not in text
    rows = list(csv.DictReader((out / "fig2_boxes.csv").read_text().splitlines()))
    var_rows = [r for r in rows if r["metric"] == "var_dist"]
    line = next(x for x in text.splitlines() if x.strip().startswith("var_dist"))
    assert f"{float(var_rows[0]['median']):9.3g}".strip() in line
