"""launcher=submitit_local: the code path of launcher=slurm (hydra-submitit-launcher) with
submitit's local executor, since SLURM itself is not available here."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_dir

from helpers import run_smoke_sweep
from normlab.cli import CONFIG_DIR


def test_submitit_local_launcher_composes():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["launcher=submitit_local"], return_hydra_config=True
        )
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")


def test_a_smoke_job_completes_through_submitit_local(image_folder, tmp_path):
    runs = tmp_path / "runs"
    proc = run_smoke_sweep(
        image_folder,
        runs,
        "launcher=submitit_local",
        "trainer.threads=1",
        "trainer.batch_size=32",
        "trainer.max_steps=3",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = runs / "cifar10_resnet20" / "smoke"
    (summary,) = sweep.glob("*/summary.json")
    assert json.loads(summary.read_text())["status"] == "complete"
    assert "1 of 1 jobs complete" in proc.stdout
    # the job ran in a submitit subprocess: its logs are in the sweep's .submitit folder
    assert list((sweep / ".submitit").glob("*/*_log.out"))
