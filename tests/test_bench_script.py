"""The benchmark script's every code path, a couple of steps per case (no timing is judged)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers import REPO
from normlab.bench.report import scaling_markdown, scaling_results


@pytest.mark.slow
def test_bench_dry_run_covers_every_case(image_folder):
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench.py",
            "--dry-run",
            "--cifar",
            str(image_folder),
            "--batch",
            "16",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cases = ("resnet_pipeline", "resnet_reference", "probe_all", "tf_pn", "tf_reference")
    for case in (*cases, "vit_ln", "vit_bn", "vit_pn", "vit_probe_all"):
        assert f"| {case} |" in proc.stdout
    assert "| resnet pipeline / reference loop |" in proc.stdout
    assert "| vit_bn step time / vit_ln |" in proc.stdout


@pytest.mark.slow
def test_bench_scaling_dry_run_with_bf16_autocast(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench.py",
            "--scaling",
            "--dry-run",
            "--amp",
            "bf16",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for batch in (32, 64, 128, 256):
        assert f"resnet_model batch {batch} " in proc.stdout
        assert f"\n| {batch} | " in proc.stdout
    for d in (128, 256, 512):
        assert f"\n| {d} | " in proc.stdout
    assert "ResNet-20 fit: step = " in proc.stdout and "amp bf16" in proc.stdout
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_bench_refuses_cuda_without_a_gpu_in_one_sentence(tmp_path):
    for extra in ([], ["--dry-run", "--scaling"]):
        proc = subprocess.run(
            [sys.executable, "scripts/bench.py", "--device", "cuda", "--out", str(tmp_path)]
            + extra,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "needs a CUDA GPU" in lines[0], proc.stderr
        assert proc.stdout == ""  # refused before any case ran
        assert not any(tmp_path.iterdir())


def test_scaling_results_fit_and_table():
    def res(case, step_s, items, params):
        return {
            "case": case,
            "step_s": step_s,
            "items_per_step": items,
            "items_per_s": items / step_s,
            "params": params,
            "peak_rss_mb": 900.0,
        }

    runs = {
        ("resnet_model", b): [res("resnet_model", 0.01 + 0.002 * b, b, 272_474)]
        for b in (32, 64, 128, 256)
    }
    # step time exactly proportional to params^0.5
    runs |= {
        ("tf_ln", d): [res("tf_ln", 1e-3 * (d * d) ** 0.5, 4000, d * d)] for d in (128, 256, 512)
    }
    sc = scaling_results(runs)
    fit = sc["fit"]
    assert fit["resnet20_step_s"]["a_s"] == pytest.approx(0.01)
    assert fit["resnet20_step_s"]["b_s_per_image"] == pytest.approx(0.002)
    assert fit["transformer_step_s"]["k"] == pytest.approx(0.5)
    assert [p["batch"] for p in sc["resnet20_batch"]] == [32, 64, 128, 256]
    assert sc["transformer_d_model"][2]["items_per_s"] == pytest.approx(4000 / 0.512)

    class Args:
        device, amp, compile = "cpu", "none", False

    md = scaling_markdown(sc, {"cpu": "x", "cores": 2, "torch": "t"}, Args)
    assert "| 256 | 522.0 | 490 | 2.039 |" in md
    assert "step = 10.0 ms + 2.000 ms x batch" in md
