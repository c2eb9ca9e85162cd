"""The benchmark script's every code path, a couple of steps per case (no timing is judged)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.slow
def test_bench_dry_run_covers_every_case(image_folder):
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench.py",
            "--dry-run",
            "--cifar",
            str(image_folder),
            "--batch",
            "16",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case in ("resnet_pipeline", "resnet_reference", "probe_all", "tf_pn", "tf_reference"):
        assert f"| {case} |" in proc.stdout
    assert "| resnet pipeline / reference loop |" in proc.stdout
