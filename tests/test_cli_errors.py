"""Bad command lines fail before anything is launched, in one sentence (`normlab: error: ...`,
exit 2): a launcher that cannot start, and a key that no config has."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import REPO
from normlab import cli
from normlab.errors import UserError


def _main(argv, monkeypatch, capsys, tmp_path) -> str:
    """Run `normlab-train ARGV` in this process; it must exit 2 before writing anything."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("NORMLAB_RUNS", str(runs))
    monkeypatch.setattr(sys, "argv", ["normlab-train", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert not runs.exists()  # nothing launched
    err = capsys.readouterr().err
    assert err.startswith("normlab: error: ") and err.count("\n") == 1
    return err


def test_slurm_without_the_submitit_plugin(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "_importable", lambda module: module != "submitit")
    argv = ["-m", "launcher=slurm", "hydra.launcher.partition=gpu", "norm=bn,ln"]
    err = _main(argv, monkeypatch, capsys, tmp_path)
    assert "launcher=slurm needs the submitit launcher plugin" in err
    assert "pip install hydra-submitit-launcher" in err


def test_slurm_without_a_partition(monkeypatch, capsys, tmp_path):
    err = _main(["-m", "launcher=slurm", "norm=bn,ln"], monkeypatch, capsys, tmp_path)
    assert "launcher=slurm needs a partition; add hydra.launcher.partition=<your partition>" in err
    # with one, the checks pass (not launched here: there is no SLURM)
    cli.check_launcher(["-m", "launcher=slurm", "hydra.launcher.partition=gpu"])
    cli.check_override_keys(["-m", "launcher=slurm", "hydra.launcher.partition=gpu"])


def test_sweep_over_a_missing_key_names_the_nearest_keys(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "normlab.train", "-m", "scale=smoke", "trainer.epochz=1,2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "NORMLAB_RUNS": str(runs), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "normlab: error: no config key 'trainer.epochz' to set; nearest valid keys: "
        "trainer.epochs (or +trainer.epochz=... to add a new key)\n"
    )
    assert not runs.exists() and "HYDRA" not in proc.stdout  # no job started


def test_unknown_top_level_key_lists_the_top_level_keys(monkeypatch, capsys, tmp_path):
    err = _main(["-m", "foo=1,2"], monkeypatch, capsys, tmp_path)
    assert "no config key 'foo' to set; nearest valid keys: data, device" in err


@pytest.mark.parametrize(
    ("arg", "nearest"),
    [
        ("epochs=3", "trainer.epochs"),  # the same name one level down
        ("norm.momentun=0.1", "norm.momentum"),
        ("optim.lrr=0.1,0.2", "optim.lr"),
        ("launcher.partition=gpu", "hydra.launcher.partition"),
    ],
)
def test_typos_point_at_the_key_meant(arg, nearest):
    with pytest.raises(UserError, match=rf"no config key .*{nearest}"):
        cli.check_override_keys(["-m", arg])


def test_valid_overrides_pass():
    cli.check_override_keys(
        [
            "-m",
            "scale=smoke",
            "seed=range(3)",
            "optim.lr=0.1,0.2",
            "trainer.max_steps=3",
            "+extra=1",  # adding a key is explicit
            "hydra.launcher.n_jobs=2",  # Hydra's settings are Hydra's to check
            "optim.schedule.milestones=[1,2]",
        ]
    )
    # a key that only one of the swept norms has (PowerNorm's warmup) passes; Hydra reports the
    # other jobs
    cli.check_override_keys(["-m", "norm=bn,pn", "norm.warmup_iters=0"])
    with pytest.raises(UserError, match="norm.warmup_iters"):
        cli.check_override_keys(["norm=bn", "norm.warmup_iters=0"])
