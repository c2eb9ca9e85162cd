"""Config files that derive from another state only their differences and inherit the rest through
Hydra's defaults lists: a smaller model over the paper's, a longer preset over the cpu one, PN-V and
PN over the options they share. These tests fail if a copy comes back (a derived file stating a
value its parent already gives, or two files holding the same settings side by side) or if a
defaults list stops bringing in the parent (the composed config would lose the parent's keys)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from helpers import compose_config
from normlab.cli import CONFIG_DIR, group_options


def compose_file(name: str) -> DictConfig:
    """One config file composed on its own (its defaults list applied), e.g. 'model/transformer_cpu'
    gives {model: {...}}."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name)


def raw(name: str) -> tuple[list[str], dict[str, Any]]:
    """A file as written: its defaults list and what it states itself (interpolations kept)."""
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    data = OmegaConf.to_container(cfg, resolve=False) or {}
    return list(data.pop("defaults", [])), data


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys in order: {'optim.schedule.warmup_steps': 150, ...}."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>")}


# -- model/: one root file per builder, every other file of that builder derives from it -----------
MODEL_FILES = {name: raw(f"model/{name}") for name in group_options("model")}
ROOTS = {cfg["name"]: name for name, (defaults, cfg) in MODEL_FILES.items() if not defaults}
DERIVED_MODELS = sorted(name for name, (defaults, _) in MODEL_FILES.items() if defaults)


def test_each_builder_has_one_root_model_file_the_others_derive_from():
    builders = {cfg["name"] for _, cfg in MODEL_FILES.values()}
    assert set(ROOTS) == builders  # a builder whose files all derive from something: a cycle
    roots = [name for name, (defaults, _) in MODEL_FILES.items() if not defaults]
    assert len(roots) == len(builders), f"two root files for one builder (a copy?): {roots}"
    for name in DERIVED_MODELS:
        defaults, cfg = MODEL_FILES[name]
        assert defaults == [ROOTS[cfg["name"]], "_self_"], name
    # the files this layout was made for (if one of them is a copy again, this fails)
    assert {"transformer_cpu", "transformer_smoke"} <= set(DERIVED_MODELS)
    assert {"conv_transformer_cpu", "conv_transformer_smoke"} <= set(DERIVED_MODELS)


@pytest.mark.parametrize("name", DERIVED_MODELS)
def test_a_derived_model_file_states_only_its_differences(name):
    _, own = MODEL_FILES[name]
    _, root = MODEL_FILES[ROOTS[own["name"]]]
    composed = compose_file(f"model/{name}").model
    # the root's every key, in the root's order, with the file's values over it
    assert list(flat(composed)) == list(flat(root))
    assert flat(composed) == flat(OmegaConf.merge(root, own))
    # `name` (the builder, read on its own by tests/test_registries.py) is the root's; every other
    # key it states is a real difference from the root
    assert changed(flat(composed), flat(root)) == set(flat(own)) - {"name"}
    # chosen on the command line, it composes the same inside the whole config
    whole = compose_config(["experiment=iwslt14_transformer", "scale=paper", f"model={name}"])
    assert whole.model == composed


# -- preset/: a preset over another preset ---------------------------------------------------------
PRESET_PARENTS = {  # (experiment, scale) -> the (experiment, scale) whose preset it builds on
    ("iwslt14_transformer", "cpu_long"): ("iwslt14_transformer", "cpu"),
    ("iwslt14_transformer", "long"): ("iwslt14_transformer", "cpu"),
    ("table1", "cpu"): ("iwslt14_transformer", "cpu"),
    ("table1", "smoke"): ("iwslt14_transformer", "smoke"),
    ("table1", "paper"): ("iwslt14_transformer", "paper"),
    ("cnn_norms", "smoke"): ("cifar10_resnet20", "smoke"),
    ("cnn_norms", "paper"): ("cifar10_resnet20", "paper"),
}


def test_preset_parents_are_the_defaults_lists():
    found = {}
    for experiment in group_options("experiment"):
        for scale in group_options(f"preset/{experiment}"):
            for entry in raw(f"preset/{experiment}/{scale}")[0]:
                if isinstance(entry, str) and entry.startswith("/preset/"):
                    parent_experiment, parent_scale = entry.split("@")[0].split("/")[2:4]
                    found[(experiment, scale)] = (parent_experiment, parent_scale)
    assert found == PRESET_PARENTS


