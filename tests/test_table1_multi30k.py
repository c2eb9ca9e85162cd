"""make table1-multi30k the way a user runs it: the norm x seed grid trains two at a time, each
finished run is exported to the committed folder at once, a second call skips the committed runs,
and the table carries each norm's paired bootstrap test against LN and the ordering verdict."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = SHARED_DATA / "multi30k"

pytestmark = [
    pytest.mark.skipif(
        not MULTI30K.is_dir(), reason=f"Multi30K is not at {MULTI30K} (this environment's data)"
    ),
    pytest.mark.slow,  # four smoke runs through make: ~45 s on an idle 2-core machine
]


def _make(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env |= {"NORMLAB_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "table1-multi30k",
            "SCALE=smoke",
            f"SHARED={SHARED_DATA}",
            f"COMMITTED={tmp_path / 'committed'}",
            f"TABLE1_OUT={tmp_path / 'table'}",
            "TABLE1_GRID=--grid norm=ln,bn --grid seed=0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_grid_exports_skips_and_tests_against_ln(tmp_path):
    first = _make(tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    committed = tmp_path / "committed" / "multi30k_transformer" / "smoke"
    names = sorted(p.name for p in committed.iterdir())
    assert names == ["norm=bn,seed=0", "norm=ln,seed=0"]
    for name in names:
        assert (committed / name / "generate-test.txt").exists()
        assert not (committed / name / "checkpoints").exists()
    table = (tmp_path / "table" / "table1.md").read_text()
    assert "Multi30K" in table and "| bn |" in table and "p, pooled over seeds" in table
    assert "BN below LN (paper: 34.4 vs 35.5): " in table
    assert "PN at least as good as LN (paper: 35.9 vs 35.5): NOT MEASURED" in table

    before = {p: p.stat().st_mtime_ns for p in committed.rglob("*") if p.is_file()}
    second = _make(tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count(", skipped") == 2 and "training" not in second.stdout
    assert {p: p.stat().st_mtime_ns for p in committed.rglob("*") if p.is_file()} == before
