"""Config composition of every experiment at every scale, and early one-line errors from the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO, compose_config
from normlab.cli import CONFIG_DIR, check_group_overrides, group_options, run_name
from normlab.config import validate_config
from normlab.errors import UserError

EXPERIMENTS = group_options("experiment")
CASES = [(e, s) for e in EXPERIMENTS for s in group_options(f"preset/{e}")]


def test_every_experiment_has_the_three_scales():
    for experiment in EXPERIMENTS:
        assert {"smoke", "cpu", "paper"} <= set(group_options(f"preset/{experiment}")), experiment


@pytest.mark.parametrize("experiment, scale", CASES)
def test_every_experiment_composes_and_validates(experiment, scale):
    cfg = compose_config([f"experiment={experiment}", f"scale={scale}"])
    validate_config(cfg)
    assert cfg.experiment_name == experiment
    assert cfg.scale.name == scale


def test_cifar10_paper_scale_is_the_he_et_al_recipe():
    cfg = compose_config(["experiment=cifar10_resnet20", "scale=paper"])
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (160, 128)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (
        "sgd",
        0.1,
        0.9,
        1e-4,
    )
    assert list(cfg.optim.schedule.milestones) == [80, 120] and cfg.optim.schedule.gamma == 0.1
    assert cfg.norm.momentum == 0.1


def test_presets_keep_the_schedule_shape():
    for scale in ("cpu", "smoke"):
        cfg = compose_config(["experiment=cifar10_resnet20", f"scale={scale}"])
        fractions = [m / cfg.trainer.epochs for m in cfg.optim.schedule.milestones]
        assert fractions == [0.5, 0.75], scale


def _names(group: str) -> str:
    """The names a message must offer: the files of the config group, independently listed."""
    return ", ".join(sorted(p.stem for p in (REPO / "configs" / group).glob("*.yaml")))


@pytest.mark.parametrize(
    "arg, message",
    [
        ("norm=bnn", f"unknown norm 'bnn'; valid names: {_names('norm')}"),
        ("model=resnet56", f"unknown model 'resnet56'; valid names: {_names('model')}"),
        ("scale=huge", f"unknown scale 'huge'; valid names: {_names('scale')}"),
        ("norm=bn,lnn", "unknown norm 'lnn'"),
    ],
)
def test_unknown_group_value_is_one_line(arg, message):
    with pytest.raises(UserError, match=message) as err:
        check_group_overrides([arg])
    assert "\n" not in str(err.value)


def test_known_values_and_plain_keys_pass():
    check_group_overrides(["norm=bn,ln", "scale=smoke", "optim.lr=0.3", "seed=range(3)", "+x=1"])


def test_run_names_are_safe_directory_names():
    assert run_name("") == "default"
    assert "/" not in run_name("data.root=../shared/data/cifar10-jpeg,norm=ln")
    assert not run_name("data.root=../x").startswith(".")
    long = run_name("a=" + "x" * 400)
    assert len(long) <= 150 and long != run_name("a=" + "x" * 399)


def test_cli_unknown_norm_exits_nonzero_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "normlab.train", "norm=bnn"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert f"unknown norm 'bnn'; valid names: {_names('norm')}" in proc.stderr


def test_cli_smoke_run_writes_the_run_directory(image_folder, tmp_path):
    env_runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "normlab.train",
            "scale=smoke",
            "data.source=imagefolder",
            f"data.root={image_folder}",
            "norm=gn",
            "trainer.progress=false",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, "NORMLAB_RUNS": str(env_runs)},
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list((env_runs / "cifar10_resnet20" / "smoke").iterdir())
    assert run_dir.name == "norm=gn"  # data location and progress settings stay out of the name
    for name in ("config.yaml", "summary.json", "metrics.csv", "eval.csv", "checkpoints/last.pt"):
        assert (run_dir / name).exists(), name
    assert proc.stdout.startswith("complete: ")


def test_config_dir_is_the_repository_configs():
    assert CONFIG_DIR == REPO / "configs"
