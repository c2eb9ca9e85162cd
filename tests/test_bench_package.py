"""normlab.bench's pieces without running a case (ratios, speed-ups, fits, tables, the command
line's refusals), and normlab.run_dir: the run directory training uses, as scripts/bench_gpu.sh
asks for it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, image_smoke_overrides
from normlab.bench import cli
from normlab.bench.report import fit_line, markdown, precision_speedups, ratios
from normlab.bench.steps import sgd_step
from normlab.run_dir import main as run_dir_main
from normlab.run_dir import run_dir

MEDIANS = {  # items/s, chosen so every ratio is a round number
    "resnet_pipeline": 1200.0,
    "resnet_reference": 800.0,
    "resnet_model": 1500.0,
    "probe_first": 1200.0,
    "probe_all": 1000.0,
    "tf_ln": 4000.0,
    "tf_bn": 5000.0,
    "tf_pn": 2000.0,
    "tf_reference": 3200.0,
    "vit_ln": 600.0,
    "vit_bn": 500.0,
    "vit_probe_all": 400.0,
}


def test_ratios_by_hand():
    r = ratios(MEDIANS)
    expected = {
        "resnet pipeline / reference loop": (1.5, ">= 1.3"),  # 1200 / 800
        "resnet pipeline / model-only step": (0.8, ">= 0.9"),  # 1200 / 1500
        "probe overhead, first layer": (0.25, "<= 0.03"),  # 1500 / 1200 - 1
        "probe overhead, all layers": (0.5, "<= 0.10"),  # 1500 / 1000 - 1
        "tf_bn step time / tf_ln": (0.8, "<= 1.15"),  # 4000 / 5000
        "tf_pn step time / tf_ln": (2.0, "<= 1.15"),  # 4000 / 2000
        "tf_ln / nn.Transformer reference": (1.25, ">= 1.0"),  # 4000 / 3200
        "vit_bn step time / vit_ln": (1.2, "<= 1.15"),  # 600 / 500; no vit_pn: no ratio
        "probe overhead, ViT all layers": (0.25, "<= 0.10"),  # 500 / 400 - 1
    }
    assert list(r) == list(expected)
    for name, (value, target) in expected.items():
        assert r[name] == (pytest.approx(value), target), name


def test_ratios_need_both_cases():
    assert ratios({"resnet_pipeline": 1.0, "probe_first": 2.0, "tf_bn": 3.0}) == {}
    assert list(ratios({"tf_ln": 4.0, "tf_pn": 2.0})) == ["tf_pn step time / tf_ln"]


def test_precision_speedups_by_hand():
    med = {"tf_ln": 4000.0, "tf_ln@bf16": 6000.0, "resnet_model": 1000.0, "vit_bn@bf16": 9.0}
    assert precision_speedups(med) == {"tf_ln": (4000.0, 6000.0, 1.5)}


def test_markdown_table_lines():
    med = {"resnet_model": 1500.0, "tf_ln": 4000.0, "tf_ln@bf16": 5000.0}
    results = {
        "median_items_per_s": med,
        "median_peak_rss_mb": {"resnet_model": 900.4, "tf_ln": 1234.0, "tf_ln@bf16": 1100.0},
        "ratios": {"probe overhead, first layer": (0.0123, "<= 0.03")},
    }
    info = {
        "cpu": "Some CPU",
        "cores": 2,
        "torch": "2.x",
        "cpu_bf16": {"amx_bf16": False, "avx512_bf16": True},
        "auto_precision": "float32",
        "git_commit": "0123456789abcdef",
    }
    args = type("Args", (), {"device": "cpu", "amp": "both", "compile": False})
    lines = markdown(results, info, args).splitlines()
    assert lines[0] == (
        "Machine: Some CPU, 2 cores, torch 2.x (CPU bf16: AMX no, AVX512-BF16 yes; "
        "trainer.amp=auto picks float32); device cpu, amp both, compile False; commit 0123456789"
    )
    assert "| resnet_model | 1,500 img/s | 900 |" in lines
    assert "| tf_ln | 4,000 tok/s | 1,234 |" in lines
    assert "| probe overhead, first layer | 0.012 | <= 0.03 |" in lines
    assert "| tf_ln | 4,000 | 5,000 | 1.25x |" in lines  # the precision table


def test_fit_line_by_hand():
    assert fit_line([1.0, 2.0, 3.0], [3.0, 5.0, 7.0]) == pytest.approx((1.0, 2.0))
    assert fit_line([2.0, 2.0], [1.0, 3.0]) == (2.0, 0.0)  # no spread in x: the mean, flat


def test_bench_probe_uses_the_packages_sgd_step():
    spec = importlib.util.spec_from_file_location(
        "bench_probe", REPO / "scripts" / "bench_probe.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.sgd_step is sgd_step


def test_help_and_defaults_are_the_scripts():
    ap = cli.parser()
    assert ap.description.startswith("`make bench`: normlab's training throughput")
    args = ap.parse_args([])
    assert args.cases == cli.CASES and args.amp == "auto" and args.rounds == 3
    assert Path(args.out) == REPO / "results" / "bench"
    assert Path(args.cifar) == REPO.parent / "shared" / "data" / "cifar10-jpeg"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--device", "gpu0"], "is not a device"),
        (["--scaling", "--amp", "both"], "--scaling measures one precision"),
    ],
)
def test_refused_command_lines_are_one_sentence(argv, words, capsys):
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and words in out.err and out.err.count("\n") == 1


# ------------------------------------------------------------------------------ normlab.run_dir
def test_run_dir_follows_hydras_override_dirname(monkeypatch):
    """Hydra's rule: the task overrides, less the excluded keys, sorted as written, joined by ','
    (normlab.cli.run_name then turns '/' into '-')."""
    monkeypatch.delenv("NORMLAB_RUNS", raising=False)
    overrides = [
        "experiment=cifar10_resnet20",  # named by the folders above
        "scale=paper",
        "trainer.amp=bf16",
        "norm=bn",
        "probe.layers=first",
        "device=cuda",  # excluded: where it runs, not what
        "trainer.progress=false",
        "trainer.threads=4",
        "data.source=imagefolder",  # excluded: where the data lives
        "data.root=/somewhere/cifar10-jpeg",
        "+tag=a/b",
        "optim.lr=0.05",
    ]
    name = "+tag=a-b,norm=bn,optim.lr=0.05,probe.layers=first,trainer.amp=bf16"
    assert run_dir(overrides) == Path("runs/cifar10_resnet20/paper") / name
    monkeypatch.setenv("NORMLAB_RUNS", "/elsewhere")
    assert run_dir(["experiment=cifar10_vit", "scale=cpu"]) == Path(
        "/elsewhere/cifar10_vit/cpu/default"
    )


def test_run_dir_command_line(monkeypatch, capsys):
    monkeypatch.delenv("NORMLAB_RUNS", raising=False)
    assert run_dir_main(["experiment=cifar10_resnet20", "scale=smoke", "norm=gn"]) == 0
    assert capsys.readouterr().out == "runs/cifar10_resnet20/smoke/norm=gn\n"
    for argv, words in (
        (["norm=bnn"], "unknown norm 'bnn'"),
        (["norm=ln,bn"], "run_dir: error: "),  # a sweep has no one directory
        (["--multirun", "norm=ln"], "usage: python -m normlab.run_dir"),
    ):
        assert run_dir_main(argv) == 2
        out = capsys.readouterr()
        assert out.out == "" and words in out.err and out.err.count("\n") == 1, out.err


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def test_bench_gpu_names_the_run_as_training_does(tmp_path):
    """scripts/bench_gpu.sh with stand-ins for python and normlab-train (only normlab.run_dir
    really runs): the run directory it trains into and plots is the one training would name
    (trainer.threads, which does not change what a run computes, stays out of the name)."""
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    _stub(
        venv / "bin" / "python",
        f'if [[ $1 == -m && $2 == normlab.run_dir ]]; then exec {sys.executable} "$@"; fi\n'
        f'echo "python $*" >> {log}\n',
    )
    _stub(venv / "bin" / "normlab-train", f'echo "train $*" >> {log}\n')
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_DIR", "DRY", "CIFAR10", "AMP")}
    env |= {"VENV": str(venv), "SHARED": str(tmp_path / "none"), "NORMLAB_RUNS": "r"}
    env |= {"TRAIN_ARGS": "probe.layers=first trainer.threads=4", "BENCH_GPU_ARGS": ""}
    proc = subprocess.run(
        ["bash", "scripts/bench_gpu.sh"], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    expected = "r/cifar10_resnet20/paper/norm=bn,probe.layers=first,trainer.amp=bf16"
    assert calls[0].startswith("python scripts/bench.py --device cuda --size paper --amp bf16")
    assert calls[1].startswith("train experiment=cifar10_resnet20 scale=paper norm=bn device=cuda")
    assert calls[1].endswith(f"hydra.run.dir='{expected}'")
    plot = f"python scripts/plot_batch_stats.py fig2 --run ResNet-20 / CIFAR-10={expected} --out"
    assert calls[2].startswith(plot)


@pytest.mark.slow
def test_run_dir_is_the_one_a_smoke_run_creates(image_folder, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    overrides = [*image_smoke_overrides(image_folder), "norm=gn", "optim.lr=0.05", "seed=3"]
    proc = subprocess.run(
        [sys.executable, "-m", "normlab.train", *overrides],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "NORMLAB_RUNS": str(runs)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (made,) = (runs / "cifar10_resnet20" / "smoke").iterdir()
    monkeypatch.setenv("NORMLAB_RUNS", str(runs))
    assert run_dir(overrides) == made