@pytest.mark.parametrize("child, parent", PRESET_PARENTS.items(), ids=lambda c: "/".join(c))
def test_a_derived_preset_changes_exactly_what_it_states(child, parent):
    _, own = raw(f"preset/{child[0]}/{child[1]}")
    a = flat(compose_config([f"experiment={child[0]}", f"scale={child[1]}"]))
    b = flat(compose_config([f"experiment={parent[0]}", f"scale={parent[1]}"]))
    assert a.keys() == b.keys()  # no key of its own: only values of the parent's keys
    named = {k for k in ("experiment_name", "scale.name") if a[k] != b[k]}
    assert changed(a, b) == set(flat(own)) | named  # nothing it states repeats the parent
    assert all(a[k] == v for k, v in flat(own).items())


# -- norm/: PN-V and PN share one file of options --------------------------------------------------
SHARED = "norm/shared/powernorm"


@pytest.mark.parametrize("name", ["pn", "pnv"])
def test_powernorm_files_state_only_their_algorithm(name):
    defaults, own = raw(f"norm/{name}")
    _, shared = raw(SHARED)
    assert defaults == ["_self_", "shared/powernorm@_here_"]
    # the shared file comes after _self_ (to keep `name` first), so a key stated in both would
    # silently take the shared value: none may be (set it in the shared file, or leave it there)
    assert not own.keys() & shared.keys()
    assert "name" not in shared
    composed = compose_file(f"norm/{name}").norm
    assert OmegaConf.to_container(composed, resolve=False) == {**own, **shared}
    assert list(composed) == [*own, *shared]
    assert compose_config([f"norm={name}"]).norm == composed


def test_pn_and_pnv_differ_only_in_their_algorithm():
    pn = OmegaConf.to_container(compose_file("norm/pn").norm, resolve=False)
    pnv = OmegaConf.to_container(compose_file("norm/pnv").norm, resolve=False)
    common = pn.keys() & pnv.keys()
    assert common == {"name", *raw(SHARED)[1]}
    assert {k for k in common if pn[k] != pnv[k]} == {"name"}


# -- data_scale/: a scale whose corpus settings are another scale's --------------------------------
@pytest.mark.parametrize("data", [p.name for p in (CONFIG_DIR / "data_scale").iterdir()])
def test_data_scale_files_are_not_copies(data):
    scales = group_options(f"data_scale/{data}")
    composed = {s: compose_file(f"data_scale/{data}/{s}").data for s in scales}
    for scale in scales:
        defaults, own = raw(f"data_scale/{data}/{scale}")
        for entry in defaults:
            parent = entry.split("@")[0].rsplit("/", 1)[1]
            assert changed(flat(composed[scale]), flat(composed[parent])) == set(flat(own))
    for a, b in itertools.combinations(scales, 2):  # equal settings: one must include the other
        if composed[a] == composed[b]:
            assert any(raw(f"data_scale/{data}/{s}")[0] for s in (a, b)), (a, b)


def test_parallel_text_keeps_its_cpu_settings_at_the_longer_scales():
    for scale in ("cpu_long", "long"):
        assert raw(f"data_scale/parallel_text/{scale}") == (
            ["/data_scale/parallel_text/cpu@_here_"],
            {},
        )


# -- anywhere: no two files of one folder hold the same settings -----------------------------------
FOLDERS = sorted({p.parent for p in CONFIG_DIR.rglob("*.yaml")})


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_no_two_files_of_a_folder_state_the_same_settings(folder):
    stated = {p.stem: raw(str(p.relative_to(CONFIG_DIR))[:-5])[1] for p in folder.glob("*.yaml")}
    for (a, x), (b, y) in itertools.combinations(sorted(stated.items()), 2):
        if x and y:  # empty: a preset that changes nothing, or a file that only includes another
            assert x != y, f"{folder.relative_to(CONFIG_DIR)}: {a}.yaml and {b}.yaml are copies"
