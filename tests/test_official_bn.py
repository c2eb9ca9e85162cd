"""norm=bn_official against the official MaskSyncBatchNorm forward written out in tensor ops, the
variance shrinkage by the real fraction, the probe's rows for it, and a CLI smoke run."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from helpers import REPO, make_fairseq_layout
from normlab.errors import UserError
from normlab.norms import norm_factory
from normlab.norms.official_batchnorm import OfficialMaskedBatchNorm
from normlab.probe.batch_stats import BatchStatsProbe
from normlab.probe.store import read_probe

C = 6
WIDTH = 8
# Sentence lengths per step: no pads, few, many (real fraction 1, 0.75, 0.29).
LENGTHS = [[8, 8, 8], [8, 5, 5], [3, 2, 2]]


def padded(lengths: list[int], width: int = WIDTH, seed: int = 0, dtype=torch.float64):
    """(B, T, C) tokens with a non-zero mean, pads holding junk; pad_mask True at pads."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), width, C, generator=g, dtype=dtype) * 2 + 0.7
    pad_mask = torch.arange(width)[None, :] >= torch.tensor(lengths)[:, None]
    x[pad_mask] = 1e3
    return x, pad_mask


def official(x, pad_mask, weight, bias, running_mean, running_var, training, momentum=0.05,
             eps=1e-5, detach_fill=False):  # fmt: skip
    """MaskSyncBatchNorm.forward of sIncerass/powernorm re-done in plain tensor ops, time-major as
    there: LayerScaling1D, pads overwritten with the real tokens' mean, batch norm over all T·B
    rows. Returns the (B, T, C) output and the new running buffers."""
    inp = x.transpose(0, 1)  # T x B x C
    inp = inp / torch.sqrt((inp * inp).mean(dim=2, keepdim=True) + 1e-5)
    t, b, c = inp.shape
    real = (~pad_mask).transpose(0, 1)
    fill = inp[real, :].mean(dim=0)
    filled = inp.clone()
    filled[~real, :] = (fill.detach() if detach_fill else fill).expand(int((~real).sum()), c)
    rows = filled.reshape(t * b, c)
    if training:
        mean = rows.sum(0) / (t * b)
        var = ((rows - mean) ** 2).sum(0) / (t * b)
        n = t * b
        running_mean = (1 - momentum) * running_mean + momentum * mean.detach()
        running_var = (1 - momentum) * running_var + momentum * var.detach() * n / (n - 1)
    else:
        mean, var = running_mean, running_var
    y = (rows - mean) / torch.sqrt(var + eps) * weight + bias
    return y.reshape(t, b, c).transpose(0, 1), running_mean, running_var


def official_bn(**options) -> OfficialMaskedBatchNorm:
    bn = norm_factory({"name": "bn_official", **options}, "sequence")(C).double()
    assert isinstance(bn, OfficialMaskedBatchNorm)
    with torch.no_grad():  # a non-trivial affine
        bn.weight.copy_(torch.linspace(0.5, 2.0, C))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, C))
    return bn


def _loss(y, w, pad_mask, on_pads):
    keep = torch.ones_like(pad_mask) if on_pads else ~pad_mask
    return ((y * w + 0.1 * y**2) * keep.unsqueeze(-1)).sum()


