"""Exported runs: the small outputs of a complete run, readable as a run directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO, compose_config, image_smoke_overrides
from normlab.probe.store import read_probe
from normlab.tracking.run_export import export_run
from normlab.train.loop import train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, image_folder):
    cfg = compose_config(
        [
            *image_smoke_overrides(image_folder),
            "probe.flush_every=2",  # several probe parts, to be consolidated into one
        ]
    )
    run = tmp_path_factory.mktemp("runs") / "cifar10_resnet20" / "smoke" / "norm=bn"
    train(cfg, run)
    return run


def test_export_keeps_the_small_outputs_and_every_probe_row(finished_run, tmp_path):
    assert len(list((finished_run / "probe").glob("part-*.parquet"))) > 1
    dest = export_run(finished_run, tmp_path / "export" / "norm=bn")
    assert sorted(p.name for p in dest.iterdir()) == [
        "config.yaml", "eval.csv", "metrics.csv", "probe", "summary.json"
    ]  # fmt: skip
    assert len(list((dest / "probe").glob("part-*.parquet"))) == 1
    assert read_probe(dest).equals(read_probe(finished_run))
    for name in ("summary.json", "metrics.csv", "eval.csv", "config.yaml"):
        assert (dest / name).read_bytes() == (finished_run / name).read_bytes()
    export_run(finished_run, dest)  # again: replaced whole, no temporary left behind
    assert [p.name for p in dest.parent.iterdir()] == ["norm=bn"]


def test_incomplete_run_is_refused_and_nothing_written(finished_run, tmp_path):
    run = tmp_path / "cut"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    proc = subprocess.run(
        [sys.executable, "scripts/export_run.py", str(run), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not a complete run (status='interrupted')" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_script_names_the_destination_after_the_run(finished_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/export_run.py", str(finished_run), "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cifar10_resnet20" / "smoke" / "norm=bn" / "summary.json").exists()
