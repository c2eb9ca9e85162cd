"""Data-parallel training with torchrun on CPU (gloo, 2 processes) against one process.

With synchronized BN, 2 processes that each train on half of every global batch must compute what
one process computes on the whole batch: the same loss at every step, the same probe rows (global
statistics), the same weights. A run interrupted under torchrun resumes, on 2 processes or on 1.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from helpers import REPO, compose_config, make_fairseq_layout
from normlab.config import validate_config
from normlab.norms.global_stats import SyncBatchNorm2d, global_var_mean
from normlab.probe.store import read_probe
from normlab.tracking.metrics_file import read_metrics
from normlab.train.loop import train

# The equivalence runs compute in float32 whatever the CPU: under trainer.amp=auto a CPU with AMX
# would train in bf16, whose rounding depends on how the batch is split over ranks (measured: losses
# 7e-5 apart, relative, at step 3), while these tests compare ranks to one process at 1e-5.
FLOAT32 = "trainer.amp=null"
PROBE_COLUMNS = ["count", "mean_dist", "var_dist", "tid_mean", "tid_var", "grad_mean", "grad_var"]


def _torchrun(overrides: list[str], run_dir, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "-m", "normlab.train", *overrides, f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _one_process(overrides: list[str], run_dir) -> dict:
    cfg = compose_config(overrides)
    validate_config(cfg)
    return train(cfg, run_dir)


def _losses(run_dir) -> torch.Tensor:
    return torch.tensor([float(r["loss"]) for r in read_metrics(run_dir / "metrics.csv")])


def _probe(run_dir):
    table = read_probe(run_dir).to_pandas()
    # Steps 1-2: later, the gradient columns of these smoke models are ill-conditioned (1 vs 2
    # threads in one process already differ by 2% at step 4 of the image run).
    table = table[(table["kind"] == "bn") & (table["step"] <= 2)].sort_values(["step", "layer"])
    return table[PROBE_COLUMNS].to_numpy(dtype=float)


GRAD = [i for i, c in enumerate(PROBE_COLUMNS) if c.startswith("grad_")]  # backward statistics


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]


def _assert_same_run(a, b, weight_atol: float, loss_rtol: float = 1e-5) -> None:
    torch.testing.assert_close(_losses(b), _losses(a), rtol=loss_rtol, atol=1e-6)
    pa, pb = torch.from_numpy(_probe(a)), torch.from_numpy(_probe(b))
    assert pa.shape == pb.shape and len(pa)
    fwd = [i for i, c in enumerate(PROBE_COLUMNS) if i not in GRAD]
    grad = GRAD
    # rounding, amplified where μ_B ≈ μ
    torch.testing.assert_close(pb[:, fwd], pa[:, fwd], rtol=1e-3, atol=1e-6)
    # The gradient statistics sum near-cancelling terms, per rank and then all-reduced: after one
    # update they differ by up to 1.6% between 1 and 2 processes on an AVX2-only AMD EPYC (< 0.1%
    # with AVX-512). BN on each rank's own half batch differs by far more (asserted below).
    torch.testing.assert_close(pb[:, grad], pa[:, grad], rtol=5e-2, atol=1e-6)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k].double(), wa[k].double(), rtol=0, atol=weight_atol, msg=k)


def test_global_moments_and_sync_bn_equal_batchnorm_in_one_process():
    """The single-process path of the synchronized BN is nn.BatchNorm2d: outputs, gradients and
    running statistics (the multi-process path is checked end to end below)."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, 5, 5) * 3 + 1
    var, mean, n = global_var_mean(x, (0, 2, 3))
    assert n == 6 * 25
    torch.testing.assert_close(mean, x.mean((0, 2, 3)))
    torch.testing.assert_close(var, x.var((0, 2, 3), unbiased=False))
    ref, ours = nn.BatchNorm2d(3), SyncBatchNorm2d(3)
    with torch.no_grad():
        for m in (ref, ours):
            m.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
            m.bias.copy_(torch.tensor([0.1, 0.0, 0.3]))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), ours(xb)
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours.last_count == 150


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fairseq_layout(tmp_path_factory.mktemp("toy-de-en"), {"valid": 160, "test": 16})


def _translation(corpus, *extra):
    no_dropout = ["model.dropout=0", "model.attention_dropout=0", "model.activation_dropout=0"]
    return [
        "experiment=iwslt14_transformer", "scale=smoke", f"data.prepared_dir={corpus}", "norm=bn",
        "trainer.progress=false", "trainer.threads=1", "trainer.max_steps=5", *no_dropout,
        FLOAT32, *extra,
    ]  # fmt: skip


