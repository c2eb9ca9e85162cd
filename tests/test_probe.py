"""The probe against direct computations: statistics from the activations themselves, running
statistics before the update, and gradients from autograd through a BN written in tensor ops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normlab.probe.batch_stats import BatchStatsProbe
from normlab.probe.store import ProbeStore, read_probe

torch.set_default_dtype(torch.float32)


def _bn_with_history(d: int, momentum: float = 0.1) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(d, momentum=momentum)
    with torch.no_grad():  # running statistics and affine parameters far from their init values
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _loss(y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (y * w).sum() + 0.1 * (y**2).sum()


@pytest.mark.parametrize("momentum", [0.1, 0.01, None])
def test_cnn_statistics_equal_a_direct_computation(momentum):
    torch.manual_seed(0)
    d = 6
    bn = _bn_with_history(d, momentum=momentum)
    bn.num_batches_tracked.fill_(4)
    model = nn.Sequential(bn)
    probe = BatchStatsProbe(model)
    x = torch.randn(8, d, 5, 5) * 3 + 2
    mu, var = bn.running_mean.clone().double(), bn.running_var.clone().double()  # before the step
    probe.begin_step(1)
    model(x).sum().backward()
    (row,) = probe.end_step(1, 0, 0.5)

    xd = x.double()
    mu_b = xd.mean(dim=(0, 2, 3))
    var_b = xd.var(dim=(0, 2, 3), unbiased=False)
    assert row["count"] == 8 * 25 and row["d"] == d and row["layer"] == "0"
    close = dict(rel_tol=1e-5, abs_tol=1e-9)
    assert math.isclose(row["mean_dist"], (mu_b - mu).norm().item() / d, **close)
    assert math.isclose(row["var_dist"], (var_b - var).norm().item() / d, **close)
    assert math.isclose(row["mean_rms_dist"], (mu_b - mu).norm().item() / d**0.5, **close)
    assert math.isclose(row["var_rms_dist"], (var_b - var).norm().item() / d**0.5, **close)
    sd_b = (var_b + bn.eps).sqrt()
    assert math.isclose(row["tid_mean"], ((mu - mu_b).abs() / sd_b).mean().item(), **close)
    tid_var = ((var + bn.eps).sqrt() / sd_b - 1).abs().mean().item()
    assert math.isclose(row["tid_var"], tid_var, **close)
    assert math.isclose(row["batch_var_mean"], var_b.mean().item(), **close)


def test_running_statistics_are_the_pre_update_ones():
    torch.manual_seed(1)
    bn = _bn_with_history(4)
    probe = BatchStatsProbe(nn.Sequential(bn), gradients=False)
    x = torch.randn(16, 4, 3, 3) + 5  # a batch far from the running mean
    before = bn.running_mean.clone().double()
    probe.begin_step(1)
    bn(x)
    (row,) = probe.end_step(1, 0, 0.0)
    after = bn.running_mean.double()
    mu_b = x.double().mean(dim=(0, 2, 3))
    assert math.isclose(row["mean_dist"], (mu_b - before).norm().item() / 4, rel_tol=1e-5)
    assert not math.isclose(row["mean_dist"], (mu_b - after).norm().item() / 4, rel_tol=1e-2)


def test_gradients_equal_autograd_through_an_explicit_bn():
    torch.manual_seed(2)
    d = 5
    bn = _bn_with_history(d)
    x = torch.randn(6, d, 4, 4) * 2 + 1
    w = torch.randn(6, d, 4, 4)
    probe = BatchStatsProbe(nn.Sequential(bn))
    probe.begin_step(1)
    _loss(bn(x), w).backward()
    (row,) = probe.end_step(1, 0, 0.0)

    # The same layer written out; μ_B and σ²_B are graph nodes whose .grad autograd fills in.
    xd, wd = x.double().requires_grad_(), w.double()
    gamma = bn.weight.detach().double().view(1, d, 1, 1)
    beta = bn.bias.detach().double().view(1, d, 1, 1)
    mu_b = xd.mean(dim=(0, 2, 3), keepdim=True)
    mu_b.retain_grad()
    var_b = ((xd - mu_b) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    var_b.retain_grad()
    y = gamma * (xd - mu_b) / torch.sqrt(var_b + bn.eps) + beta
    _loss(y, wd).backward()
    assert math.isclose(row["grad_mean"], mu_b.grad.norm().item() / d, rel_tol=1e-4)
    assert math.isclose(row["grad_var"], var_b.grad.norm().item() / d, rel_tol=1e-4)


class ToyMaskedBN(nn.Module):
    """A minimal sequence BN (B, T, C) with a pad mask, written here independently of normlab's."""

    feature_dim = -1

    def __init__(self, d: int) -> None:
        super().__init__()
        self.momentum, self.eps = 0.1, 1e-5
        self.weight = nn.Parameter(torch.rand(d) + 0.5)
        self.bias = nn.Parameter(torch.zeros(d))
        self.register_buffer("running_mean", torch.randn(d))
        self.register_buffer("running_var", torch.rand(d) + 0.5)

    def forward(self, x, pad_mask=None):
        real = x[~pad_mask]
        mu, var = real.mean(0), real.var(0, unbiased=False)
        n = real.shape[0]
        with torch.no_grad():
            self.running_mean.mul_(0.9).add_(0.1 * mu)
            self.running_var.mul_(0.9).add_(0.1 * var * n / (n - 1))
        return self.weight * (x - mu) / torch.sqrt(var + self.eps) + self.bias


