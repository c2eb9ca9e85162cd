"""ResNet-20: parameter count from the architecture's own arithmetic, shapes, norm placement."""

from __future__ import annotations

import torch
from torch import nn

from normlab.models import build_model, count_parameters
from normlab.norms import NORMS, norm_factory


def expected_resnet20_params(norm_params_per_channel: int) -> int:
    """He et al.'s ResNet-20 counted by hand: 3x3 convs without bias, option-A shortcuts (no
    parameters), a norm after every conv, a 64->10 linear layer."""
    convs = 3 * 16 * 9  # stem
    convs += 6 * 16 * 16 * 9  # stage 1: 3 blocks x 2 convs
    convs += 16 * 32 * 9 + 5 * 32 * 32 * 9  # stage 2: the first conv widens
    convs += 32 * 64 * 9 + 5 * 64 * 64 * 9
    norm_channels = 16 + 6 * 16 + 6 * 32 + 6 * 64
    return convs + norm_params_per_channel * norm_channels + 64 * 10 + 10


def test_parameter_count_is_the_papers_0_27m():
    model = build_model({"name": "resnet20"}, norm_factory({"name": "bn"}, "image"))
    assert count_parameters(model) == expected_resnet20_params(2) == 269_722
    assert round(count_parameters(model) / 1e6, 2) == 0.27


def test_every_norm_builds_and_runs():
    for name, params in [("bn", 2), ("ln", 2), ("gn", 2), ("none", 0)]:
        model = build_model({"name": "resnet20"}, norm_factory({"name": name}, "image"))
        assert count_parameters(model) == expected_resnet20_params(params), name
        out = model(torch.randn(4, 3, 32, 32))
        assert out.shape == (4, 10)
        assert torch.isfinite(out).all()


def test_model_gets_all_19_norm_layers_from_the_factory():
    made = []

    def factory(c: int) -> nn.Module:
        m = nn.Identity()
        made.append(c)
        return m

    build_model({"name": "resnet20"}, factory)
    assert sorted(made) == sorted([16] * 7 + [32] * 6 + [64] * 6)


def test_a_new_norm_is_one_registration(monkeypatch):
    class Marker(nn.Identity):
        pass

    monkeypatch.setitem(NORMS._entries, "marker", lambda num_features, layout: Marker())
    model = build_model({"name": "resnet20"}, norm_factory({"name": "marker"}, "image"))
    assert sum(isinstance(m, Marker) for m in model.modules()) == 19
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_option_a_shortcut_downsamples_and_zero_pads():
    model = build_model({"name": "resnet20"}, norm_factory({"name": "none"}, "image"))
    shortcut = model.blocks[3].shortcut  # first block of stage 2: 16 -> 32 channels, stride 2
    x = torch.randn(2, 16, 32, 32)
    y = shortcut(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()
