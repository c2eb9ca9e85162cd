"""Which of bn_official's differences moves Figure 2: the comparison's numbers against a direct numpy
recomputation from the probe files, the verdict against the seed twin, the committed sweep's
--variant names against Hydra's, the one-sentence errors, and `make fig2-bn-variants` on committed
synthetic copies (nothing trained)."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from importlib import util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO
from normlab.analysis.bn_variants import (
    MOVES,
    NOT_JUDGED,
    WITHIN,
    Effect,
    Run,
    compare,
    largest_log_ratio,
    within_seed,
)
from normlab.committed_sweep import variant_jobs
from synthetic_runs import BN_FLOATS, write_run

# The probe's columns that synthetic_runs.write_run does not write.
EXTRA = ("var_dist_l2", "participation_ratio", "max_var_share", "real_fraction")
STEPS = 100
LAYER = "encoder_layers.0.self_attn_norm"
# The six runs of `make fig2-bn-variants`: label, overrides, Hydra's folder name.
RUNS = [
    ("bn", "norm=bn", "norm=bn"),
    ("bn seed 1", "norm=bn seed=1", "norm=bn,seed=1"),
    ("LayerScaling", "norm=bn norm.layer_scaling=true", "norm.layer_scaling=true,norm=bn"),
    ("momentum 0.05", "norm=bn norm.momentum=0.05", "norm.momentum=0.05,norm=bn"),
    (
        "LayerScaling+momentum",
        "norm=bn norm.layer_scaling=true norm.momentum=0.05",
        "norm.layer_scaling=true,norm.momentum=0.05,norm=bn",
    ),
    ("bn_official", "norm=bn_official", "norm=bn_official"),
]


def _run(path: Path, seed: int, factor: float = 1.0, noise: float = 0.3) -> Path:
    """A BN run with every probe column: lognormal noise (`noise` = 0: constant) times `factor`."""
    rng = np.random.default_rng(seed)
    cols = {c: factor * rng.lognormal(-3, noise, STEPS) for c in (*BN_FLOATS, *EXTRA)}
    cols["real_fraction"] = np.clip(cols["real_fraction"] * 10, 0, 1)
    summary = {"status": "complete", "steps": STEPS, "seed": seed, "bleu": 10.0 + seed}
    summary |= {"sacrebleu": 9.0 + seed / 2, "valid_loss": 5.0 - seed / 10}
    summary |= {"wall_s": 600.0 * (seed + 1), "cpu": "Test CPU", "data_source": "synthetic"}
    summary |= {"git_segments": [{"git_commit": f"{seed:07d}" + "f" * 33, "git_dirty": False}]}
    write_run(path, STEPS, cols, layer=LAYER, d=32, summary=summary, seed=seed)
    (part,) = (path / "probe").glob("part-*.parquet")
    table = pq.read_table(part)
    for c in EXTRA:
        table = table.append_column(c, pa.array(cols[c]))
    pq.write_table(table, part)
    return path


def _committed(root: Path, missing: str | None = None) -> Path:
    """The six runs' committed copies under root/iwslt14_transformer/smoke/<Hydra's name>."""
    where = root / "iwslt14_transformer" / "smoke"
    for seed, (_, _, name) in enumerate(RUNS):
        if name != missing:
            _run(where / name, seed, factor=1.0 + seed / 10)
    return where


def _window_medians(run: Path, column: str) -> list[float]:
    """Straight from the parquet file: medians of the steps in each 20% of the run's steps."""
    (part,) = (run / "probe").glob("part-*.parquet")
    t = pq.read_table(part).to_pydict()
    steps = json.loads((run / "summary.json").read_text())["steps"]
    window = np.clip(np.ceil(np.asarray(t["step"]) / steps * 5).astype(int) - 1, 0, 4)
    values = np.asarray(t[column], float)
    return [float(np.median(values[window == w])) for w in range(5)]


