"""PowerNorm-V and PowerNorm (Algorithm 2) against their equations, written out here step by step."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.func import functional_call

from helpers import compose_config
from normlab.errors import UserError
from normlab.models import build_model
from normlab.norms import norm_factory
from normlab.norms.group_scaling import group_scale
from normlab.norms.powernorm import PowerNorm, PowerNormV, build_powernorm, build_powernorm_v

C = 8
EPS = 1e-5
LENGTHS = [5, 2, 4]


def padded_batch(lengths, width, seed=0, pad_value=1e3, channels=C):
    """(B, width, C) float64 sentences from one seed; pads hold junk; pad_mask True at pads."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((len(lengths), width, channels), pad_value, dtype=torch.float64)
    pad_mask = torch.ones(len(lengths), width, dtype=torch.bool)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, channels, generator=g, dtype=torch.float64) * 2 + 0.5
        pad_mask[i, :n] = False
    return x, pad_mask


def upstream(x, pad_mask, seed):
    """An arbitrary ∂L/∂y, zero at pads (a loss never looks at pad outputs)."""
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(x.shape, generator=g, dtype=x.dtype) * (~pad_mask).unsqueeze(-1)


def make(name, layout="sequence", **options):
    m = norm_factory({"name": name, **options}, layout)(C).double()
    with torch.no_grad():  # a non-trivial affine
        m.weight.copy_(torch.linspace(0.5, 2.0, C))
        m.bias.copy_(torch.linspace(-1.0, 1.0, C))
    return m


# -- PN-V ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group_scaling", [False, True])
def test_pnv_divides_by_the_quadratic_mean_of_the_real_tokens(group_scaling):
    x, pad_mask = padded_batch(LENGTHS, 7)
    m = make("pnv", group_scaling=group_scaling, groups=2)
    y = m(x, pad_mask)
    z = group_scale(x, 2, EPS) if group_scaling else x
    phi_b = z[~pad_mask].pow(2).mean(0)
    expected = m.weight * z / torch.sqrt(phi_b + EPS) + m.bias
    torch.testing.assert_close(y[~pad_mask], expected[~pad_mask])
    torch.testing.assert_close(m.last_batch_phi, phi_b)
    torch.testing.assert_close(m.running_phi, 0.9 + 0.1 * phi_b)  # BN's momentum convention
    assert int(m.num_batches_tracked) == 1


def test_pnv_image_statistics_run_over_n_h_w():
    x = torch.randn(4, C, 3, 5, dtype=torch.float64) * 3 + 1
    m = make("pnv", "image", momentum=0.3)
    phi_b = x.pow(2).mean(dim=(0, 2, 3))
    expected = m.weight.view(1, C, 1, 1) * x / torch.sqrt(phi_b + EPS).view(1, C, 1, 1)
    torch.testing.assert_close(m(x), expected + m.bias.view(1, C, 1, 1))
    torch.testing.assert_close(m.running_phi, 0.7 + 0.3 * phi_b)


@pytest.mark.parametrize("layout", ["sequence", "image"])
def test_pnv_gradient_is_exact(layout):
    m = make("pnv", layout, groups=2)
    if layout == "sequence":
        x, pad_mask = padded_batch([3, 1], 4, pad_value=0.7)
    else:
        x, pad_mask = torch.randn(3, C, 2, 2, dtype=torch.float64) + 0.3, None
    x.requires_grad_(True)
    w, b = m.weight.detach().clone(), m.bias.detach().clone()
    w.requires_grad_(True), b.requires_grad_(True)

    def f(x, w, b):
        return functional_call(m, {"weight": w, "bias": b}, (x, pad_mask))

    assert torch.autograd.gradcheck(f, (x, w, b))


# -- PN: Algorithm 2 written out ----------------------------------------------------------------------
def algorithm2(steps, gamma, beta, alpha_fwd, alpha_bkw, warmup, backward_phi):
    """Per step: y, ∂L/∂x, ∂L/∂γ, ∂L/∂β, ψ² and ν after the step; batches (x, keep, ∂L/∂y) of
    shape (B, T, C), every statistic over the positions where `keep` (B, T) is True."""
    phi, nu, out = torch.ones(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64), []
    for t, (x, keep, grad_y) in enumerate(steps, start=1):
        phi_b = x[keep].pow(2).mean(0)  # ψ²_B
        psi = torch.sqrt((phi_b if t <= warmup else phi) + EPS)  # ψ_{t−1} (ψ_B in warmup)
        xhat = x / psi
        y = gamma * xhat + beta
        dxhat = gamma * grad_y  # ∂L/∂x̂
        big_gamma = xhat[keep].pow(2).mean(0)  # Γ_t
        big_lambda = (dxhat * xhat)[keep].mean(0)  # Λ_t
        x_tilde = dxhat - nu * xhat * keep.unsqueeze(-1)  # ν_{t−1}; pads never entered ψ_B
        divisor = psi if backward_phi == "forward" else torch.sqrt(phi_b + EPS)
        grad_x = x_tilde / divisor
        nu = nu * (1 - (1 - alpha_bkw) * big_gamma) + (1 - alpha_bkw) * big_lambda
        phi = alpha_fwd * phi + (1 - alpha_fwd) * phi_b
        sum_dims = tuple(range(x.dim() - 1))
        grads = (grad_x, (grad_y * xhat).sum(sum_dims), grad_y.sum(sum_dims))
        out.append((y, *grads, phi.clone(), nu.clone()))
    return out


