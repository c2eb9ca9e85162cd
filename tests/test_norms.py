"""Each norm in the factory against its formula, computed directly with tensor ops."""

from __future__ import annotations

import pytest
import torch

from normlab.errors import UserError
from normlab.norms import norm_factory


def _normalize(x, dims, eps=1e-5):
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


@pytest.fixture
def x():
    return torch.randn(8, 16, 5, 5, dtype=torch.float64) * 3 + 1


def test_bn_uses_batch_statistics_per_channel_in_training(x):
    bn = norm_factory({"name": "bn", "momentum": 0.1}, "image")(16).double().train()
    torch.testing.assert_close(bn(x), _normalize(x, (0, 2, 3)))
    # running statistics: momentum 0.1 from (0, 1), variance stored unbiased (PyTorch convention)
    torch.testing.assert_close(bn.running_mean, 0.1 * x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * x.var(dim=(0, 2, 3), unbiased=True))


def test_ln_normalizes_each_sample_over_c_h_w(x):
    ln = norm_factory({"name": "ln"}, "image")(16).double()
    torch.testing.assert_close(ln(x), _normalize(x, (1, 2, 3)))


def test_gn_normalizes_groups_of_channels(x):
    gn = norm_factory({"name": "gn", "groups": 4}, "image")(16).double()
    grouped = _normalize(x.view(8, 4, 4, 5, 5), (2, 3, 4)).view_as(x)
    torch.testing.assert_close(gn(x), grouped)


def test_none_is_identity(x):
    assert torch.equal(norm_factory({"name": "none"}, "image")(16)(x), x)


def test_unknown_norm_is_one_line_listing_valid_names():
    with pytest.raises(UserError) as err:
        norm_factory({"name": "bnn"}, "image")
    msg = str(err.value)
    assert "\n" not in msg and "'bnn'" in msg
    for name in ("bn", "gn", "ln", "none"):
        assert name in msg


def test_unknown_option_is_named():
    with pytest.raises(UserError, match="no option 'momentm'.*momentum"):
        norm_factory({"name": "bn", "momentm": 0.1}, "image")


def test_gn_groups_must_divide_the_width():
    make = norm_factory({"name": "gn", "groups": 6}, "image")
    with pytest.raises(UserError, match="groups=6 does not divide .* 16 channels"):
        make(16)
