"""Every registry's names are exactly what its config group offers, so that a name documented in
configs/ always builds and a registered component is always reachable from the command line."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from helpers import compose_config
from normlab.cli import CONFIG_DIR, group_options
from normlab.data import DATASETS
from normlab.models import MODELS
from normlab.norms import NORMS
from normlab.train.tasks import TASKS


@pytest.mark.parametrize(("registry", "group"), [(NORMS, "norm"), (DATASETS, "data")])
def test_one_config_file_per_registered_name(registry, group):
    """norm=<x> and data=<x>: the file configs/<group>/<x>.yaml builds the component named x."""
    assert registry.names() == group_options(group)
    for name in group_options(group):
        assert OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml").name == name


def test_model_files_name_registered_builders_and_every_builder_has_one():
    """model=<file>: several files may size one builder (transformer_cpu, transformer_smoke ...)."""
    named = {
        OmegaConf.load(CONFIG_DIR / "model" / f"{f}.yaml").name for f in group_options("model")
    }
    assert named == set(MODELS.names())


def test_every_task_is_the_task_of_an_experiment():
    experiments = group_options("experiment")
    used = {compose_config([f"experiment={e}", "scale=smoke"]).task for e in experiments}
    assert used == set(TASKS.names())