def run_module(m, steps, to_layout=lambda t: t, from_layout=lambda t: t):
    out = []
    for x, keep, grad_y in steps:
        m.zero_grad()
        xin = to_layout(x).clone().requires_grad_(True)
        y = m(xin, ~keep) if m.layout == "sequence" else m(xin)
        (y * to_layout(grad_y)).sum().backward()
        grads = (from_layout(xin.grad), m.weight.grad.clone(), m.bias.grad.clone())
        out.append((from_layout(y.detach()), *grads, m.running_phi.clone(), m.ema_gz.clone()))
    return out


SEQ_STEPS = [
    (x, ~pad_mask, upstream(x, pad_mask, s))
    for s, (x, pad_mask) in enumerate(padded_batch([4 + s, 2, 3], 7, seed=s) for s in range(4))
]


@pytest.mark.parametrize(
    "warmup,backward_phi,alphas",
    [(0, "forward", (0.9, 0.9)), (2, "forward", (0.8, 0.6)), (2, "batch", (0.9, 0.7))],
)
def test_pn_equals_algorithm_2_step_by_step(warmup, backward_phi, alphas):
    a_fwd, a_bkw = alphas
    options = dict(alpha_fwd=a_fwd, alpha_bkw=a_bkw, warmup_iters=warmup, backward_phi=backward_phi)
    m = make("pn", group_scaling=False, **options)
    got = run_module(m, SEQ_STEPS)
    gamma, beta = m.weight.detach(), m.bias.detach()
    ref = algorithm2(SEQ_STEPS, gamma, beta, a_fwd, a_bkw, warmup, backward_phi)
    names = ("y", "grad_x", "grad_gamma", "grad_beta", "running_phi", "nu")
    for t, (ours, theirs) in enumerate(zip(got, ref, strict=True)):
        for name, a, b in zip(names, ours, theirs, strict=True):
            torch.testing.assert_close(a, b, msg=lambda s, t=t, n=name: f"step {t + 1} {n}: {s}")
    assert int(m.num_batches_tracked) == len(SEQ_STEPS)


def test_pn_image_equals_algorithm_2_over_n_h_w():
    steps_img = [torch.randn(3, C, 2, 3, dtype=torch.float64) * 2 + s for s in range(3)]
    grads_img = [torch.randn_like(x) for x in steps_img]
    nhwc = [(x.permute(0, 2, 3, 1).reshape(3, 6, C), g.permute(0, 2, 3, 1).reshape(3, 6, C))
            for x, g in zip(steps_img, grads_img, strict=True)]  # fmt: skip
    steps = [(x, torch.ones(3, 6, dtype=torch.bool), g) for x, g in nhwc]
    m = make("pn", "image", warmup_iters=1)

    def to_image(t):
        return t.reshape(3, 2, 3, C).permute(0, 3, 1, 2)

    def from_image(t):
        return t.permute(0, 2, 3, 1).reshape(3, 6, C)

    got = run_module(m, steps, to_image, from_image)
    ref = algorithm2(steps, m.weight.detach(), m.bias.detach(), 0.9, 0.9, 1, "forward")
    for ours, theirs in zip(got, ref, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b)