@pytest.mark.parametrize("on_pads", [False, True])
def test_matches_the_official_forward_backward_and_running_buffers(on_pads):
    bn = official_bn()
    weight = bn.weight.detach().clone().requires_grad_()
    bias = bn.bias.detach().clone().requires_grad_()
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    for step, lengths in enumerate(LENGTHS):
        x, pad_mask = padded(lengths, seed=step)
        x_ref = x.clone().requires_grad_()
        x.requires_grad_()
        w = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + step), dtype=x.dtype)
        y = bn(x, pad_mask)
        y_ref, rm, rv = official(x_ref, pad_mask, weight, bias, rm, rv, training=True)
        torch.testing.assert_close(y, y_ref)  # every position, pads included
        _loss(y, w, pad_mask, on_pads).backward()
        _loss(y_ref, w, pad_mask, on_pads).backward()
        torch.testing.assert_close(x.grad, x_ref.grad)
        assert (x.grad[pad_mask] == 0).all()  # the pad inputs are overwritten
        torch.testing.assert_close(bn.running_mean, rm)
        torch.testing.assert_close(bn.running_var, rv)
        assert int(bn.num_batches_tracked) == step + 1 and bn.last_count == 3 * WIDTH
        if pad_mask.any():  # the fill is in the graph: detaching it changes the real gradients
            x_det = x.detach().clone().requires_grad_()
            gamma, beta = weight.detach(), bias.detach()
            y_det = official(x_det, pad_mask, gamma, beta, rm, rv, True, detach_fill=True)[0]
            _loss(y_det, w, pad_mask, on_pads).backward()
            assert not torch.allclose(x_det.grad, x.grad, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(bn.weight.grad, weight.grad)
    torch.testing.assert_close(bn.bias.grad, bias.grad)
    bn.eval()
    x, pad_mask = padded(LENGTHS[2], seed=7)
    y_ref = official(x, pad_mask, weight, bias, rm, rv, training=False)[0]
    torch.testing.assert_close(bn(x, pad_mask), y_ref.detach())
    assert int(bn.num_batches_tracked) == len(LENGTHS)  # eval never updates the buffers


def test_without_a_mask_it_is_plain_bn_over_all_positions_after_layer_scaling():
    x, _ = padded([WIDTH] * 3)
    bn = official_bn()
    scaled = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    ref = nn.BatchNorm1d(C, momentum=0.05).double()
    ref.load_state_dict(bn.state_dict())
    torch.testing.assert_close(bn(x), ref(scaled.reshape(-1, C)).reshape(x.shape))
    torch.testing.assert_close(bn.running_var, ref.running_var)


@pytest.mark.parametrize("lengths", [[8, 6, 7], [8, 4, 1], [2, 1, 1]])
def test_batch_variance_is_the_real_variance_times_the_real_fraction(lengths):
    x, pad_mask = padded(lengths)
    bn = official_bn(momentum=1.0)  # running = this batch's statistics (unbiased over T·B)
    bn(x, pad_mask)
    n_all, n_real = pad_mask.numel(), int((~pad_mask).sum())
    real = x[~pad_mask]
    real = real / torch.sqrt(real.pow(2).mean(-1, keepdim=True) + 1e-5)
    var_b = bn.running_var * (n_all - 1) / n_all  # the biased variance BN normalized with
    torch.testing.assert_close(
        var_b / real.var(0, unbiased=False), torch.full((C,), n_real / n_all, dtype=x.dtype)
    )
    torch.testing.assert_close(bn.running_mean, real.mean(0))


def test_real_outputs_depend_on_the_padding_in_training_only():
    short, short_mask = padded([5, 3, 4], width=5)
    long = torch.full((3, 12, C), -50.0, dtype=short.dtype)  # the same real tokens, more pads
    long[:, :5] = short
    long_mask = torch.arange(12)[None, :] >= torch.tensor([5, 3, 4])[:, None]
    a, b = official_bn(), official_bn()
    ya, yb = a(short, short_mask), b(long, long_mask)
    assert not torch.allclose(ya[~short_mask], yb[~long_mask], atol=1e-3)
    torch.testing.assert_close(a.running_mean, b.running_mean)
    assert (b.running_var < a.running_var).all()  # more pads, smaller variance
    torch.testing.assert_close(yb[long_mask], b.bias.detach().expand(int(long_mask.sum()), C))
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    torch.testing.assert_close(a(short, short_mask)[~short_mask], b(long, long_mask)[~long_mask])


def test_images_and_synchronized_statistics_are_refused_in_one_sentence():
    with pytest.raises(UserError, match="'bn_official' has no image version") as err:
        norm_factory({"name": "bn_official"}, "image")(16)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="distributed.sync_bn=false") as err:
        norm_factory({"name": "bn_official", "sync_stats": True}, "sequence")(16)
    assert "\n" not in str(err.value)


