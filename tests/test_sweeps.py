"""Multirun sweeps: the joblib launcher runs jobs in parallel with threads split between them; the
SLURM launcher config composes."""

from __future__ import annotations

import os

from hydra import compose, initialize_config_dir

from helpers import run_smoke_sweep
from normlab.cli import CONFIG_DIR, threads_per_job


def test_joblib_sweep_runs_jobs_in_parallel_with_split_threads(image_folder, tmp_path):
    runs = tmp_path / "runs"
    proc = run_smoke_sweep(
        image_folder, runs, "launcher=joblib", "norm=bn,ln", "trainer.max_steps=3"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = runs / "cifar10_resnet20" / "smoke"
    names = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert names == ["norm=bn,trainer.max_steps=3", "norm=ln,trainer.max_steps=3"]
    config = (sweep / names[0] / "config.yaml").read_text()
    assert f"threads: {threads_per_job(2)}" in config


def test_slurm_launcher_composes_with_a_partition():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.max_num_timeout == 3


def test_threads_per_job_never_below_one():
    assert threads_per_job(1000) == 1
    assert threads_per_job(1) == (os.cpu_count() or 1)


def test_sweep_reports_a_failing_job_by_name_and_skips_complete_ones(image_folder, tmp_path):
    """4 jobs, 2 at a time (joblib): one diverges and is named, the rerun skips the 3 complete."""
    runs = tmp_path / "runs"
    args = (
        "launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.max_steps=6",
        "optim.lr=0.1,0.05,0.02,1e30",
    )
    first = run_smoke_sweep(image_folder, runs, *args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "3 of 4 jobs complete" in first.stdout, first.stdout
    assert "optim.lr=1e+30,trainer.max_steps=6: diverged at step 2" in first.stdout
    assert "failed: the training loss became" in first.stderr  # named, with the reason
    again = run_smoke_sweep(image_folder, runs, *args)
    for lr in ("0.1", "0.05", "0.02"):
        assert f"optim.lr={lr},trainer.max_steps=6: skipped (already complete)" in again.stdout
    assert "optim.lr=1e+30,trainer.max_steps=6: diverged" in again.stdout
