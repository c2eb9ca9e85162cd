"""trainer.amp: auto resolves from the device's bf16 capability; under bf16 autocast the BN
statistics, running buffers, probe rows and loss stay float32; both precisions train end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import normlab.train.precision as precision
from helpers import REPO
from normlab.errors import UserError
from normlab.models import build_model
from normlab.norms import norm_factory
from normlab.probe.batch_stats import BatchStatsProbe
from normlab.tracking.provenance import cpu_bf16_capability
from normlab.train.checkpoint import config_differences

AMX = {"amx_bf16": True, "avx512_bf16": True}
AVX512_ONLY = {"amx_bf16": False, "avx512_bf16": True}
NONE = {"amx_bf16": False, "avx512_bf16": False}
CPU = torch.device("cpu")


def test_capability_is_read_from_the_cpu_flags():
    assert cpu_bf16_capability({"avx2", "amx_bf16", "amx_tile"}) == {
        "amx_bf16": True,
        "avx512_bf16": False,
    }
    assert cpu_bf16_capability({"avx512f", "avx512_bf16"}) == AVX512_ONLY
    assert cpu_bf16_capability(set()) == NONE


@pytest.mark.parametrize(
    "setting, capability, expected",
    [
        ("auto", AMX, torch.bfloat16),
        ("auto", AVX512_ONLY, None),  # measured slower than float32: not native enough
        ("auto", NONE, None),
        ("bf16", NONE, torch.bfloat16),  # asked for explicitly: always
        (None, AMX, None),
        ("none", AMX, None),
    ],
)
def test_amp_setting_resolves_from_the_capability(setting, capability, expected):
    assert precision.amp_dtype(setting, CPU, capability) == expected


def test_unknown_amp_setting_is_one_sentence_naming_the_choices():
    with pytest.raises(
        UserError, match=r"trainer.amp='fp8' is not supported; use trainer.amp=auto"
    ):
        precision.amp_dtype("fp8", CPU, NONE)


@pytest.mark.parametrize("capability, same", [(AVX512_ONLY, True), (AMX, False)])
def test_old_float32_runs_equal_auto_only_where_auto_is_float32(monkeypatch, capability, same):
    monkeypatch.setattr(precision, "cpu_bf16_capability", lambda: capability)
    saved = {"device": "cpu", "trainer": {"amp": None}}
    current = {"device": "cpu", "trainer": {"amp": "auto"}}
    assert (config_differences(saved, current) == []) is same
    # a run saved before the key existed, resumed with auto
    assert (config_differences({"device": "cpu", "trainer": {}}, current) == []) is same


def test_bn_statistics_buffers_and_probe_rows_stay_float32_under_bf16():
    torch.manual_seed(0)
    model = build_model({"name": "resnet20"}, norm_factory({"name": "bn"}, "image"))
    probe = BatchStatsProbe(model, layers="first")
    bn = model.stem_norm
    x = torch.randn(16, 3, 32, 32)
    before = (bn.running_mean.clone(), bn.running_var.clone())
    probe.begin_step(1)
    with torch.autocast("cpu", torch.bfloat16):
        stem_out = model.stem(x)  # the BN's input as the autocast forward computes it
        logits = model(x)
    assert logits.dtype == torch.bfloat16  # the forward really ran in bf16
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.randint(0, 10, (16,)))
    loss.backward()
    (row,) = probe.end_step(1, 0, 0.1)
    for buf in (bn.running_mean, bn.running_var, bn.weight.grad):
        assert buf.dtype == torch.float32
    # the probe's statistics are those of the float32 upcast of the bf16 input, independently
    xin = stem_out.float()
    mu_b, var_b = xin.mean((0, 2, 3)).double(), xin.var((0, 2, 3), unbiased=False).double()
    expected = torch.linalg.vector_norm(var_b.detach() - before[1].double()) / 16
    assert float(row["var_dist"]) == pytest.approx(float(expected), rel=1e-3)
    assert float(row["mean_dist"]) == pytest.approx(
        float(torch.linalg.vector_norm(mu_b.detach() - before[0].double()) / 16), rel=1e-3
    )
    assert all(torch.isfinite(torch.as_tensor(float(row[k]))) for k in ("grad_mean", "grad_var"))


@pytest.mark.parametrize("amp, name", [("bf16", "bfloat16 autocast"), ("null", "float32")])
def test_both_precisions_train_end_to_end_and_record_it(smoke_overrides, tmp_path, amp, name):
    cmd = [sys.executable, "-m", "normlab.train", *smoke_overrides, f"trainer.amp={amp}"]
    env = {**os.environ, "NORMLAB_RUNS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (summary_path,) = tmp_path.rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "complete" and summary["precision"] == name
    assert summary["cpu_bf16"] == cpu_bf16_capability()
    assert summary["test_loss"] == summary["test_loss"]  # finite, not NaN
