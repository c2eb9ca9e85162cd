"""How `norm=<name>` reaches its layers (issue 13, item 4): one registry look-up that both checks
the config and builds, and each model choosing the layout of its own norms from the run's norm
config, so a task hands over `cfg.norm` and nothing else. Built that way, a model is the one a
factory made for its layout gives: same modules, same state_dict keys (old checkpoints load)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from normlab.errors import UserError
from normlab.models import build_model
from normlab.norms import NORMS, check_norm_config, norm_factory, resolve_norm
from normlab.norms.masked_batchnorm import MaskedBatchNorm

SRC = Path(__file__).resolve().parents[1] / "src" / "normlab"
TOKENS = {"vocab_size": 12, "pad_idx": 1}
SMALL_TF = {"d_model": 16, "ffn_dim": 24, "heads": 2, "encoder_layers": 2, "decoder_layers": 2}
# model config, task options, the layout its norms see
CASES = {
    "resnet20": ({"name": "resnet20"}, {}, "image"),
    "vit": ({"name": "vit", "d_model": 16, "layers": 2, "heads": 2, "mlp_dim": 24}, {}, "sequence"),
    "transformer": ({"name": "transformer", **SMALL_TF}, TOKENS, "sequence"),
    "conv_transformer": ({"name": "conv_transformer", **SMALL_TF}, TOKENS, "sequence"),
}


def _counting_lookups(monkeypatch) -> list[str]:
    calls: list[str] = []
    get = NORMS.get

    def counted(name: str):
        calls.append(name)
        return get(name)

    monkeypatch.setattr(NORMS, "get", counted)
    return calls


def test_one_look_up_checks_and_builds(monkeypatch):
    calls = _counting_lookups(monkeypatch)
    make = norm_factory({"name": "bn", "momentum": 0.05}, "image")
    assert calls == ["bn"]
    assert make(8).momentum == make(16).momentum == 0.05  # each layer: no further look-up
    assert calls == ["bn"]
    check_norm_config({"name": "ln"})
    assert calls == ["bn", "ln"]


def test_a_model_resolves_the_run_norm_once(monkeypatch):
    calls = _counting_lookups(monkeypatch)
    build_model({"name": "resnet20"}, {"name": "bn"})  # 19 layers, one look-up
    assert calls == ["bn"]
    calls.clear()
    build_model(CASES["transformer"][0], {"name": "bn"}, **TOKENS)
    assert calls == ["bn", "ln"]  # the run's norm, then the decoder's (decoder_norm: ln)


def _norm_layers(model: nn.Module) -> list[tuple[str, type]]:
    return [(n, type(m)) for n, m in model.named_modules() if n.endswith("norm")]


@pytest.mark.parametrize("model", list(CASES))
@pytest.mark.parametrize("norm", ["bn", "ln", "pnv", "none"])
def test_the_model_builds_what_a_factory_for_its_layout_builds(model, norm):
    cfg, task_options, layout = CASES[model]
    norm_cfg = {"name": norm}
    torch.manual_seed(0)
    from_config = build_model(cfg, norm_cfg, **task_options)
    torch.manual_seed(0)
    kw = {"norm_for": lambda c: norm_factory(c, layout)} if "transformer" in model else {}
    from_factory = build_model(cfg, norm_factory(norm_cfg, layout), **task_options, **kw)
    assert _norm_layers(from_config) == _norm_layers(from_factory)
    a, b = from_config.state_dict(), from_factory.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_model_chooses_its_layout():
    resnet = build_model({"name": "resnet20"}, {"name": "bn"})
    assert isinstance(resnet.stem_norm, nn.BatchNorm2d)
    vit = build_model(CASES["vit"][0], {"name": "bn"})
    assert isinstance(vit.blocks[0].attn_norm, MaskedBatchNorm)  # tokens, not feature maps
    tf = build_model(CASES["transformer"][0], {"name": "bn"}, **TOKENS)
    assert isinstance(tf.encoder_layers[0].self_attn_norm, MaskedBatchNorm)


def test_a_factory_is_used_as_it_is():
    made = []

    def factory(c: int) -> nn.Module:
        made.append(c)
        return nn.Identity()

    assert resolve_norm(factory, "image") is factory
    build_model({"name": "resnet20"}, factory)
    assert len(made) == 19


@pytest.mark.parametrize("model", list(CASES))
def test_a_bad_norm_is_the_same_sentence_through_a_model(model):
    cfg, task_options, layout = CASES[model]
    for bad in ({"name": "bnn"}, {"name": "bn", "momentm": 0.1}):
        with pytest.raises(UserError) as direct:
            norm_factory(bad, layout)
        with pytest.raises(UserError) as through_model:
            build_model(cfg, bad, **task_options)
        assert str(through_model.value) == str(direct.value)


def test_a_bad_override_is_named_by_the_model():
    cfg = {**CASES["transformer"][0], "sublayer_norms": {"decoder_ffn": {"name": "lnn"}}}
    with pytest.raises(UserError, match="unknown norm 'lnn'"):
        build_model(cfg, {"name": "bn"}, **TOKENS)


def test_tasks_hand_the_norm_config_to_the_model():
    """No task builds a norm or names a layout: the model does (and models never import train)."""
    for path in sorted((SRC / "train" / "tasks").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            a.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "normlab.norms"
            for a in node.names
        }
        assert not imported, path.name
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        assert not strings & {"image", "sequence", "norm_layout"}, path.name


@pytest.mark.parametrize("name", ["bn", "ln", "pn", "gn", "none"])
def test_synchronized_statistics_are_chosen_when_the_model_is_built(name):
    """distributed.sync_bn reaches the layers as the run option `norm.sync_stats` (train/parts.py),
    so BN is built synchronized rather than swapped in afterwards; norms without batch statistics
    to share (or, like PN, keeping them per process as the paper's code does) ignore it."""
    from normlab.norms.global_stats import SyncBatchNorm2d

    cfg = {"name": name, **({"groups": 4} if name == "gn" else {})}
    check_norm_config({**cfg, "sync_stats": True})
    for layout in ("image", "sequence"):
        if name == "gn" and layout == "sequence":  # GroupNorm is for feature maps only
            continue
        plain = norm_factory(cfg, layout)(8)
        synced = norm_factory({**cfg, "sync_stats": True}, layout)(8)
        if name == "bn":
            assert type(plain) is (nn.BatchNorm2d if layout == "image" else MaskedBatchNorm)
            assert type(synced) is (SyncBatchNorm2d if layout == "image" else MaskedBatchNorm)
            assert getattr(synced, "sync_stats", True) and not getattr(plain, "sync_stats", False)
        else:
            assert type(synced) is type(plain)
        assert synced.state_dict().keys() == plain.state_dict().keys()  # checkpoints still load