def test_sequence_statistics_leave_pads_out():
    torch.manual_seed(3)
    d, lengths = 8, [7, 3, 5]
    x = torch.randn(3, 9, d) * 2
    pad = torch.arange(9)[None, :] >= torch.tensor(lengths)[:, None]
    x[pad] = 1e3  # pads with absurd values: any leak would show
    layer = ToyMaskedBN(d)
    probe = BatchStatsProbe(nn.ModuleList([layer]))
    mu = layer.running_mean.clone().double()
    w = torch.randn(3, 9, d)
    probe.begin_step(1)
    y = layer(x, pad_mask=pad)
    (y * w * (~pad).unsqueeze(-1)).sum().backward()
    (row,) = probe.end_step(1, 0, 0.0)
    real = x[~pad].double()
    assert row["count"] == sum(lengths)
    assert math.isclose(row["mean_dist"], (real.mean(0) - mu).norm().item() / d, rel_tol=1e-5)
    assert math.isfinite(row["grad_mean"]) and row["grad_mean"] < 1e2


def test_layer_selection_and_every():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)
    )
    assert BatchStatsProbe(model, layers="first").layer_names == ["1"]
    assert BatchStatsProbe(model).layer_names == ["1", "3"]
    probe = BatchStatsProbe(model, every=3)
    steps = []
    for step in range(1, 8):
        probe.begin_step(step)
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        steps += [r["step"] for r in probe.end_step(step, 0, 0.0)]
    assert steps == [1, 1, 3, 3, 6, 6]
    with pytest.raises(Exception, match="not norm layers of this model"):
        BatchStatsProbe(model, layers=["nope"])


def test_ln_layers_get_a_drift_series_not_a_distance():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(1, 4))
    probe = BatchStatsProbe(model)
    rows = []
    for step in (1, 2):
        probe.begin_step(step)
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        rows += probe.end_step(step, 0, 0.0)
    assert [r["kind"] for r in rows] == ["ln", "ln"]
    assert "mean_dist" not in rows[1] and rows[1]["mean_drift"] > 0


def test_store_cuts_back_to_a_checkpoint(tmp_path):
    store = ProbeStore(tmp_path / "probe", flush_every=3)
    for step in range(1, 11):
        store.add([{"step": step, "layer": "a", "v": float(step)}])
    store.flush()
    store.truncate_after(5)
    steps = read_probe(tmp_path).column("step").to_pylist()
    assert steps == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("layer_scaling", [False, True])