def test_pn_without_affine_or_pad_mask_is_algorithm_2_with_unit_gamma():
    m = norm_factory({"name": "pn", "group_scaling": False, "affine": False}, "sequence")(C)
    m.double()
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(3, 4, C, generator=g, dtype=torch.float64) * 2 + s for s in range(3)]
    steps = [(x, torch.ones(3, 4, dtype=torch.bool), torch.randn_like(x)) for x in xs]
    one, zero = torch.ones(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    ref = algorithm2(steps, one, zero, 0.9, 0.9, 0, "forward")
    for (x, _, grad_y), (y_ref, grad_x_ref, _, _, phi_ref, nu_ref) in zip(steps, ref, strict=True):
        xin = x.clone().requires_grad_(True)
        y = m(xin)  # no pad mask: every position counts
        (y * grad_y).sum().backward()
        for a, b in ((y, y_ref), (xin.grad, grad_x_ref), (m.running_phi, phi_ref)):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(m.ema_gz, nu_ref)


def test_pn_group_scaling_is_applied_before_algorithm_2_with_exact_gradients():
    x, pad_mask = SEQ_STEPS[0][0], ~SEQ_STEPS[0][1]
    a, b = make("pn", groups=4), make("pn", group_scaling=False)
    assert a.group_scaling and not b.group_scaling
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    grad_y = upstream(x, pad_mask, 0)
    ya, yb = a(xa, pad_mask), b(group_scale(xb, 4, EPS), pad_mask)
    torch.testing.assert_close(ya, yb)
    (ya * grad_y).sum().backward()
    (yb * grad_y).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(a.ema_gz, b.ema_gz)


# -- both ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pn", "pnv"])
def test_eval_uses_the_running_value_and_changes_no_state(name):
    x, pad_mask = padded_batch(LENGTHS, 6)
    m = make(name, group_scaling=False)
    m.running_phi.fill_(4.0)
    state = copy.deepcopy(m.state_dict())
    m.eval()
    y = m(x, pad_mask)
    torch.testing.assert_close(y, m.weight * x / torch.sqrt(torch.tensor(4.0 + EPS)) + m.bias)
    for key, value in m.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", ["pn", "pnv"])
def test_resume_from_a_state_dict_is_bitwise(name):
    steps = [padded_batch([3 + s % 3, 4, 2], 6, seed=s) for s in range(6)]
    options = {"warmup_iters": 4} if name == "pn" else {}  # the resume crosses the warmup's end

    def step(m, s):
        x, pad_mask = steps[s]
        x = x.clone().requires_grad_(True)
        m.zero_grad()
        y = m(x, pad_mask)
        (y * upstream(x, pad_mask, s)).sum().backward()
        return y.detach(), x.grad, m.weight.grad.clone()

    a = make(name, **options)
    for s in range(3):
        step(a, s)
    saved = copy.deepcopy(a.state_dict())
    assert {"running_phi", "num_batches_tracked"} <= saved.keys()
    assert name == "pnv" or "ema_gz" in saved
    b = make(name, **options)
    b.load_state_dict(saved)
    for s in range(3, 6):
        for ours, theirs in zip(step(a, s), step(b, s), strict=True):
            assert torch.equal(ours, theirs)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


@pytest.mark.parametrize("name", ["pn", "pnv"])
def test_more_padding_changes_no_statistic_and_nothing_at_real_tokens(name):
    a, b = make(name), make(name)
    for s in range(3):  # several steps: running ψ² and ν carry history
        short, short_mask = padded_batch([4, 2, 3], 4, seed=s, pad_value=0.0)
        long, long_mask = padded_batch([4, 2, 3], 9, seed=s, pad_value=-7e4)
        xs, xl = short.requires_grad_(True), long.requires_grad_(True)
        ys, yl = a(xs, short_mask), b(xl, long_mask)
        torch.testing.assert_close(ys[~short_mask], yl[~long_mask], rtol=0, atol=1e-12)
        g = torch.randn(int((~short_mask).sum()), C, dtype=torch.float64)
        (ys[~short_mask] * g).sum().backward()
        (yl[~long_mask] * g).sum().backward()
        torch.testing.assert_close(xs.grad[~short_mask], xl.grad[~long_mask], rtol=0, atol=1e-12)
        torch.testing.assert_close(a.last_batch_phi, b.last_batch_phi, rtol=0, atol=1e-12)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["pn", "pnv"])
def test_works_inside_the_transformer(name):
    torch.manual_seed(0)
    cfg = {"name": "transformer", "d_model": 32, "ffn_dim": 64, "heads": 2}
    model = build_model(
        cfg | {"encoder_layers": 1, "decoder_layers": 1},
        norm_factory({"name": name}, "sequence"),
        vocab_size=50,
        pad_idx=1,
        norm_for=lambda c: norm_factory(c, "sequence"),
    )
    norms = [m for m in model.modules() if isinstance(m, (PowerNorm, PowerNormV))]
    assert norms and all(m.group_scaling for m in norms)  # the official default for sequences
    src = torch.randint(2, 50, (3, 6))
    src[0, 4:] = 1  # pads
    prev = torch.randint(2, 50, (3, 5))
    for _ in range(2):
        model.zero_grad()
        logits = model(src, prev)
        logits.log_softmax(-1).mean().backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert all(int(m.num_batches_tracked) == 2 for m in norms)
    if name == "pn":
        assert all(m.ema_gz.abs().sum() > 0 for m in norms)  # ν moved in the backward


