"""Norm settings per experiment and scale (configs/norm_preset/): Transformer_BN's momentum is the
official code's 0.05 at paper scale only; an explicit norm.momentum always wins."""

from __future__ import annotations

import pytest

from helpers import compose_config


@pytest.mark.parametrize(
    "overrides, momentum",
    [
        (["experiment=iwslt14_transformer", "scale=paper", "norm=bn"], 0.05),
        (["experiment=table1", "scale=paper", "norm=bn"], 0.05),
        (["experiment=iwslt14_transformer", "scale=cpu", "norm=bn"], 0.1),
        (["experiment=iwslt14_transformer", "scale=long", "norm=bn"], 0.1),
        (["experiment=cifar10_resnet20", "scale=paper", "norm=bn"], 0.1),
        (["experiment=iwslt14_transformer", "scale=paper", "norm=bn", "norm.momentum=0.2"], 0.2),
    ],
)
def test_bn_momentum_per_experiment_and_scale(overrides, momentum):
    assert compose_config(overrides).norm.momentum == momentum


def test_other_norms_are_untouched_at_paper_scale():
    norm = compose_config(["experiment=iwslt14_transformer", "scale=paper", "norm=ln"]).norm
    assert "momentum" not in norm
