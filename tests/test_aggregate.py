"""Sweep aggregation: mean ± std per configuration, incomplete runs listed, Table 1 next to the paper."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import subprocess
import sys

import yaml

from helpers import REPO, make_fairseq_layout
from normlab.analysis.aggregate import aggregate, to_markdown


def _fake_run(root, norm, seed, bleu=None, status="complete"):
    d = root / f"norm={norm},seed={seed}"
    (d / ".hydra").mkdir(parents=True)
    config = {"norm": {"name": norm}, "seed": seed}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if status != "missing":
        summary = {"status": status, "bleu": bleu, "sacrebleu": bleu and bleu - 1, "config": config}
        if status == "diverged":
            summary["diverged_at_step"] = 77
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_groups_average_over_seeds_and_list_incomplete_runs(tmp_path):
    values = {"ln": [30.0, 31.5, 29.0], "bn": [20.0, 22.0]}
    for norm, bleus in values.items():
        for seed, b in enumerate(bleus):
            _fake_run(tmp_path, norm, seed, b)
    _fake_run(tmp_path, "bn", 2, status="diverged")
    _fake_run(tmp_path, "pn", 0, status="missing")
    groups, incomplete = aggregate(tmp_path, ["norm.name"])
    stats = {g.key[0]: g.stat("bleu") for g in groups}
    for norm, bleus in values.items():
        mean, std, n = stats[norm]
        assert n == len(bleus)
        assert abs(mean - statistics.fmean(bleus)) < 1e-12
        assert abs(std - statistics.stdev(bleus)) < 1e-12
    assert sorted(r["status"] for r in incomplete) == ["diverged", "not started"]


def test_a_single_run_is_shown_without_a_spread(tmp_path):
    _fake_run(tmp_path, "ln", 0, 30.0)
    _fake_run(tmp_path, "ln", 1, 31.0)
    _fake_run(tmp_path, "pn", 0, 32.5)
    groups, _ = aggregate(tmp_path, ["norm.name"])
    md = to_markdown(groups, ["norm.name"], ["bleu"])
    assert "| pn | 32.50 (n=1) |" in md
    pn = next(g for g in groups if g.key == ("pn",))
    assert math.isnan(pn.stat("bleu")[1])  # the CSV's std column too: undefined, not 0
    assert "| ln | 30.50 ± 0.71 (n=2) |" in md


def test_make_table1_writes_markdown_csv_with_the_papers_column(tmp_path, capsys):
    for seed in range(2):
        for norm, b in (("ln", 10.0), ("bn", 8.0), ("pnv", 9.0), ("pn", 11.0)):
            _fake_run(tmp_path / "sweep", norm, seed, b + seed)
    assert (
        _script("make_table1").main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    )
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "| ln | 10.50 ± 0.71 (n=2) | 9.50 ± 0.71 (n=2) | – | 35.5 |" in md
    rows = (tmp_path / "out" / "table1.csv").read_text().splitlines()
    assert (
        rows[0].startswith("norm,bleu_mean")
        and rows[1].startswith("ln,10.5")
        and rows[4].startswith("pn,")
    )
    assert (tmp_path / "out" / "provenance.json").exists()


def test_table1_smoke_sweep_runs_every_job(tmp_path):
    corpus = make_fairseq_layout(tmp_path / "toy", {"valid": 140, "test": 12})
    env_runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "normlab.train",
            "-m",
            "experiment=table1",
            "scale=smoke",
            f"data.prepared_dir={corpus}",
            "trainer.progress=false",
            "trainer.threads=1",
            "hydra.sweeper.params.seed=0",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, "NORMLAB_RUNS": str(env_runs)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    groups, incomplete = aggregate(env_runs / "table1" / "smoke", ["norm.name"])
    assert sorted(g.key[0] for g in groups) == ["bn", "ln", "pn", "pnv"]
    assert not incomplete


def test_aggregate_script_writes_csv_and_markdown(tmp_path, capsys):
    for seed, acc in enumerate([0.5, 0.7]):
        d = _fake_run(tmp_path / "sweep", "gn", seed, None)
        summary = json.loads((d / "summary.json").read_text()) | {"test_acc": acc}
        (d / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "out"
    assert (
        _script("aggregate").main(
            [str(tmp_path / "sweep"), "--metrics", "test_acc", "--out", str(out)]
        )
        == 0
    )
    assert "| gn | 0.60 ± 0.14 (n=2) |" in (out / "aggregate.md").read_text()
    assert (out / "aggregate.csv").read_text().splitlines()[1].startswith("gn,0.6")