def test_probe_rows_are_those_of_the_statistics_over_all_positions():
    torch.manual_seed(5)
    d, lengths, width = 6, [7, 3, 5], 9
    layer = norm_factory({"name": "bn_official"}, "sequence")(d)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    for step in range(4):  # running statistics with some history
        layer(*padded(lengths, width, seed=20 + step, dtype=torch.float32))
    x, pad = padded(lengths, width, seed=3, dtype=torch.float32)
    w = torch.randn(3, width, d)
    probe = BatchStatsProbe(nn.ModuleList([layer]))
    mu, var = layer.running_mean.clone().double(), layer.running_var.clone().double()
    probe.begin_step(1)
    _loss(layer(x, pad), w, pad, on_pads=True).backward()
    (row,) = probe.end_step(1, 0, 0.0)

    # Directly: the T·B rows the official code normalizes (layer-scaled, pads mean-filled), with
    # μ_B and σ²_B graph nodes whose .grad autograd fills in.
    xd = x.double().transpose(0, 1)
    xd = xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5)
    real = (~pad).transpose(0, 1)
    filled = xd.clone()
    filled[~real] = xd[real].mean(0)
    rows = filled.reshape(-1, d)
    mu_b = rows.mean(0, keepdim=True).requires_grad_()
    var_b = ((rows - mu_b.detach()) ** 2).mean(0, keepdim=True).requires_grad_()
    y = layer.weight.detach().double() * (rows - mu_b) / torch.sqrt(var_b + layer.eps)
    y = (y + layer.bias.detach().double()).reshape(width, 3, d).transpose(0, 1)
    _loss(y, w.double(), pad, on_pads=True).backward()
    grad_mean, grad_var = mu_b.grad.norm() / d, var_b.grad.norm() / d
    mu_b, var_b = mu_b.detach().squeeze(0), var_b.detach().squeeze(0)

    n_all = 3 * width
    assert row["count"] == n_all and row["d"] == d
    assert row["real_fraction"] == sum(lengths) / n_all
    close = dict(rel_tol=1e-5, abs_tol=1e-9)
    expected = {
        "mean_dist": (mu_b - mu).norm() / d,
        "var_dist": (var_b - var).norm() / d,
        "var_rms_dist": (var_b - var).norm() / d**0.5,
        "var_dist_l2": (var_b - var).norm(),
        "tid_mean": ((mu - mu_b).abs() / (var_b + layer.eps).sqrt()).mean(),
        "tid_var": ((var + layer.eps).sqrt() / (var_b + layer.eps).sqrt() - 1).abs().mean(),
        "batch_var_mean": var_b.mean(),
        "participation_ratio": var_b.sum() ** 2 / (var_b**2).sum(),
        "max_var_share": var_b.max() / var_b.sum(),
    }
    for key, value in expected.items():
        assert math.isclose(row[key], value.item(), **close), key
    # the same statistics over the real tokens only would give a different variance distance
    real_var = xd[real].var(0, unbiased=False)
    assert not math.isclose(row["var_dist"], ((real_var - var).norm() / d).item(), rel_tol=1e-2)
    # gradients: the partial derivatives over all T·B positions, pads included
    assert math.isclose(row["grad_mean"], grad_mean.item(), rel_tol=1e-4)
    assert math.isclose(row["grad_var"], grad_var.item(), rel_tol=1e-4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fairseq_layout(tmp_path_factory.mktemp("toy-de-en"), {"valid": 160, "test": 16})


def test_cli_smoke_run_records_the_new_columns(corpus, tmp_path):
    runs = tmp_path / "runs"
    cmd = [
        str(REPO / ".venv" / "bin" / "normlab-train"), "experiment=iwslt14_transformer",
        "scale=smoke", "norm=bn_official", f"data.prepared_dir={corpus}", "trainer.epochs=1",
        "trainer.progress=false", "trainer.threads=1",
    ]  # fmt: skip
    if not os.path.exists(cmd[0]):
        cmd[:1] = [sys.executable, "-m", "normlab.train"]
    env = {**os.environ, "NORMLAB_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (summary,) = runs.rglob("summary.json")
    table = read_probe(summary.parent).to_pandas()
    bn = table[table["kind"] == "bn"]
    assert sorted(bn["layer"].unique()) == [
        "encoder_final_norm",
        "encoder_layers.0.ffn_norm",
        "encoder_layers.0.self_attn_norm",
    ]
    real = bn["count"] * bn["real_fraction"]  # count = T·B, its real share an integer N < T·B
    assert ((real - real.round()).abs() < 1e-9).all() and (bn["real_fraction"] < 1).any()
    assert ((bn["real_fraction"] > 0) & (bn["real_fraction"] <= 1)).all()
    assert ((bn["participation_ratio"] >= 1 - 1e-9) & (bn["participation_ratio"] <= bn["d"])).all()
    assert ((bn["max_var_share"] >= 1 / bn["d"]) & (bn["max_var_share"] <= 1 + 1e-9)).all()
    ratio = bn["var_dist_l2"] / (bn["var_dist"] * bn["d"])
    assert ((ratio - 1).abs() < 1e-9).all()
    assert bn["grad_var"].notna().all()