def test_masked_bn_gradients_equal_autograd_with_padding(layer_scaling):
    from normlab.norms import norm_factory

    torch.manual_seed(4)
    d, lengths = 6, [5, 2, 7]
    layer = norm_factory({"name": "bn", "layer_scaling": layer_scaling}, "sequence")(d)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.running_mean.uniform_(-1, 1)
    x = torch.randn(3, 8, d) * 2 + 0.5
    pad = torch.arange(8)[None, :] >= torch.tensor(lengths)[:, None]
    w = torch.randn(3, 8, d)
    probe = BatchStatsProbe(nn.ModuleList([layer]))
    mu = layer.running_mean.clone().double()
    probe.begin_step(1)
    _loss(layer(x, pad_mask=pad) * (~pad).unsqueeze(-1), w).backward()
    (row,) = probe.end_step(1, 0, 0.0)

    # Explicit BN over the real tokens (rescaled per token by their RMS when layer_scaling).
    real = x[~pad].double().requires_grad_()
    inp = real / real.pow(2).mean(-1, keepdim=True).add(layer.eps).sqrt() if layer_scaling else real
    mu_b = inp.mean(0, keepdim=True)
    mu_b.retain_grad()
    var_b = ((inp - mu_b) ** 2).mean(0, keepdim=True)
    var_b.retain_grad()
    y = layer.weight.detach().double() * (inp - mu_b) / torch.sqrt(var_b + layer.eps)
    y = y + layer.bias.detach().double()
    _loss(y, w[~pad].double()).backward()
    assert row["count"] == sum(lengths)
    assert math.isclose(
        row["mean_dist"], (mu_b.detach().squeeze(0) - mu).norm().item() / d, rel_tol=1e-5
    )
    assert math.isclose(row["grad_mean"], mu_b.grad.norm().item() / d, rel_tol=1e-4)
    assert math.isclose(row["grad_var"], var_b.grad.norm().item() / d, rel_tol=1e-4)


def test_feature_concentration_formulas():
    from normlab.probe import stats

    d = 7
    equal, one = torch.full((d,), 2.5, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    one[3] = 4.0
    assert math.isclose(stats.participation_ratio(equal).item(), d, rel_tol=1e-12)
    assert math.isclose(stats.max_var_share(equal).item(), 1 / d, rel_tol=1e-12)
    assert math.isclose(stats.participation_ratio(one).item(), 1.0, rel_tol=1e-12)
    assert math.isclose(stats.max_var_share(one).item(), 1.0, rel_tol=1e-12)
    mixed = torch.tensor([3.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # (4)²/10 and 3/4
    assert math.isclose(stats.participation_ratio(mixed).item(), 1.6, rel_tol=1e-12)
    assert math.isclose(stats.max_var_share(mixed).item(), 0.75, rel_tol=1e-12)
    a, b = torch.tensor([1.0, 5.0, 2.0]), torch.tensor([4.0, 1.0, 2.0])  # ‖(−3, 4, 0)‖ = 5
    assert math.isclose(stats.l2_dist(a, b).item(), 5.0, rel_tol=1e-7)


@pytest.mark.parametrize("concentrated", [False, True])
def test_probe_feature_concentration_on_synthetic_inputs(concentrated):
    torch.manual_seed(6)
    d = 5
    bn = _bn_with_history(d)
    base = torch.randn(8, 1, 4, 4) * 3
    # every channel the same values (equal variances), or all the variance in channel 2
    x = base.repeat(1, d, 1, 1) if not concentrated else torch.zeros(8, d, 4, 4)
    if concentrated:
        x[:, 2:3] = base
    probe = BatchStatsProbe(nn.Sequential(bn), gradients=False)
    var = bn.running_var.clone().double()
    probe.begin_step(1)
    bn(x + 0.5)
    (row,) = probe.end_step(1, 0, 0.0)
    assert math.isclose(row["participation_ratio"], 1.0 if concentrated else d, rel_tol=1e-5)
    assert math.isclose(row["max_var_share"], 1.0 if concentrated else 1 / d, rel_tol=1e-5)
    assert row["real_fraction"] == 1.0  # no pad mask: every position is a value
    var_b = x.double().var(dim=(0, 2, 3), unbiased=False)
    assert math.isclose(row["var_dist_l2"], (var_b - var).norm().item(), rel_tol=1e-5)


def test_masked_bn_rows_count_real_tokens_and_record_their_fraction():
    from normlab.norms import norm_factory

    d, lengths, width = 4, [6, 2, 3], 8
    layer = norm_factory({"name": "bn"}, "sequence")(d)
    x = torch.randn(3, width, d)
    pad = torch.arange(width)[None, :] >= torch.tensor(lengths)[:, None]
    probe = BatchStatsProbe(nn.ModuleList([layer]), gradients=False)
    probe.begin_step(1)
    layer(x, pad_mask=pad)
    (row,) = probe.end_step(1, 0, 0.0)
    assert row["count"] == sum(lengths) and row["real_fraction"] == sum(lengths) / (3 * width)
