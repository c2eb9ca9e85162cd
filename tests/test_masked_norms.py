"""Sequence-layout norms: masked BatchNorm against its formula and nn.BatchNorm1d; pads never count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.errors import UserError
from normlab.norms import norm_factory
from normlab.norms.layernorm import SequenceLayerNorm
from normlab.norms.masked_batchnorm import MaskedBatchNorm

C = 6
LENGTHS = [5, 2, 4]  # real tokens per sentence


def padded_batch(lengths: list[int], width: int, seed: int = 0, pad_value: float = 1e3):
    """Sentences with features drawn from one seed, padded to `width`; pads hold junk values."""
    g = torch.Generator().manual_seed(seed)
    tokens = [torch.randn(n, C, generator=g, dtype=torch.float64) * 2 + 0.5 for n in lengths]
    x = torch.full((len(lengths), width, C), pad_value, dtype=torch.float64)
    pad_mask = torch.ones(len(lengths), width, dtype=torch.bool)
    for i, t in enumerate(tokens):
        x[i, : len(t)] = t
        pad_mask[i, : len(t)] = False
    return x, pad_mask, torch.cat(tokens)


def real(y: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    return y[~pad_mask]


def sequence_bn(**options) -> MaskedBatchNorm:
    bn = norm_factory({"name": "bn", **options}, "sequence")(C).double()
    assert isinstance(bn, MaskedBatchNorm)
    return bn


def test_statistics_run_over_the_non_pad_tokens_only():
    x, pad_mask, tokens = padded_batch(LENGTHS, 7)
    bn = sequence_bn().train()
    y = bn(x, pad_mask)
    mean, var = tokens.mean(0), tokens.var(0, unbiased=False)
    torch.testing.assert_close(real(y, pad_mask), (tokens - mean) / torch.sqrt(var + 1e-5))
    torch.testing.assert_close(bn.running_mean, 0.1 * mean)
    n = len(tokens)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * var * n / (n - 1))
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.statistic_inputs(x, pad_mask), tokens)


def test_more_padding_changes_no_statistic_and_no_real_output():
    short, short_mask, _ = padded_batch(LENGTHS, 5, pad_value=0.0)
    long, long_mask, _ = padded_batch(LENGTHS, 11, pad_value=-7e4)
    a, b = sequence_bn(), sequence_bn()
    for _ in range(3):  # several steps, so the running statistics have history
        ya, yb = a(short, short_mask), b(long, long_mask)
        torch.testing.assert_close(real(ya, short_mask), real(yb, long_mask), rtol=0, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-12)
    a.eval(), b.eval()
    torch.testing.assert_close(
        real(a(short, short_mask), short_mask), real(b(long, long_mask), long_mask)
    )


def test_eval_mode_uses_the_running_statistics():
    x, pad_mask, tokens = padded_batch(LENGTHS, 6)
    bn = sequence_bn()
    bn.running_mean.fill_(0.25)
    bn.running_var.fill_(4.0)
    bn.eval()
    y = bn(x, pad_mask)
    torch.testing.assert_close(
        real(y, pad_mask), (tokens - 0.25) / torch.sqrt(torch.tensor(4.0 + 1e-5))
    )
    assert int(bn.num_batches_tracked) == 0  # eval never updates the buffers


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_matches_batchnorm1d_on_the_flattened_real_tokens(momentum):
    ours = sequence_bn(momentum=momentum)
    ref = nn.BatchNorm1d(C, momentum=momentum).double()
    with torch.no_grad():  # a non-trivial affine, the same in both
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 2.0, C))
            m.bias.copy_(torch.linspace(-1.0, 1.0, C))
    for step in range(3):
        x, pad_mask, tokens = padded_batch([4 + step, 2, 3], 9, seed=step)
        x.requires_grad_(True)
        tokens = tokens.clone().requires_grad_(True)
        y, y_ref = ours(x, pad_mask), ref(tokens)
        torch.testing.assert_close(real(y, pad_mask), y_ref)
        upstream = torch.randn_like(y_ref)  # an arbitrary loss on the real tokens
        (real(y, pad_mask) * upstream).sum().backward()
        (y_ref * upstream).sum().backward()
        torch.testing.assert_close(real(x.grad, pad_mask), tokens.grad)
        assert (x.grad[pad_mask] == 0).all()  # nothing flows back into the pads
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)
    ours.eval(), ref.eval()
    x, pad_mask, tokens = padded_batch(LENGTHS, 6, seed=9)
    torch.testing.assert_close(real(ours(x, pad_mask), pad_mask), ref(tokens))


def test_probe_attributes_are_those_of_batchnorm2d():
    bn = sequence_bn(momentum=0.2, eps=1e-3)
    assert (bn.momentum, bn.eps) == (0.2, 1e-3)
    assert {"running_mean", "running_var", "num_batches_tracked"} <= dict(bn.named_buffers()).keys()


def test_layer_scaling_divides_each_token_by_its_rms_first():
    x, pad_mask, tokens = padded_batch(LENGTHS, 7)
    bn = sequence_bn(layer_scaling=True).train()
    scaled = tokens / torch.sqrt(tokens.pow(2).mean(dim=1, keepdim=True) + 1e-5)
    ref = nn.BatchNorm1d(C).double().train()
    torch.testing.assert_close(real(bn(x, pad_mask), pad_mask), ref(scaled))
    torch.testing.assert_close(bn.running_var, ref.running_var)


def test_layer_scaling_is_rejected_for_images():
    with pytest.raises(
        UserError, match="layer_scaling=true .* set norm.layer_scaling=false"
    ) as err:
        norm_factory({"name": "bn", "layer_scaling": True}, "image")(16)
    assert "\n" not in str(err.value)
    assert isinstance(
        norm_factory({"name": "bn", "layer_scaling": False}, "image")(16), nn.BatchNorm2d
    )


def test_one_real_token_is_not_a_batch():
    x, pad_mask, _ = padded_batch([1], 4)
    with pytest.raises(ValueError, match="more than 1 real token"):
        sequence_bn()(x, pad_mask)


def test_sequence_ln_normalizes_each_token_and_accepts_a_mask():
    x, pad_mask, _ = padded_batch(LENGTHS, 7)
    ln = norm_factory({"name": "ln"}, "sequence")(C).double()
    assert isinstance(ln, SequenceLayerNorm)
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(ln(x, pad_mask), (x - mean) / torch.sqrt(var + 1e-5))
    torch.testing.assert_close(ln(x), ln(x, pad_mask))


def test_none_accepts_a_mask():
    x, pad_mask, _ = padded_batch(LENGTHS, 7)
    assert torch.equal(norm_factory({"name": "none"}, "sequence")(C)(x, pad_mask), x)