def _script():
    spec = util.spec_from_file_location("cbv", REPO / "scripts" / "compare_bn_variants.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cli_args(where: Path, out: Path) -> list[str]:
    (base, _, b), (twin, _, t), *variants = RUNS
    args = ["--base", f"{base}={where / b}", "--twin", f"{twin}={where / t}"]
    for label, _, name in variants:
        args += ["--variant", f"{label}={where / name}"]
    args += ["--effect", "pads=bn_official/LayerScaling+momentum", "--effect", "LS=LayerScaling/bn"]
    return [*args, "--out", str(out)]


def test_the_numbers_equal_a_numpy_recomputation_from_the_probe_files(tmp_path):
    where = _committed(tmp_path / "committed")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "scripts/compare_bn_variants.py", *_cli_args(where, out)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "variants.json").read_text())
    dirs = {label: where / name for label, _, name in RUNS}
    assert [c["column"] for c in result["columns"]] == [
        "mean_dist",
        "var_dist",
        "batch_var_mean",
        "tid_mean",
        "tid_var",
        "var_dist_l2",
        "participation_ratio",
        "max_var_share",
        "real_fraction",
    ]
    for row in result["columns"]:
        med = {label: _window_medians(d, row["column"]) for label, d in dirs.items()}
        for label in dirs:
            assert row["medians"][label] == pytest.approx(med[label], rel=1e-12)
        seed = [t / b for b, t in zip(med["bn"], med["bn seed 1"], strict=True)]
        seed_worst = max(abs(math.log(r)) for r in seed)
        assert row["seed_ratio"] == pytest.approx(seed)
        assert row["seed_largest_log_ratio"] == pytest.approx(seed_worst)
        for v in row["variants"]:
            want = [y / x for x, y in zip(med["bn"], med[v["label"]], strict=True)]
            worst = max(abs(math.log(r)) for r in want)
            assert v["ratio"] == pytest.approx(want)
            assert v["median_ratio"] == pytest.approx(float(np.median(want)))
            assert v["verdict"] == (MOVES if worst > seed_worst else WITHIN)
    pads = next(e for e in result["decomposition"] if e["name"] == "pads")
    var = next(c for c in pads["columns"] if c["column"] == "var_dist")
    off, both = (
        _window_medians(dirs[k], "var_dist") for k in ("bn_official", "LayerScaling+momentum")
    )
    assert var["ratio"] == pytest.approx([y / x for x, y in zip(both, off, strict=True)])
    finals = {r["label"]: r["finals"] for r in result["runs"]}
    for label, d in dirs.items():
        summary = json.loads((d / "summary.json").read_text())
        assert finals[label] == {m: summary[m] for m in ("bleu", "sacrebleu", "valid_loss")}
    assert [r["role"] for r in result["runs"]] == ["base", "twin", *["variant"] * 4]
    for seed, r in enumerate(result["runs"]):  # each run's provenance, from its own summary
        prov = r["provenance"]
        assert prov["git_commits"] == [f"{seed:07d}" + "f" * 33] and prov["git_dirty"] is False
        assert (prov["wall_s"], prov["cpu"], prov["data_source"]) == (
            600.0 * (seed + 1),
            "Test CPU",
            "synthetic",
        )
    assert "git_commit" in result["made_with"]  # and the comparison's own commit
    md = (out / "variants.md").read_text()
    assert "; commit 0000002 (clean), 30 min on Test CPU" in md
    assert "| bn seed 1 / bn |" in md and "| bn_official / bn |" in md
    assert "- var_dist, LayerScaling: **" in md
    assert "pads = bn_official / LayerScaling+momentum" in md
    assert "(+1)" in md  # the twin's BLEU against the base's


@pytest.mark.parametrize(("factor", "verdict"), [(1.05, WITHIN), (1.2, MOVES), (1 / 1.2, MOVES)])
def test_the_verdict_flips_when_a_variant_moves_more_than_the_seed(tmp_path, factor, verdict):
    """Constant series: the twin moves every median by 1.1x, the variant by `factor`."""
    base = Run("base", _run(tmp_path / "base", 0, noise=0))
    twin = Run("twin", _run(tmp_path / "twin", 0, factor=1.1, noise=0))
    variant = Run("v", _run(tmp_path / "v", 0, factor=factor, noise=0))
    result = compare(base, twin, [variant], [Effect("v_effect", "v", "base")])
    for row in result["columns"]:
        (v,) = row["variants"]
        assert v["ratio"] == pytest.approx([factor] * 5), row["column"]
        assert v["verdict"] == verdict, row["column"]
    (effect,) = result["decomposition"]
    assert {c["verdict"] for c in effect["columns"]} == {verdict}


def test_the_yardstick_on_numbers():
    assert within_seed([1.05, 0.97], [1.1, 1.0]) is True
    assert within_seed([1.05, 0.8], [1.1, 1.0]) is False  # |log 0.8| > |log 1.1|
    assert within_seed([1.05, math.nan], [1.1, 1.0]) is None  # a window without data: no verdict
    assert largest_log_ratio([1.0, 0.0]) == math.inf  # a median gone to zero is a change
    assert NOT_JUDGED.startswith("not judged")