@pytest.mark.parametrize("name", ["pn", "pnv"])
def test_works_inside_resnet20(name):
    torch.manual_seed(0)
    model = build_model({"name": "resnet20"}, norm_factory({"name": name}, "image"))
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    norms = [m for m in model.modules() if isinstance(m, (PowerNorm, PowerNormV))]
    assert norms and not any(m.group_scaling for m in norms)


# -- options -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg,layout,message",
    [
        ({"name": "pn", "alpha_fwd": 1.0}, "sequence", r"alpha_fwd=1.0 is outside \(0, 1\)"),
        ({"name": "pn", "alpha_bkw": 0.0}, "sequence", r"alpha_bkw=0.0 is outside \(0, 1\)"),
        ({"name": "pn", "alpha_fwd": -0.5}, "image", r"alpha_fwd=-0.5 is outside"),
        ({"name": "pnv", "momentum": 1.5}, "sequence", r"momentum=1.5 is outside \(0, 1\]"),
        ({"name": "pn", "groups": 3}, "sequence", r"groups=3 does not divide .* 8 features"),
        ({"name": "pnv", "groups": 0}, "sequence", r"groups=0 does not divide"),
        ({"name": "pn", "group_scaling": True}, "image", "exists only for Transformers"),
        ({"name": "pn", "warmup_iters": -1}, "sequence", "negative"),
        ({"name": "pn", "backward_phi": "running"}, "sequence", "backward_phi='running'"),
    ],
)
def test_bad_options_are_one_sentence_at_build_time(cfg, layout, message):
    with pytest.raises(UserError, match=message) as err:
        norm_factory(cfg, layout)(C)
    assert "\n" not in str(err.value)


def test_groups_are_ignored_when_group_scaling_is_off():
    assert not norm_factory({"name": "pn", "groups": 3}, "image")(C).group_scaling
    assert (
        not norm_factory({"name": "pnv", "groups": 3, "group_scaling": False}, "sequence")(C)(
            torch.randn(2, 3, C)
        )
        .isnan()
        .any()
    )


@pytest.mark.parametrize("name,builder", [("pn", build_powernorm), ("pnv", build_powernorm_v)])
def test_yaml_lists_every_option_with_the_builder_default(name, builder):
    # as composed: configs/norm/<name>.yaml with the options PN-V and PN share (norm/shared/)
    cfg = OmegaConf.to_container(compose_config([f"norm={name}"]).norm, resolve=False)
    params = inspect.signature(builder).parameters
    defaults = {k: p.default for k, p in params.items() if k not in ("num_features", "layout")}
    if name == "pn":  # the YAML ties PN's warmup to the run's LR warmup (0 where there is none)
        assert cfg.pop("warmup_iters") == "${oc.select:optim.schedule.warmup_steps,0}"
        defaults.pop("warmup_iters")
    assert cfg == {"name": name} | defaults


def test_group_scale_divides_each_group_by_its_rms():
    x = torch.randn(2, 3, C, dtype=torch.float64)
    y = group_scale(x, 2, EPS)
    for half in (slice(0, 4), slice(4, 8)):
        rms = torch.sqrt(x[..., half].pow(2).mean(-1, keepdim=True) + EPS)
        torch.testing.assert_close(y[..., half], x[..., half] / rms)


def test_group_scale_gradient_is_exact():
    x = torch.randn(2, 3, C, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: group_scale(t, 2, EPS), (x,))


def test_modules_are_plain_norm_modules():
    m = norm_factory({"name": "pn"}, "sequence")(C)
    assert isinstance(m, nn.Module) and m.probe_kind == "pn" and m.feature_dim == -1
    assert norm_factory({"name": "pnv"}, "image")(C).feature_dim == 1


def test_pn_warmup_follows_the_runs_lr_warmup():
    from helpers import compose_config

    iwslt = compose_config(["experiment=iwslt14_transformer", "scale=paper", "norm=pn"])
    cifar = compose_config(["experiment=cifar10_resnet20", "scale=paper", "norm=pn"])
    assert iwslt.norm.warmup_iters == 8000 == iwslt.optim.schedule.warmup_steps
    assert cifar.norm.warmup_iters == 0


def test_a_pn_warmup_longer_than_the_run_warns(smoke_overrides, tmp_path):
    from helpers import compose_config
    from normlab.train.loop import train

    cfg = compose_config(
        [*smoke_overrides, "norm=pn", "norm.warmup_iters=1000", "trainer.max_steps=2"]
    )
    with pytest.warns(UserWarning, match="norm.warmup_iters=1000 is longer than the run"):
        assert train(cfg, tmp_path)["status"] == "complete"
