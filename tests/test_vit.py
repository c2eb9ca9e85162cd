"""The ViT: size counted by hand, what its BN computes, what its first norm sees, the norms each
model builds in the image task, label smoothing, the configs, and smoke runs through the command
line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from helpers import REPO, compose_config, run_smoke_sweep
from normlab.cli import group_options
from normlab.config import validate_config
from normlab.errors import UserError
from normlab.models import build_model, count_parameters
from normlab.norms import norm_factory
from normlab.norms.masked_batchnorm import MaskedBatchNorm
from normlab.probe.store import read_probe
from normlab.tracking.metrics_file import read_metrics
from normlab.train.tasks import TASKS

SMALL = {"d_model": 16, "layers": 2, "heads": 2, "mlp_dim": 24}
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0}


def vit_config() -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "model" / "vit.yaml"))


def build(norm: str = "ln", **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model({"name": "vit", **options}, {"name": norm})  # as the image task does


def expected_params(d: int, layers: int, mlp: int, norm_params: int, patch: int = 4) -> int:
    """Counted from the architecture: a linear map per patch (3·p² → d, with bias), 64 learned
    positions, per block two norms, q/k/v/out projections with biases and a 2-layer MLP, a final
    norm and a 10-way head. `norm_params` per feature: 2 (γ, β) or 0 (norm=none)."""
    patch_embed = 3 * patch * patch * d + d
    positions = (32 // patch) ** 2 * d
    block = 2 * norm_params * d + 4 * (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    return patch_embed + positions + layers * block + norm_params * d + (d * 10 + 10)


def test_output_shape_and_the_parameter_count_of_vit_lite_7_4():
    cfg = vit_config()
    model = build_model(cfg, norm_factory({"name": "ln"}, "sequence"))
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert count_parameters(model) == expected_params(256, 7, 512, 2) == 3_721_738
    none = build("none", **SMALL)
    assert count_parameters(none) == expected_params(16, 2, 24, 0)
    assert build("bn", **SMALL)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_every_norm_position_comes_from_the_factory_in_execution_order():
    model = build("bn", **SMALL)
    names = [n for n, m in model.named_modules() if isinstance(m, MaskedBatchNorm)]
    assert names == [
        "blocks.0.attn_norm",
        "blocks.0.mlp_norm",
        "blocks.1.attn_norm",
        "blocks.1.mlp_norm",
        "final_norm",
    ]


def _capture(module: nn.Module) -> dict:
    seen = {}

    def hook(mod, args, out):
        seen["x"], seen["y"], seen["args"] = args[0].detach(), out.detach(), args

    module.register_forward_hook(hook)
    return seen


def test_bn_is_batchnorm1d_over_the_flattened_tokens_forward_and_gradients():
    model = build("bn", **SMALL).train()
    norm = model.blocks[0].mlp_norm  # a norm inside the residual stream, not only the first
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    seen = _capture(norm)
    model(torch.randn(5, 3, 32, 32))
    x = seen["x"]
    assert x.shape == (5, 64, 16) and len(seen["args"]) == 1  # called without a padding mask
    assert norm.last_count == 5 * 64

    ours, ref = copy.deepcopy(norm), nn.BatchNorm1d(16, eps=norm.eps, momentum=norm.momentum)
    with torch.no_grad():
        ref.weight.copy_(norm.weight)
        ref.bias.copy_(norm.bias)
        ours.running_mean.zero_(), ours.running_var.fill_(1.0)
    x1, x2 = x.clone().requires_grad_(), x.reshape(-1, 16).clone().requires_grad_()
    y1, y2 = ours(x1), ref(x2)
    torch.testing.assert_close(y1.reshape(-1, 16), y2, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y2)
    (y1.reshape(-1, 16) * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x1.grad.reshape(-1, 16), x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-5, atol=1e-6)


def test_first_norm_sees_the_patch_embedding_plus_positions():
    model = build("bn", **SMALL, **NO_DROPOUT).eval()
    seen = _capture(model.blocks[0].attn_norm)
    images = torch.randn(2, 3, 32, 32)
    model(images)
    # Independently: cut 4×4 patches row by row, each a (c, i, j) vector, times the weight matrix.
    patches = images.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, 3, 8, 8, 4, 4)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 64, 48)
    w = model.patch_embed.weight.detach().reshape(16, 48)
    expected = patches @ w.T + model.patch_embed.bias.detach() + model.pos_embed.detach()
    torch.testing.assert_close(seen["x"], expected, rtol=1e-5, atol=1e-5)
    # LeCun-normal patch weights: the first norm's input has a per-feature scale of order 1.
    big = build("ln", d_model=256, layers=1, heads=4, mlp_dim=32)
    assert abs(big.scale_metrics()["patch_embed_rms"].item() * 48**0.5 - 1) < 0.05


def test_gn_has_no_token_version_and_says_so():
    with pytest.raises(UserError, match="norm 'gn' has no sequence version; pick another norm"):
        build("gn", **SMALL)


def test_a_patch_size_that_does_not_divide_the_image_is_one_sentence():
    with pytest.raises(UserError, match="model.patch_size=5 does not divide model.image_size=32"):
        build(patch_size=5, **SMALL)


# -- the image task ---------------------------------------------------------------------------------
def _task(image_folder, *extra, experiment="cifar10_vit"):
    cfg = compose_config(
        [
            f"experiment={experiment}",
            "scale=smoke",
            "data.source=imagefolder",
            f"data.root={image_folder}",
            *extra,
        ]
    )
    return TASKS.get("image_classification")(cfg, torch.device("cpu"))


def test_the_image_task_builds_the_norms_each_model_chooses(image_folder):
    vit = _task(image_folder, "norm=bn")
    assert {type(m) for n, m in vit.model.named_modules() if n.endswith("norm")} == {
        MaskedBatchNorm
    }
    resnet = _task(image_folder, "norm=bn", experiment="cifar10_resnet20")
    assert any(isinstance(m, nn.BatchNorm2d) for m in resnet.model.modules())
    assert not any(isinstance(m, MaskedBatchNorm) for m in resnet.model.modules())
    assert resnet.label_smoothing == 0.0  # ResNet-20's recipe has none


def test_label_smoothing_is_the_smoothed_cross_entropy(image_folder):
    task = _task(image_folder, "classification.label_smoothing=0.2")
    x, y = next(iter(task.train_batches(0, 0)))
    torch.manual_seed(1)
    loss, metrics, n = task.train_loss((x, y))
    torch.manual_seed(1)
    logp = torch.log_softmax(task.model(x), dim=1)
    nll = -logp[torch.arange(len(y)), y]
    expected = (0.8 * nll - 0.2 * logp.mean(dim=1)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert n == len(y) == 64 and set(metrics) == {"acc", "patch_embed_rms", "pos_embed_rms"}


def test_a_bad_label_smoothing_is_one_sentence(image_folder):
    with pytest.raises(
        UserError, match=r"classification.label_smoothing=1.5 is not a number in \[0, 1\)"
    ):
        _task(image_folder, "classification.label_smoothing=1.5")


# -- configs and runs -------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_every_scale_and_norm_composes(scale):
    for norm in group_options("norm"):  # every norm in configs/norm/
        cfg = compose_config(["experiment=cifar10_vit", f"scale={scale}", f"norm={norm}"])
        validate_config(cfg)
        assert cfg.model.name == "vit" and cfg.optim.schedule.name == "cosine"
        assert cfg.classification.label_smoothing == 0.1
        if norm == "pn":  # PowerNorm's batch-statistics warmup follows the lr warmup
            assert cfg.norm.warmup_iters == cfg.optim.schedule.warmup_steps


def _check_sweep(proc, runs, norms):
    assert proc.returncode == 0, proc.stderr[-3000:]
    for norm in norms:
        run = runs / "cifar10_vit" / "smoke" / f"norm={norm}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["model"] == "vit", norm
        assert 0 <= summary["test_acc"] <= 1 and summary["steps"] == 8
        rows = read_metrics(run / "metrics.csv")
        assert float(rows[0]["patch_embed_rms"]) > 0 and float(rows[0]["lr"]) == 0.0  # warmup
    return runs / "cifar10_vit" / "smoke"


def test_smoke_runs_bn_and_ln_from_the_command_line(image_folder, tmp_path):
    proc = run_smoke_sweep(image_folder, tmp_path, "experiment=cifar10_vit", "norm=bn,ln")
    sweep = _check_sweep(proc, tmp_path, ["bn", "ln"])
    table = read_probe(sweep / "norm=bn").to_pandas()
    first = table[table["kind"] == "bn"].sort_values("layer_index").iloc[0]
    # 240 images in batches of 64: the first batch's BN statistics run over 64 × 64 tokens
    assert first["layer"] == "blocks.0.attn_norm" and first["d"] == 32
    assert table[table["step"] == 1]["count"].unique().tolist() == [64 * 64]
    assert len(table[table["kind"] == "bn"]["layer"].unique()) == 2 * 2 + 1


@pytest.mark.slow
def test_smoke_runs_of_the_other_norms(image_folder, tmp_path):
    proc = run_smoke_sweep(image_folder, tmp_path, "experiment=cifar10_vit", "norm=pnv,pn,none")
    _check_sweep(proc, tmp_path, ["pnv", "pn", "none"])