def test_variant_names_are_hydras(tmp_path):
    """committed_sweep --variant names each run as `python -m normlab.run_dir` does, which sorts
    the whole key=value strings (norm.momentum=... before norm=...)."""
    jobs = variant_jobs([overrides for _, overrides, _ in RUNS], "iwslt14_transformer", "cpu")
    assert [j.name for j in jobs] == [name for _, _, name in RUNS]
    for j, (_, overrides, _) in zip(jobs, RUNS, strict=True):
        assert j.overrides == tuple(overrides.split())
        cmd = [sys.executable, "-m", "normlab.run_dir", "experiment=iwslt14_transformer"]
        cmd += ["scale=cpu", *overrides.split()]
        env = {**os.environ, "NORMLAB_RUNS": str(tmp_path)}
        printed = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, check=True)
        assert Path(printed.stdout.strip()) == tmp_path / "iwslt14_transformer" / "cpu" / j.name


def test_a_missing_run_is_one_sentence_naming_it(tmp_path, capsys):
    where = _committed(tmp_path / "committed", missing="norm=bn_official")
    out = tmp_path / "out"
    assert _script().main(_cli_args(where, out)) == 2
    err = capsys.readouterr().err
    assert f"{where / 'norm=bn_official'} has no summary.json" in err
    assert "make fig2-bn-variants" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (["--effect", "pads=bn_official"], "is not NAME=LABEL/LABEL"),
        (["--effect", "pads=nothing/bn"], "'nothing', which labels no run"),
        (["--twin", "bn=x"], "the label 'bn' names two runs"),
    ],
)
def test_bad_labels_are_one_sentence(tmp_path, capsys, change, words):
    args = _cli_args(_committed(tmp_path / "committed"), tmp_path / "out") + change
    assert _script().main(args) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def _make(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # Without an enclosing make's variables (CI runs the tests under `make test`). Runs and data
    # point into tmp_path: if a run were not found committed, its training fails at once instead of
    # writing into the checkout's runs/.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env["NORMLAB_RUNS"] = str(tmp_path / "runs")
    cmd = ["make", "--no-print-directory", "fig2-bn-variants", "SCALE=smoke"]
    cmd += [f"COMMITTED={tmp_path / 'committed'}", f"FIGURES={tmp_path / 'figures'}"]
    cmd += [f"IWSLT14=data.prepared_dir={tmp_path / 'no-data'}", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_make_reads_the_folders_the_sweep_trains(tmp_path):
    """`make -n`: the folders the comparison reads are the sweep's names for its --variant runs."""
    dry = _make(tmp_path, "-n")
    assert dry.returncode == 0, dry.stderr
    sweep, comparison = (
        shlex.split(line)
        for line in dry.stdout.splitlines()
        if "normlab.committed_sweep" in line or "compare_bn_variants" in line
    )
    specs = [sweep[i + 1] for i, a in enumerate(sweep) if a == "--variant"]
    names = {j.name for j in variant_jobs(specs, "iwslt14_transformer", "smoke")}
    where = tmp_path / "committed" / "iwslt14_transformer" / "smoke"
    read = [
        comparison[i + 1]
        for i, a in enumerate(comparison)
        if a in ("--base", "--twin", "--variant")
    ]
    assert {Path(r.partition("=")[2]) for r in read} == {where / n for n in names}
    assert len(read) == len(names) == 6


def test_make_with_every_run_committed_trains_nothing_and_compares(tmp_path):
    _committed(tmp_path / "committed")
    done = _make(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(", skipped") == 6 and ": training (log" not in done.stdout
    assert not (tmp_path / "runs").exists()
    out = tmp_path / "figures" / "fig2" / "smoke_bn_variants"
    result = json.loads((out / "variants.json").read_text())
    assert [r["label"] for r in result["runs"]] == [label for label, _, _ in RUNS]
    assert [e["name"] for e in result["decomposition"]] == ["LayerScaling", "momentum", "pads"]
    assert "## Decomposition" in (out / "variants.md").read_text()


def test_make_notrain_names_a_missing_committed_run(tmp_path):
    where = _committed(tmp_path / "committed", missing="norm.momentum=0.05,norm=bn")
    done = _make(tmp_path, "NOTRAIN=1")
    assert done.returncode == 2
    assert f"{where / 'norm.momentum=0.05,norm=bn'} has no summary.json" in done.stderr
    assert "committed_sweep" not in done.stdout  # NOTRAIN: the sweep is not even started
    assert not (tmp_path / "figures").exists() and not (tmp_path / "runs").exists()
