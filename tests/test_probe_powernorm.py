"""The probe on PowerNorm layers against direct computations: ψ²_B from the (padded, group-scaled)
inputs, the running ψ² before the step's update, and ∂L/∂ψ²_B from autograd through an explicit
PN-V written in tensor ops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normlab.models import build_model
from normlab.norms import norm_factory
from normlab.norms.group_scaling import group_scale
from normlab.probe.batch_stats import PN_COLUMNS, BatchStatsProbe
from normlab.probe.store import ProbeStore, read_probe

D, LENGTHS, WIDTH = 8, [6, 2, 5], 8
CLOSE = dict(rel_tol=1e-5, abs_tol=1e-9)


def _layer(name: str, layout: str = "sequence", **options) -> nn.Module:
    layer = norm_factory({"name": name, "groups": 2, **options}, layout)(D)
    with torch.no_grad():  # running ψ² and affine far from their init values
        layer.running_phi.uniform_(0.5, 3.0)
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


def _padded(seed: int):
    torch.manual_seed(seed)
    x = torch.randn(len(LENGTHS), WIDTH, D) * 2 + 0.5
    pad = torch.arange(WIDTH)[None, :] >= torch.tensor(LENGTHS)[:, None]
    x[pad] = 1e3  # pads with absurd values: any leak would show
    return x, pad, torch.randn(len(LENGTHS), WIDTH, D)


def _probe_one_step(layer, x, pad, w):
    probe = BatchStatsProbe(nn.ModuleList([layer]))
    probe.begin_step(1)
    y = layer(x, pad) if pad is not None else layer(x)
    keep = 1.0 if pad is None else (~pad).unsqueeze(-1)
    (y * w * keep).sum().backward()
    (row,) = probe.end_step(1, 0, 0.0)
    return row


@pytest.mark.parametrize("name", ["pnv", "pn"])
@pytest.mark.parametrize("group_scaling", [True, False])
def test_phi_statistics_equal_a_direct_computation_with_padding(name, group_scaling):
    layer = _layer(name, group_scaling=group_scaling)
    x, pad, w = _padded(0)
    phi = layer.running_phi.clone().double()  # before the step
    row = _probe_one_step(layer, x, pad, w)

    real = x[~pad].double()
    z = group_scale(real, 2, layer.eps) if group_scaling else real
    phi_b = z.pow(2).mean(0)
    assert row["kind"] == "pn" and row["d"] == D and row["count"] == sum(LENGTHS)
    assert math.isclose(row["phi_dist"], (phi_b - phi).norm().item() / D, **CLOSE)
    assert math.isclose(row["phi_rms_dist"], (phi_b - phi).norm().item() / D**0.5, **CLOSE)
    tid = ((phi + layer.eps).sqrt() / (phi_b + layer.eps).sqrt() - 1).abs().mean().item()
    assert math.isclose(row["tid_phi"], tid, **CLOSE)
    assert math.isclose(row["batch_phi_mean"], phi_b.mean().item(), **CLOSE)
    assert set(PN_COLUMNS) <= row.keys()
    # the running value after the step is not what the distance was taken against
    after = layer.running_phi.double()
    assert not math.isclose(row["phi_dist"], (phi_b - after).norm().item() / D, rel_tol=1e-2)


@pytest.mark.parametrize("group_scaling", [True, False])
def test_pnv_grad_phi_equals_autograd_through_an_explicit_pnv(group_scaling):
    layer = _layer("pnv", group_scaling=group_scaling)
    x, pad, w = _padded(1)
    row = _probe_one_step(layer, x, pad, w)

    real = x[~pad].double().requires_grad_()
    z = group_scale(real, 2, layer.eps) if group_scaling else real
    phi_b = z.pow(2).mean(0, keepdim=True)
    phi_b.retain_grad()  # a graph node: autograd fills in ∂L/∂ψ²_B
    gamma, beta = layer.weight.detach().double(), layer.bias.detach().double()
    y = gamma * z / torch.sqrt(phi_b + layer.eps) + beta
    (y * w[~pad].double()).sum().backward()
    assert math.isclose(row["grad_phi"], phi_b.grad.norm().item() / D, rel_tol=1e-4)


def test_pnv_grad_phi_sums_over_real_tokens_only():
    """As the BN rows do: a gradient arriving at a pad output (none does in the Transformer) is
    left out of ∂L/∂ψ²_B, whose statistic never saw the pads."""
    layer = _layer("pnv", group_scaling=False)
    x, pad, w = _padded(6)
    probe = BatchStatsProbe(nn.ModuleList([layer]))
    probe.begin_step(1)
    (layer(x, pad) * w).sum().backward()  # ∂L/∂y ≠ 0 at the pads too
    (row,) = probe.end_step(1, 0, 0.0)
    real, g = x[~pad].double(), w[~pad].double()
    phi_b = real.pow(2).mean(0)
    gamma = layer.weight.detach().double()
    d_phi = -0.5 * gamma * (phi_b + layer.eps) ** -1.5 * (g * real).sum(0)
    assert math.isclose(row["grad_phi"], d_phi.norm().item() / D, rel_tol=1e-4)


def test_pnv_image_layer():
    layer = _layer("pnv", "image")
    torch.manual_seed(2)
    x, w = torch.randn(4, D, 3, 3) * 3 + 1, torch.randn(4, D, 3, 3)
    phi = layer.running_phi.clone().double()
    row = _probe_one_step(layer, x, None, w)

    xd = x.double().requires_grad_()
    phi_b = xd.pow(2).mean(dim=(0, 2, 3), keepdim=True)
    phi_b.retain_grad()
    g4 = layer.weight.detach().double().view(1, D, 1, 1)
    y = g4 * xd / torch.sqrt(phi_b + layer.eps) + layer.bias.detach().double().view(1, D, 1, 1)
    (y * w.double()).sum().backward()
    assert row["count"] == 4 * 9
    phi_dist = (phi_b.detach().flatten() - phi).norm().item() / D
    assert math.isclose(row["phi_dist"], phi_dist, **CLOSE)
    assert math.isclose(row["grad_phi"], phi_b.grad.norm().item() / D, rel_tol=1e-4)


def test_pn_grad_phi_is_nan_because_its_loss_does_not_depend_on_phi_b():
    layer = _layer("pn")
    x, pad, w = _padded(3)
    row = _probe_one_step(layer, x, pad, w)
    assert math.isnan(row["grad_phi"]) and math.isfinite(row["phi_dist"])


def test_both_ema_conventions_give_the_direct_distance():
    """PN's alpha_fwd weighs the OLD value, PN-V's momentum the NEW one: 0.7 means opposite
    updates, yet the probe reads ψ²_B from the layer and needs no inversion of either."""
    x, pad, w = _padded(4)
    layers = {}
    for name, option in (("pn", {"alpha_fwd": 0.7}), ("pnv", {"momentum": 0.7})):
        torch.manual_seed(5)  # the same running ψ² and affine in both
        layers[name] = _layer(name, group_scaling=False, **option)
    phi = layers["pn"].running_phi.clone().double()
    phi_b = x[~pad].double().pow(2).mean(0)
    for name, layer in layers.items():
        row = _probe_one_step(layer, x, pad, w)
        assert math.isclose(row["phi_dist"], (phi_b - phi).norm().item() / D, **CLOSE), name
    expected = {"pn": 0.7 * phi + 0.3 * phi_b, "pnv": 0.3 * phi + 0.7 * phi_b}
    for name, layer in layers.items():
        torch.testing.assert_close(layer.running_phi.double(), expected[name])


def test_transformer_first_layer_and_store(tmp_path):
    torch.manual_seed(0)
    cfg = {"name": "transformer", "d_model": 32, "ffn_dim": 64, "heads": 2}
    model = build_model(
        cfg | {"encoder_layers": 1, "decoder_layers": 1},
        norm_factory({"name": "pnv"}, "sequence"),
        vocab_size=50,
        pad_idx=1,
        norm_for=lambda c: norm_factory(c, "sequence"),
    )
    assert BatchStatsProbe(model, layers="first").layer_names == ["encoder_layers.0.self_attn_norm"]
    probe, store = BatchStatsProbe(model), ProbeStore(tmp_path / "probe")
    src, prev = torch.randint(2, 50, (3, 6)), torch.randint(2, 50, (3, 5))
    src[0, 4:] = 1
    for step in (1, 2):
        probe.begin_step(step)
        model(src, prev).log_softmax(-1).mean().backward()
        store.add(probe.end_step(step, 0, step / 2))
    store.flush()
    table = read_probe(tmp_path).to_pandas()
    pn = table[table["kind"] == "pn"]
    assert len(pn) == 2 * 3  # encoder: two sublayer norms and the final norm
    assert (pn["count"] == 3 * 6 - 2).all()
    assert pn["grad_phi"].notna().all() and (table[table["kind"] == "ln"]["d"] == 32).all()
