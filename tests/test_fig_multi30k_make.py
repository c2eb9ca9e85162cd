"""make fig2-multi30k / fig3-multi30k / fig4-multi30k the way a user runs them: figures from the
committed copies of the Multi30K seed-0 runs (COMMITTED) next to the committed ResNet-20 BN run,
nothing trained; a missing run is named in one sentence and nothing is written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import REPO
from synthetic_runs import write_run


def _make(target: str, committed: Path, figures: Path) -> subprocess.CompletedProcess:
    # Without an enclosing make's variables (CI runs the tests under `make test`).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            target,
            "SCALE=smoke",
            f"COMMITTED={committed}",
            f"FIGURES={figures}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _committed(root: Path, norms: tuple[str, ...]) -> Path:
    summary = {"status": "complete", "steps": 60}
    write_run(root / "cifar10_resnet20/smoke/norm=bn", 60, {}, summary=dict(summary))
    for i, norm in enumerate(norms):
        write_run(
            root / f"multi30k_transformer/smoke/norm={norm},seed=0",
            60,
            {},
            layer="encoder_layers.0.self_attn_norm",
            d=32,
            summary=dict(summary),
            seed=i + 1,
        )
    return root


# Each plot takes ~10 s on an idle 2-core machine: fig2 in the fast suite, fig3 and fig4 in the slow.
@pytest.mark.parametrize("fig", ["fig2", pytest.param("fig3", marks=pytest.mark.slow)])
def test_figure_from_the_committed_runs(tmp_path, fig):
    committed = _committed(tmp_path / "committed", ("bn",))
    done = _make(f"{fig}-multi30k", committed, tmp_path / "figures")
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "figures" / fig / "multi30k_smoke" / f"{fig}_summary.txt").read_text()
    assert "Transformer_BN / Multi30K (encoder_layers.0.self_attn_norm, d=32)" in summary
    assert "ResNet-20 / CIFAR-10 (stem_norm, d=16)" in summary
    assert "60 probed steps" in summary


@pytest.mark.slow
def test_fig4_pairs_bn_with_pnv(tmp_path):
    committed = _committed(tmp_path / "committed", ("bn", "pnv"))
    done = _make("fig4-multi30k", committed, tmp_path / "figures")
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "figures" / "fig4" / "multi30k_smoke" / "fig4_summary.txt").read_text()
    assert "Transformer_BN" in summary and "Transformer_PN-V" in summary


def test_a_missing_run_is_named_and_nothing_is_written(tmp_path):
    committed = _committed(tmp_path / "committed", ("bn",))  # no PN-V run
    done = _make("fig4-multi30k", committed, tmp_path / "figures")
    assert done.returncode == 2
    missing = committed / "multi30k_transformer/smoke/norm=pnv,seed=0"
    assert f"{missing} has no summary.json" in done.stderr
    assert "make table1-multi30k" in done.stderr
    assert not (tmp_path / "figures").exists()
