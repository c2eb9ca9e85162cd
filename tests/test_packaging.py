"""A non-editable install (`pip install .`) carries the configs inside the package: built offline
from this checkout into a temporary folder, imported from there by a process outside the
checkout, it reads its own normlab/configs/ and composes a run's config."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from helpers import REPO

pytestmark = pytest.mark.slow  # builds a wheel, starts Python three times: 5-25 s


def _run(args: list[str], cwd, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_non_editable_install_ships_and_reads_its_configs(tmp_path):
    tmp_path = tmp_path.resolve()
    site = tmp_path / "site"
    # Build outside the checkout (setuptools would write build/ and src/normlab.egg-info there).
    dist_cfg = tmp_path / "dist.cfg"
    dist_cfg.write_text(
        f"[build]\nbuild_base = {tmp_path / 'build'}\n[egg_info]\negg_base = {tmp_path}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env |= {"OMP_NUM_THREADS": "1", "NORMLAB_RUNS": str(tmp_path / "runs")}
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--no-compile", "--target", str(site), str(REPO)],
        cwd=tmp_path,
        env=env | {"DIST_EXTRA_CONFIG": str(dist_cfg), "PIP_NO_INDEX": "1"},
    )
    packaged = site / "normlab" / "configs"
    shipped = sorted(p.relative_to(packaged) for p in packaged.rglob("*.yaml"))
    assert shipped == sorted(
        p.relative_to(REPO / "configs") for p in (REPO / "configs").rglob("*.yaml")
    )
    for rel in shipped:  # real files with the checkout's contents, not links
        assert not (packaged / rel).is_symlink()
        assert (packaged / rel).read_bytes() == (REPO / "configs" / rel).read_bytes(), rel

    # The installed copy, not the editable one: PYTHONPATH comes before the venv's src/ path.
    work = tmp_path / "elsewhere"
    work.mkdir()
    env |= {"PYTHONPATH": str(site)}
    where = _run(
        [sys.executable, "-c", "import normlab.cli as c; print(c.__file__); print(c.CONFIG_DIR)"],
        cwd=work,
        env=env,
    ).stdout.splitlines()
    assert where == [str(site / "normlab" / "cli.py"), str(packaged.resolve())]

    composed = _run(
        [sys.executable, "-m", "normlab.cli", "--cfg", "job"]
        + ["experiment=cifar10_resnet20", "scale=smoke"],
        cwd=work,
        env=env,
    ).stdout
    cfg = yaml.safe_load(composed)
    assert cfg["experiment_name"] == "cifar10_resnet20"
    assert cfg["task"] == "image_classification"
    assert not (tmp_path / "runs").exists() and not any(work.iterdir())  # composed, not run
