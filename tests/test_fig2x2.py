"""Architecture or data (make fig2x2): the 2x2 table of median ratios against a recomputation from
the probe rows, the verdict rule on inputs whose answer is known, a diverged run, a probe of the
first layer only, a missing run, and the make target's command lines."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import REPO, compose_config, make_fairseq_layout
from normlab.analysis.fig2x2 import CELLS, factor_verdict
from normlab.probe.store import ProbeStore, read_probe

FLOATS = ("mean_dist", "var_dist", "mean_rms_dist", "var_rms_dist", "tid_mean", "tid_var")
FLOATS += ("batch_var_mean",)
STEPS = 40


def synthetic_run(
    run_dir: Path,
    scale: float = 1.0,
    *,
    seed: int = 0,
    layers: tuple[tuple[str, int], ...] = (("first", 16), ("second", 32)),
    steps: int = STEPS,
    summary: dict | None = None,
    probe_layers: str = "all",
) -> Path:
    """Probe rows written by the project's ProbeStore: lognormal noise around 0.1 (input variance
    around 1), every fluctuation column times `scale` (the input variance stays)."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(1, steps + 1):
        for index, (layer, d) in enumerate(layers):
            row = {"step": step, "epoch": 0, "frac": step / steps, "layer": layer}
            row |= {"layer_index": index, "kind": "bn", "d": d, "count": 128}
            for c in FLOATS:
                factor = 1.0 if c == "batch_var_mean" else scale
                row[c] = float(factor * (1.0 if c == "batch_var_mean" else 0.1)) * rng.lognormal(
                    0, 0.3
                )
            rows.append(row)
    store = ProbeStore(run_dir / "probe")
    store.add(rows)
    store.flush()
    summary = {"status": "complete", "steps": steps} if summary is None else summary
    summary |= {"config": {"probe": {"layers": probe_layers}}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def grid(root: Path, scales: dict[str, float] | None = None, seeds: bool = False) -> Path:
    for i, cell in enumerate(CELLS):
        s = (scales or {}).get(cell.key, 1.0)
        synthetic_run(cell.run_dir(root, "smoke"), s, seed=i if seeds else 0)
    return root


def _script():
    spec = importlib.util.spec_from_file_location(
        "plot_fig2x2", REPO / "scripts" / "plot_fig2x2.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _plot(runs: Path, out: Path, *extra: str) -> int:
    return _script().main(["--runs", str(runs), "--scale", "smoke", "--out", str(out), *extra])


def _ratios(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    rows = csv.DictReader((out / "fig2x2_ratios.csv").read_text().splitlines())
    return {(r["view"], r["metric"]): r for r in rows}


# -- independent recomputation: numpy medians over the probe rows ----------------------------------
def _rows(run_dir: Path) -> pd.DataFrame:
    df = read_probe(run_dir).to_pandas()
    df = df[df["kind"] == "bn"].copy()
    df["tid_mean"] = df["tid_mean"].astype(float)
    df["var_rms_dist_rel"] = df["var_rms_dist"] / df["batch_var_mean"]
    df["mean_rms_dist_rel"] = df["mean_rms_dist"] / np.sqrt(df["batch_var_mean"])
    return df


def _window_medians(run_dir: Path, column: str, view: str) -> np.ndarray:
    df = _rows(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = summary.get("steps") or int(df["step"].max())
    if view == "first_bn":
        per_step = df[df["layer_index"] == df["layer_index"].min()].set_index("step")[column]
    else:  # the median over the layers at each step
        per_step = df.groupby("step")[column].median()
    step = per_step.index.to_numpy()
    window = np.clip(np.ceil(5 * step / steps).astype(int) - 1, 0, 4)
    return np.array([np.median(per_step.to_numpy()[window == w]) for w in range(5)])


def _expected_ratio(runs: Path, scale: str, num: str, den: str, column: str, view: str) -> float:
    dirs = {c.key: c.run_dir(runs, scale) for c in CELLS}
    a, b = (_window_medians(dirs[k], column, view) for k in (num, den))
    return float(np.median(a / b))


PAIRS = {
    "text_over_images_transformer": ("transformer", "vit"),
    "text_over_images_cnn": ("conv", "resnet"),
    "transformer_over_cnn_images": ("vit", "resnet"),
    "transformer_over_cnn_text": ("transformer", "conv"),
}


def _assert_table_recomputed(runs: Path, scale: str, out: Path, views=("first_bn", "all_bn")):
    table = _ratios(out)
    for view in views:
        for column in ("tid_mean", "var_rms_dist_rel", "mean_rms_dist_rel"):
            for name, (num, den) in PAIRS.items():
                expected = _expected_ratio(runs, scale, num, den, column, view)
                got = float(table[(view, column)][name])
                assert got == pytest.approx(expected, rel=1e-9), (view, column, name)


# -- synthetic runs ---------------------------------------------------------------------------------
def test_table_is_the_median_over_windows_of_the_window_median_ratios(tmp_path):
    runs = grid(tmp_path / "runs", seeds=True)
    out = tmp_path / "out"
    assert _plot(runs, out) == 0
    for name in ("fig2x2", "fig2x2_all_layers", "fig2x2_boxes"):
        for ext in ("png", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    _assert_table_recomputed(runs, "smoke", out)
    prov = json.loads((out / "provenance.json").read_text())
    assert [r["cell"] for r in prov["runs"]] == ["resnet", "vit", "conv", "transformer"]
    assert {r["bn_layers_probed"] for r in prov["runs"]} == {2}
    assert "git_commit" in prov["made_with"] and prov["runs"][0]["status"] == "complete"
    boxes = pd.read_csv(out / "fig2x2_boxes.csv")
    assert set(boxes["view"]) == {"first_bn", "all_bn"} and len(boxes) == 2 * 4 * 11 * 5
    text = (out / "fig2x2_summary.txt").read_text()
    assert "two-way table, first BN layer" in text and "verdict rule:" in text


@pytest.mark.parametrize(
    ("scales", "verdict", "headline"),
    [
        ({"transformer": 2.0, "conv": 2.0}, "data", "DATA: text vs images carries"),
        ({"vit": 2.0, "transformer": 2.0}, "architecture", "ARCHITECTURE: Transformer vs CNN"),
    ],
)
def test_the_verdict_follows_the_factor_that_was_built_in(tmp_path, scales, verdict, headline):
    """Same noise in every cell (seed 0), the fluctuation columns multiplied by 2 in the text cells
    (or the Transformer cells): the ratios are exactly 2 and 1, and so is the verdict."""
    runs = grid(tmp_path / "runs", scales)
    out = tmp_path / "out"
    assert _plot(runs, out) == 0
    table = _ratios(out)
    for metric in ("tid_mean", "tid_var", "mean_rms_dist_rel", "var_rms_dist_rel"):
        row = table[("first_bn", metric)]
        assert row["verdict"] == verdict and row["scale_free"] == "True"
        for name, (num, den) in PAIRS.items():
            want = scales.get(num, 1.0) / scales.get(den, 1.0)
            assert float(row[name]) == pytest.approx(want, rel=1e-12)
    assert table[("first_bn", "batch_var_mean")]["verdict"] == "neither"  # the input scale is alike
    text = (out / "fig2x2_summary.txt").read_text()
    assert f"verdict, first BN layer: {headline}" in text
    assert f"verdict, median over all probed BN layers: {headline}" in text


@pytest.mark.parametrize(
    ("data", "arch", "verdict"),
    [
        ((2.0, 2.0), (1.0, 1.0), "data"),
        ((0.4, 0.45), (1.1, 0.95), "data"),  # text lowers it, architecture within 1.25x
        ((1.3, 1.3), (1.2, 1.24), "data"),  # the other factor is no difference: no 2x needed
        ((1.1, 1.0), (3.0, 2.5), "architecture"),
        ((4.0, 4.0), (1.5, 1.5), "data"),  # log 4 >= 2 x log 1.5
        ((2.0, 2.0), (1.6, 1.6), "both"),  # log 2 < 2 x log 1.6: neither dominates
        ((1.2, 0.9), (1.1, 1.0), "neither"),
        ((4.0, 1.0), (1.0, 4.0), "mixed"),  # the Transformer on text alone: an interaction
        ((3.0, 0.5), (1.0, 1.0), "mixed"),  # text up for one architecture, down for the other
        ((2.0, float("nan")), (1.0, 1.0), "unknown"),
        ((2.0, 2.0), (0.0, 1.0), "unknown"),
    ],
)
def test_verdict_rule(data, arch, verdict):
    assert factor_verdict(data, arch).verdict == verdict


def test_a_diverged_run_is_plotted_from_what_the_probe_recorded(tmp_path):
    runs = grid(tmp_path / "runs", seeds=True)
    vit = CELLS[1].run_dir(runs, "smoke")
    for part in (vit / "probe").iterdir():
        part.unlink()
    summary = {"status": "diverged", "diverged_at_step": 31}  # the trainer writes no "steps"
    synthetic_run(vit, steps=30, summary=summary)
    out = tmp_path / "out"
    assert _plot(runs, out) == 0
    text = (out / "fig2x2_summary.txt").read_text()
    assert "ViT / CIFAR-10 DIVERGED at step 31 (summary.json): plotted from the 30 steps" in text
    _assert_table_recomputed(runs, "smoke", out)  # its windows are fifths of the 30 steps
    assert json.loads((out / "provenance.json").read_text())["runs"][1]["status"] == "diverged"


def test_a_probe_of_the_first_layer_only_is_said_not_failed(tmp_path):
    runs = grid(tmp_path / "runs")
    conv = CELLS[2].run_dir(runs, "smoke")
    for part in (conv / "probe").iterdir():
        part.unlink()
    synthetic_run(conv, layers=(("encoder_layers.0.conv_norm", 32),), probe_layers="first")
    out = tmp_path / "out"
    assert _plot(runs, out) == 0
    text = (out / "fig2x2_summary.txt").read_text()
    assert (
        "Conv encoder / IWSLT14: the probe recorded only its first BN layer "
        "(encoder_layers.0.conv_norm; probe.layers=first)" in text
    )
    table = _ratios(out)
    assert table[("all_bn", "tid_mean")]["verdict"] == "unknown"
    assert table[("first_bn", "tid_mean")]["verdict"] == "neither"
    assert "verdict, median over all probed BN layers: UNKNOWN" in text


def test_a_missing_run_is_one_sentence_and_nothing_is_written(tmp_path, capsys):
    runs = grid(tmp_path / "runs")
    vit = CELLS[1].run_dir(runs, "smoke")
    for part in (vit / "probe").iterdir():
        part.unlink()
    out = tmp_path / "results" / "fig2x2" / "smoke"
    assert _plot(runs, out) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("plot_fig2x2: error: ViT / CIFAR-10: no run at")
    assert str(vit) in err and "`make cifar10-vit NORM=bn SCALE=smoke` makes it" in err
    assert not (tmp_path / "results").exists()


def test_make_fig2x2_runs_the_four_bn_runs_then_the_plot(tmp_path):
    # Without the variables of an enclosing make (CI runs the tests under `make test`), which
    # would add "make[1]: Leaving directory ..." lines.
    outer = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if k not in outer}
    env["NORMLAB_RUNS"] = str(tmp_path / "runs")
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", "fig2x2", "SCALE=smoke", "CIFAR10=C", "IWSLT14=I"],
        capture_output=True, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trains = [
        x.split("normlab-train ", 1)[1].split()
        for x in done.stdout.splitlines()
        if "bin/normlab-train " in x
    ]
    assert trains == [
        ["experiment=cifar10_resnet20", "scale=smoke", "norm=bn", "C"],
        ["experiment=cifar10_vit", "scale=smoke", "norm=bn", "C"],
        ["experiment=iwslt14_transformer", "scale=smoke", "norm=bn", "I"],
        ["experiment=iwslt14_conv", "scale=smoke", "norm=bn", "I"],
    ]
    last = done.stdout.strip().splitlines()[-1]
    assert last.endswith(
        f"python scripts/plot_fig2x2.py --runs {tmp_path / 'runs'} --scale smoke "
        "--out results/fig2x2/smoke"
    )
    # the preset check comes first, so that no run starts when one experiment lacks the scale
    assert done.stdout.index("configs/preset/$e/smoke.yaml") < done.stdout.index("normlab-train")


# -- the real trainer -------------------------------------------------------------------------------
def test_four_smoke_runs_of_the_trainer(tmp_path, image_folder):
    """The trainer's own run directories (ResNet-20, ViT, conv encoder, Transformer_BN at smoke
    scale, one thread, ~30 s in all): the table against the recomputation from their probe rows,
    and each model's first BN layer as the figure names it."""
    corpus = make_fairseq_layout(tmp_path / "corpus", {"valid": 160, "test": 16})
    runs = tmp_path / "runs"
    common = ["scale=smoke", "norm=bn", "trainer.progress=false", "trainer.threads=1"]
    data = {
        "images": ["data.source=imagefolder", f"data.root={image_folder}"],
        "text": [f"data.prepared_dir={corpus}"],
    }
    from normlab.train.loop import train

    for cell in CELLS:
        cfg = compose_config([f"experiment={cell.experiment}", *common, *data[cell.data]])
        train(cfg, cell.run_dir(runs, "smoke"))
    out = tmp_path / "out"
    assert _plot(runs, out) == 0
    _assert_table_recomputed(runs, "smoke", out)
    prov = json.loads((out / "provenance.json").read_text())
    layers = [r["layer"] for r in prov["runs"]]
    assert layers == [
        "stem_norm",
        "blocks.0.attn_norm",
        "encoder_layers.0.conv_norm",
        "encoder_layers.0.self_attn_norm",
    ]
    assert all(r["bn_layers_probed"] > 1 for r in prov["runs"])
