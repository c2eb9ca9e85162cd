"""Masked BN's fused path (`F.batch_norm` on the tokens: no pad mask, or eval) against its explicit
path, which tests/test_masked_norms.py checks against the formulas and nn.BatchNorm1d."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from normlab.norms import masked_batchnorm
from normlab.norms.masked_batchnorm import MaskedBatchNorm
from normlab.probe.batch_stats import BatchStatsProbe

B, T, C = 4, 5, 6
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def layer(momentum: float | None) -> MaskedBatchNorm:
    bn = MaskedBatchNorm(C, momentum=momentum)
    with torch.no_grad():  # a non-trivial affine
        bn.weight.copy_(torch.linspace(0.5, 2.0, C))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, C))
    return bn


def batch(step: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    # features first, then transposed: the layer must not assume a contiguous input
    x = torch.randn(B, C, T, generator=g) * (1 + step) + 0.5 * step
    return x.transpose(1, 2).to(dtype)


def run(bn: MaskedBatchNorm, x: torch.Tensor, amp: bool):
    """Output and the gradients of input, weight and bias for a fixed arbitrary loss."""
    x = x.detach().requires_grad_(True)
    bn.zero_grad()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with autocast:
        y = bn(x)
    upstream = torch.linspace(-1.0, 1.0, y.numel()).view_as(y)
    (y.float() * upstream).sum().backward()
    return y, (x.grad, bn.weight.grad, bn.bias.grad)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize(
    "dtype, amp", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, True)]
)
def test_fused_path_equals_the_explicit_path(monkeypatch, momentum, dtype, amp):
    fused, explicit = layer(momentum), layer(momentum)
    calls = []
    original = masked_batchnorm.fused_batch_norm
    monkeypatch.setattr(
        masked_batchnorm, "fused_batch_norm", lambda bn, x: calls.append(1) or original(bn, x)
    )
    for step in range(3):
        for training in (True, False):
            fused.train(training), explicit.train(training)
            x = batch(step, dtype)
            y, grads = run(fused, x, amp)
            with monkeypatch.context() as m:  # the explicit path: no fused layer
                m.setattr(masked_batchnorm, "fused_batch_norm", lambda bn, x: None)
                y_ref, grads_ref = run(explicit, x, amp)
            assert y.dtype == y_ref.dtype == torch.float32  # statistics and output in float32
            torch.testing.assert_close(y, y_ref)
            for g, g_ref in zip(grads, grads_ref, strict=True):
                # A bf16 input's gradient: the explicit path adds its direct and its statistics
                # terms, which nearly cancel, each already rounded to bf16; the fused path rounds
                # once. Equal to bf16's rounding of the largest gradient.
                tol = {}
                if g.dtype == torch.bfloat16:
                    tol = {"atol": float(2**-8 * g_ref.abs().max()), "rtol": 1.6e-2}
                torch.testing.assert_close(g, g_ref, **tol)
            for name in BUFFERS:
                torch.testing.assert_close(getattr(fused, name), getattr(explicit, name))
                assert getattr(fused, name).dtype == getattr(explicit, name).dtype
            assert fused.last_count == explicit.last_count == B * T
    assert int(fused.num_batches_tracked) == 3
    assert len(calls) == 6  # every call took the fused path


@pytest.mark.parametrize(
    "options, pad_mask, sync",
    [
        ({}, torch.zeros(B, T, dtype=torch.bool), False),  # a pad mask, even without pads
        ({"layer_scaling": True}, None, False),
        ({}, None, True),  # synchronized statistics (one process here)
    ],
)
def test_pads_layer_scaling_and_sync_keep_the_explicit_path(monkeypatch, options, pad_mask, sync):
    def refuse(bn, x):
        raise AssertionError("the fused path was taken")

    monkeypatch.setattr(masked_batchnorm, "fused_batch_norm", refuse)
    bn = MaskedBatchNorm(C, **options).train()
    bn.sync_stats = sync
    bn(batch(0, torch.float32), pad_mask)
    assert int(bn.num_batches_tracked) == 1


def test_a_double_layer_stays_on_its_own_dtype():
    bn = layer(0.1).double()
    y = bn(batch(0, torch.float64))
    assert y.dtype == torch.float64 and bn.running_var.dtype == torch.float64
    # float32 input on float64 buffers: not the fused kernel's mix, the explicit path takes it
    assert bn(batch(1, torch.float32)).dtype == torch.float64


def test_one_token_is_not_a_batch():
    with pytest.raises(ValueError, match="more than 1 real token"):
        MaskedBatchNorm(C).train()(torch.randn(1, 1, C))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_probe_reads_the_fused_layers_statistics_and_gradients(momentum):
    """The ViT's case: no pad mask. The probe's row against BN written out in float64."""
    torch.manual_seed(0)
    bn = layer(momentum).train()
    with torch.no_grad():  # running statistics away from their init; momentum None: weight 1/4
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.num_batches_tracked.fill_(3)
    mu, var = bn.running_mean.double(), bn.running_var.double()
    x, upstream = batch(2, torch.float32), torch.randn(B, T, C)
    probe = BatchStatsProbe(nn.ModuleList([bn]))
    probe.begin_step(1)
    (bn(x) * upstream).sum().backward()
    (row,) = probe.end_step(1, 0, 0.0)

    tokens = x.reshape(-1, C).double()
    mu_b = tokens.mean(0).requires_grad_()
    var_b = tokens.var(0, unbiased=False).requires_grad_()
    y = bn.weight.detach().double() * (tokens - mu_b) / torch.sqrt(var_b + bn.eps)
    (y * upstream.reshape(-1, C).double()).sum().backward()
    assert row["count"] == B * T and row["real_fraction"] == 1.0
    expected = {
        "mean_dist": (mu_b.detach() - mu).norm() / C,
        "var_dist": (var_b.detach() - var).norm() / C,
        "grad_mean": mu_b.grad.norm() / C,
        "grad_var": var_b.grad.norm() / C,
    }
    for name, value in expected.items():
        assert float(row[name]) == pytest.approx(value.item(), rel=1e-4), name