def test_translation_two_processes_with_synced_bn_equal_one_and_resume_on_one(corpus, tmp_path):
    """Masked sequence BN synchronized over 2 ranks (all-reduce of sums and counts over the real
    tokens) = 1 process on the global batch; a 2-process run cut at step 2 resumes on 1 process."""
    one, two = tmp_path / "one", tmp_path / "two"
    _one_process(_translation(corpus), one)
    cut = _torchrun(
        _translation(corpus, "distributed.sync_bn=true", "trainer.simulate_interrupt_at_step=2"),
        two,
    )
    assert cut.returncode != 0, cut.stdout + cut.stderr  # interrupted: exit 143 from each rank
    assert "checkpoint saved" in cut.stdout + cut.stderr, cut.stderr[-3000:]
    assert not (two / "summary.json").exists() and len(_losses(two)) == 3
    summary = _one_process(
        _translation(corpus, "distributed.sync_bn=true", "trainer.simulate_interrupt_at_step=2"),
        two,
    )  # resume the 2-process checkpoint in 1 process (the interrupt step has passed)
    assert summary["status"] == "complete" and summary["resumed"] == 1
    # Adam's first updates are ±lr wherever a gradient is ~0, so rounding shows more in weights.
    _assert_same_run(one, two, weight_atol=2e-3)


def test_image_two_processes_synced_equal_one_and_resume(smoke_overrides, tmp_path):
    """ResNet-20 with BatchNorm2d replaced by the all-reduce BN: 2 ranks = 1 process (SGD), also
    across an interruption and resume under torchrun; per-rank BN uses half the batch per rank."""
    # Contiguous layout: PyTorch's channels_last BN backward on CPU rounds differently (~2e-6 of
    # the gradient). And few steps at a small lr: this smoke model amplifies rounding ~100x per step
    # after step 3 (1 vs 2 ranks: losses 7e-4 apart at step 4 on an AVX2-only AMD EPYC, where the
    # kernels round a rank's 16 images differently from one process's 32; < 2e-5 with AVX-512).
    base = [*smoke_overrides, "norm=bn", "trainer.max_steps=3", "trainer.channels_last=false"]
    base += ["optim.lr=0.01", FLOAT32]
    one, two, per_rank = tmp_path / "one", tmp_path / "two", tmp_path / "per_rank"
    _one_process(base, one)
    synced = [*base, "distributed.sync_bn=true", "trainer.simulate_interrupt_at_step=1"]
    assert _torchrun(synced, two).returncode != 0
    resumed = _torchrun(synced, two)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    # weights after 3 steps: 6e-4 apart on the AVX2-only machine (1 vs 2 threads there: 2e-7)
    _assert_same_run(one, two, weight_atol=1e-3, loss_rtol=2e-5)

    run = _torchrun(base, per_rank)
    assert run.returncode == 0, run.stderr[-3000:]
    counts_one = read_probe(one).to_pandas().groupby("layer")["count"].first()
    counts_rank0 = read_probe(per_rank).to_pandas().groupby("layer")["count"].first()
    assert (counts_rank0 * 2 == counts_one).all()  # rank 0's own 16 of the 32 images
    rank1 = read_probe(per_rank, rank=1).to_pandas()
    assert (rank1.groupby("layer")["count"].first() * 2 == counts_one).all()
    first = read_probe(per_rank).to_pandas().query("step == 1 and layer == 'stem_norm'")
    assert rank1.query("step == 1 and layer == 'stem_norm'")["var_dist"].item() != pytest.approx(
        first["var_dist"].item()
    )  # each rank's own shard: different batch statistics
    assert len(_losses(per_rank)) == 3  # one metrics row per step: rank 0 alone writes
    own, synced_rows = torch.from_numpy(_probe(per_rank)), torch.from_numpy(_probe(one))
    gap = ((own - synced_rows).abs() / synced_rows.abs().clamp_min(1e-6))[:, GRAD]
    assert gap.max() > 0.2  # what the 5% tolerance above for the gradient statistics must catch


def test_more_ranks_than_batch_items_is_refused_before_training(smoke_overrides, tmp_path):
    run = _torchrun([*smoke_overrides, "trainer.batch_size=1"], tmp_path, nproc=2)
    assert run.returncode != 0
    assert "fewer than the 2 processes" in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "metrics.csv").exists()
