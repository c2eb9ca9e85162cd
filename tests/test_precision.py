"""trainer.amp: auto resolves from the device's bf16 capability; under bf16 autocast the BN
statistics, running buffers, probe rows and loss stay float32; both precisions train end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import normlab.train.precision as precision
from helpers import REPO, image_smoke_overrides
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


@pytest.fixture(scope="module")
def precision_runs(image_folder, tmp_path_factory) -> dict[str, Path]:
    """The same smoke run in both precisions, and float32 with another seed:
    {"bf16": run dir, "null": run dir, "null_seed1": run dir}."""
    smoke_overrides = image_smoke_overrides(image_folder)
    runs = {}
    for amp, extra in (("bf16", []), ("null", []), ("null_seed1", ["seed=1"])):
        root = tmp_path_factory.mktemp(f"amp_{amp}")
        setting = amp.removesuffix("_seed1")
        cmd = [sys.executable, "-m", "normlab.train", *smoke_overrides, f"trainer.amp={setting}"]
        cmd += extra
        env = {**os.environ, "NORMLAB_RUNS": str(root), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (summary_path,) = root.rglob("summary.json")
        runs[amp] = summary_path.parent
    return runs


@pytest.mark.parametrize("amp, name", [("bf16", "bfloat16 autocast"), ("null", "float32")])
def test_both_precisions_train_end_to_end_and_record_it(precision_runs, amp, name):
    summary = json.loads((precision_runs[amp] / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["precision"] == name
    assert summary["cpu_bf16"] == cpu_bf16_capability()
    assert summary["test_loss"] == summary["test_loss"]  # finite, not NaN


def test_compare_precision_reports_differences_against_the_seed_spread(precision_runs, tmp_path):
    """scripts/compare_precision.py on the pair: the differences and ratios it writes equal a
    recomputation from the two runs' summaries and probe files."""
    from normlab.analysis.comparisons import medians
    from normlab.analysis.series import load_series

    fp32, bf16 = precision_runs["null"], precision_runs["bf16"]
    out = tmp_path / "precision"
    cmd = [
        sys.executable,
        "scripts/compare_precision.py",
        "--pair",
        "smoke",
        str(fp32),
        str(bf16),
        "--spread",
        "test_acc=0.000001:a tiny spread",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (pair,) = json.loads((out / "precision.json").read_text())["pairs"]
    a = json.loads((fp32 / "summary.json").read_text())
    b = json.loads((bf16 / "summary.json").read_text())
    acc = next(f for f in pair["finals"] if f["metric"] == "test_acc")
    assert acc["diff"] == pytest.approx(b["test_acc"] - a["test_acc"])
    assert acc["within_2_std"] == (abs(acc["diff"]) <= 2e-6)
    assert pair["precisions"] == ["float32", "bfloat16 autocast"]
    var = next(w for w in pair["windows"] if w["column"] == "var_dist")
    want = [
        y / x
        for x, y in zip(
            medians(load_series("a", fp32), "var_dist"),
            medians(load_series("b", bf16), "var_dist"),
            strict=True,
        )
    ]
    assert var["ratio"] == pytest.approx(want, nan_ok=True)
    assert "| var_dist |" in (out / "precision.md").read_text()


def test_a_twin_seed_gives_the_spread_and_the_window_yardstick(precision_runs, tmp_path):
    """--twin: the final metrics' spread is the two float32 seeds' sample std, and each window
    column is within the seed spread when bf16 moves its medians no more than the other seed."""
    from normlab.analysis.comparisons import medians
    from normlab.analysis.series import load_series

    fp32, bf16, twin = (precision_runs[k] for k in ("null", "bf16", "null_seed1"))
    out = tmp_path / "precision"
    cmd = [sys.executable, "scripts/compare_precision.py", "--pair", "smoke", str(fp32), str(bf16)]
    cmd += ["--twin", "smoke", str(twin), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (pair,) = json.loads((out / "precision.json").read_text())["pairs"]
    a, b, t = (json.loads((d / "summary.json").read_text()) for d in (fp32, bf16, twin))
    acc = next(f for f in pair["finals"] if f["metric"] == "test_acc")
    std = abs(t["test_acc"] - a["test_acc"]) / 2**0.5
    assert acc["seed_std"] == pytest.approx(std)
    assert acc["within_2_std"] == (abs(b["test_acc"] - a["test_acc"]) <= 2 * std)
    med = {
        k: medians(load_series(k, d), "tid_mean")
        for k, d in (("a", fp32), ("b", bf16), ("t", twin))
    }
    worst = {
        k: max(abs(math.log(y / x)) for x, y in zip(med["a"], med[k], strict=True))
        for k in ("b", "t")
    }
    tid = next(w for w in pair["windows"] if w["column"] == "tid_mean")
    assert tid["seed_ratio"] == pytest.approx(
        [y / x for x, y in zip(med["a"], med["t"], strict=True)]
    )
    assert tid["within_seed"] == (worst["b"] <= worst["t"])
    assert "| tid_mean, other seed / fp32 |" in (out / "precision.md").read_text()


def test_a_twin_for_an_unknown_pair_is_one_sentence(tmp_path, capsys):
    from importlib import util

    spec = util.spec_from_file_location("cp", REPO / "scripts" / "compare_precision.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    code = mod.main(["--pair", "a", "x", "y", "--twin", "b", "z", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--twin 'b' names no --pair label" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
