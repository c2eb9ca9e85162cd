"""One copy of each shared helper, one source of each default (issue 13, items 2 and 6).

The helpers that had two copies are checked against the old copy's formula on real inputs; the
defaults Python states are checked against the YAML a run actually composes, so the two cannot
drift apart again; the package layering that decides where a shared helper may live is checked on
the import statements themselves.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from normlab.bpe_text import BPE_SYMBOL, remove_bpe
from normlab.data import DATASETS
from normlab.errors import UserError
from normlab.norms import NORMS, norm_factory
from normlab.norms.group_scaling import group_scale
from normlab.norms.masked_batchnorm import MaskedBatchNorm
from normlab.train import distributed

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SRC = REPO / "src" / "normlab"


# -- remove_bpe: one definition for data (Dictionary.string) and eval (BLEU) ---------------------
def _old_remove_bpe(line: str, marker: str = "@@ ") -> str:
    # The formula both former copies (eval/bleu.py, data/iwslt14/bpe.py) had, written out.
    return (line + " ").replace(marker, "").rstrip()


SENTENCES = [
    "the newspapers reported the news about the new newspaper .",
    "reporters rewrote the reports , and the rewritten reports were newer .",
    "a stray marker at the end",
    "e@@mail addresses keep their @@ signs",
] * 3


def _bpe_lines() -> list[str]:
    from normlab.data.iwslt14.bpe import apply_codes, learn_codes

    return apply_codes(SENTENCES, learn_codes(SENTENCES, 60))


def test_remove_bpe_undoes_subword_nmt_and_matches_the_old_copies():
    bped = _bpe_lines()
    assert any("@@ " in line for line in bped)  # the codes really split words
    edge = ["a stray marker@@", "e@@mail", "", "@@ ", "x@@  y"]
    for line in [*bped, *edge]:
        assert remove_bpe(line) == _old_remove_bpe(line)
    # Every word subword-nmt split is joined back; "@@" inside a word was never a marker.
    assert [remove_bpe(line) for line in bped[: len(SENTENCES)]] == SENTENCES


def test_data_and_eval_use_the_one_remove_bpe():
    from normlab.data.iwslt14.dictionary import Dictionary
    from normlab.eval import bleu

    assert bleu.remove_bpe is remove_bpe and BPE_SYMBOL == "@@ "
    bped = _bpe_lines()
    d = Dictionary.build(bped)
    for line in bped:
        assert d.string(d.encode_line(line)) == _old_remove_bpe(line)
    # BLEU on BPE'd text is BLEU on the joined text, through the same function.
    joined = [remove_bpe(line) for line in bped]
    assert bleu.tokenized_bleu(bped, bped[::-1]).score == pytest.approx(
        bleu.tokenized_bleu(joined, joined[::-1], bpe_marker=None).score
    )


# -- rms_scale is group_scale with one group -----------------------------------------------------
def _old_rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    # The former normlab.norms.masked_batchnorm.rms_scale, written out.
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_group_scale_with_one_group_is_the_old_rms_scale_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 7, 16, generator=g) * 5 + 2).to(dtype).requires_grad_()
    y_new = group_scale(x, 1, 1e-5)
    y_old = _old_rms_scale(x, 1e-5)
    assert torch.equal(y_new, y_old)
    upstream = torch.randn(3, 7, 16, generator=g).to(dtype)
    (gx_new,) = torch.autograd.grad(y_new, x, upstream)
    (gx_old,) = torch.autograd.grad(y_old, x, upstream)
    torch.testing.assert_close(gx_new, gx_old, rtol=0, atol=0)


def test_masked_bn_layer_scaling_is_the_old_rms_scale_then_plain_masked_bn():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 8, generator=g) * 3 + 1
    pad_mask = torch.zeros(4, 6, dtype=torch.bool)
    pad_mask[1, 4:], pad_mask[3, 2:] = True, True
    scaled, plain = MaskedBatchNorm(8, layer_scaling=True), MaskedBatchNorm(8)
    assert torch.equal(scaled(x, pad_mask), plain(_old_rms_scale(x, scaled.eps), pad_mask))
    assert torch.equal(scaled.running_var, plain.running_var)


# -- the divisor check: one function for GroupNorm and group scaling -----------------------------
def test_groupnorm_and_group_scaling_share_one_divisor_check():
    gn = norm_factory({"name": "gn", "groups": 6}, "image")
    with pytest.raises(UserError) as err:
        gn(16)
    # word for word the sentence GroupNorm's former own check gave
    assert str(err.value) == (
        "norm.groups=6 does not divide a layer of 16 channels; choose a divisor of every "
        "layer's width, e.g. one of [1, 2, 4, 8, 16]"
    )
    for name in ("pn", "pnv"):
        with pytest.raises(UserError, match=r"groups=3 does not divide a layer of 8 features; "
                           r"choose a divisor .*attention heads.*\[1, 2, 4, 8\]"):  # fmt: skip
            norm_factory({"name": name, "groups": 3}, "sequence")(8)
    for groups in (1, 2, 4, 8):  # every divisor builds, in both
        assert norm_factory({"name": "gn", "groups": groups}, "image")(8).num_groups == groups
        assert norm_factory({"name": "pn", "groups": groups}, "sequence")(8).groups == groups
    with pytest.raises(UserError, match="groups=0 does not divide"):
        norm_factory({"name": "gn", "groups": 0}, "image")(8)


# -- one rank query ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env,rank,size",
    [
        ({}, 0, 1),  # not launched by torchrun
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, 1, 2),
        ({"RANK": "3"}, 0, 1),  # a stray RANK in a single-process run: still the main process
    ],
)
def test_the_rank_query_and_the_world_agree(monkeypatch, env, rank, size):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert (distributed.launched_rank(), distributed.launched_world_size()) == (rank, size)
    if size == 1:  # init_world joins no group for one process, and must say the same
        world = distributed.init_world("auto", False, "cpu")
        assert (world.rank, world.size, world.main) == (rank, size, True)


def test_a_task_trains_on_the_shard_the_rank_query_names(monkeypatch, smoke_overrides):
    from helpers import compose_config
    from normlab.train.tasks import TASKS

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = compose_config(smoke_overrides)
    task = TASKS.get(str(cfg.task))(cfg, torch.device("cpu"))
    assert (task.train_data.rank, task.train_data.world) == (1, 2)
    assert (task.test_data.rank, task.test_data.world) == (0, 1)  # the whole test set


def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_only_train_distributed_asks_for_the_rank():
    askers = [
        str(f.relative_to(SRC))
        for f in SRC.rglob("*.py")
        if any(q in _source(f) for q in ('"RANK"', "'RANK'", "get_rank(", '"WORLD_SIZE"'))
    ]
    assert askers == ["train/distributed.py"]


# -- the dependency rule that decides where a shared helper may live ------------------------------
def _normlab_imports(pkg: str) -> set[str]:
    """The normlab subpackages/modules imported anywhere under src/normlab/<pkg>."""
    found: set[str] = set()
    for f in (SRC / pkg).rglob("*.py"):
        for node in ast.walk(ast.parse(_source(f))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found |= {n.split(".")[1] for n in names if n.startswith("normlab.")}
    return found - {pkg}


@pytest.mark.parametrize(
    "pkg,forbidden",
    [
        ("norms", {"models", "train", "data", "eval", "tracking", "probe", "analysis"}),
        ("models", {"train", "data", "eval", "tracking", "analysis"}),
        ("data", {"eval", "tracking", "train", "models"}),
        ("eval", {"data", "tracking", "train"}),
        ("tracking", {"data", "eval", "train"}),
    ],
)
def test_dependencies_point_one_way(pkg, forbidden):
    assert not _normlab_imports(pkg) & forbidden


# -- one source of defaults: the YAML a run composes ---------------------------------------------
def _python_defaults(fn) -> dict[str, object]:
    """Keyword options with the default Python states for them (no entry: none stated)."""
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _group_files(group: str) -> list[Path]:
    return sorted((CONFIGS / group).glob("*.yaml"))


GROUP_FILES = [("data", DATASETS, p) for p in _group_files("data")] + [
    ("norm", NORMS, p) for p in _group_files("norm")
]


@pytest.mark.parametrize(
    "group,registry,path", GROUP_FILES, ids=[f"{g}/{p.stem}" for g, _, p in GROUP_FILES]
)
def test_builder_defaults_are_the_yaml_values(group, registry, path, monkeypatch):
    """Where both state a default, they agree. A YAML value that needs the user (???) or the
    environment (oc.env) has no Python default at all, so a direct call cannot silently differ."""
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    node = _compose_group_file(group, path.stem)  # with the file's own defaults list, if any
    raw = OmegaConf.to_container(node, resolve=False)
    defaults = _python_defaults(registry.get(str(raw["name"])))
    for key, value in raw.items():
        if key == "name" or key not in defaults:
            continue
        where = f"configs/{group}/{path.name}: {key}"
        assert value != "???" and "${oc.env" not in str(value), f"{where} has a Python default"
        # Other interpolations (pn's warmup_iters follows the LR warmup, 0 without one) are
        # compared with what the file alone resolves to.
        resolved = OmegaConf.select(node, key) if "${" in str(value) else value
        assert defaults[key] == resolved, f"{where} is {resolved!r}, Python {defaults[key]!r}"


def _compose_group_file(group: str, name: str):
    """configs/<group>/<name>.yaml as Hydra composes it (its defaults list included), alone."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=f"{group}/{name}")[group]


@pytest.mark.parametrize("cls", ["PowerNorm", "PowerNormV"])
def test_powernorm_classes_state_no_defaults_of_their_own(cls):
    # The builders (checked above against pn.yaml / pnv.yaml) are the one Python copy; the classes
    # used to say group_scaling=False where the builders and the YAML say None (= per layout).
    from normlab.norms import powernorm

    assert _python_defaults(getattr(powernorm, cls).__init__) == {}


def test_build_transformer_restates_no_config_default():
    from normlab.models.transformer import TransformerConfig, build_transformer

    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    assert not fields & set(inspect.signature(build_transformer).parameters)


def test_run_schemas_state_no_default_other_than_train_yaml():
    from normlab.config import RunConfig, TrainerConfig

    root = OmegaConf.to_container(OmegaConf.load(CONFIGS / "train.yaml"), resolve=False)
    for schema, yaml_values in ((TrainerConfig, root["trainer"]), (RunConfig, root)):
        for f in dataclasses.fields(schema):
            if f.default is not dataclasses.MISSING:
                assert f.default == yaml_values[f.name], f"{schema.__name__}.{f.name}"
