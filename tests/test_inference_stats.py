"""BN's inference statistics: PreciseBN population statistics, batch-statistics evaluation, and
the script on real smoke runs, each checked against a direct computation."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from helpers import REPO, compose_config, make_fairseq_layout
from normlab.config import validate_config
from normlab.eval.bn_statistics import (
    batch_statistics,
    bn_layers,
    collect_population_stats,
    install_population_stats,
)
from normlab.norms.masked_batchnorm import MaskedBatchNorm
from normlab.norms.official_batchnorm import OfficialMaskedBatchNorm
from normlab.train.inference_stats import evaluate_inference_modes
from normlab.train.loop import train
from normlab.train.tasks import TASKS

EPS = 1e-5


def _direct_bn(x: torch.Tensor, dims, weight, bias) -> torch.Tensor:
    """Batch normalization written out: the batch's mean and biased variance over `dims`."""
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * weight + bias


def _randomize(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affines far from BN's initial ones, so that using the wrong ones shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | MaskedBatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 5 + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))


# ------------------------------------------------------------------------------ images
def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Dropout(0.5),  # must be off while the statistics are collected
        nn.ReLU(),
        nn.Conv2d(4, 5, 3),
        nn.BatchNorm2d(5),
    )
    _randomize(model)
    return model


def _image_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, 6, 6, generator=g) * 2 + 1 for n in (3, 5, 4)]


def _direct_cnn_population(model: nn.Sequential, batches) -> list[tuple[torch.Tensor, ...]]:
    """Every position's input to each BN layer when each BN normalizes by its batch, then the
    population mean and biased variance of all of them (torch.cat)."""
    conv1, bn1, _, _, conv2, _ = model
    rows1, rows2 = [], []
    with torch.no_grad():
        for x in batches:
            h1 = conv1(x)
            z1 = _direct_bn(h1, (0, 2, 3), bn1.weight.view(1, -1, 1, 1), bn1.bias.view(1, -1, 1, 1))
            h2 = conv2(torch.relu(z1))
            rows1.append(h1.permute(0, 2, 3, 1).reshape(-1, 4))
            rows2.append(h2.permute(0, 2, 3, 1).reshape(-1, 5))
    out = []
    for rows in (rows1, rows2):
        allrows = torch.cat(rows).double()
        out.append((allrows.mean(0), allrows.var(0, unbiased=False), allrows.shape[0]))
    return out


def test_precise_stats_of_batchnorm2d_are_the_population_statistics():
    model, batches = _cnn(), _image_batches()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats, used = collect_population_stats(model, batches)
    assert used == 3
    direct = _direct_cnn_population(model, batches)
    for name, (mean, var, n) in zip(("1", "5"), direct, strict=True):
        assert stats[name].count == n
        torch.testing.assert_close(stats[name].mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stats[name].var, var, rtol=1e-5, atol=1e-6)
    # collecting changed nothing, and left the model in the mode it was in
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    install_population_stats(model, stats)
    torch.testing.assert_close(model[5].running_var, direct[1][1].float())
    torch.testing.assert_close(model[5].running_mean, direct[1][0].float())


def test_precise_stops_at_max_batches_or_at_enough_values():
    model, batches = _cnn(), _image_batches()
    direct = _direct_cnn_population(model, batches[:2])
    # the second layer has 4x4 positions per image: 3 images give 48 values, 3 + 5 give 128
    _, used = collect_population_stats(model, batches, min_values=100)
    assert used == 2
    stats, used = collect_population_stats(model, batches, max_batches=2)
    assert used == 2 and stats["5"].count == direct[1][2] == 8 * 16
    torch.testing.assert_close(stats["5"].var, direct[1][1], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ sequences
class _SeqModel(nn.Module):
    def __init__(self, layer_scaling: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(6, 6)
        self.bn1 = MaskedBatchNorm(6, layer_scaling=layer_scaling)
        self.drop = nn.Dropout(0.5)
        self.bn2 = MaskedBatchNorm(6)
        _randomize(self)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.bn1(self.lin(x), pad_mask))
        return self.bn2(torch.relu(h) * 2 + 1, pad_mask)


def _padded_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    out = []
    for lengths in ([5, 2, 4], [3, 3], [1, 6, 2, 4]):
        t = max(lengths)
        x = torch.randn(len(lengths), t, 6, generator=g) * 3 + 2
        pad = torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None]
        x[pad] = 1e4  # a pad counted anywhere would wreck the statistics
        out.append((x, pad))
    return out


@pytest.mark.parametrize("layer_scaling", [False, True])
def test_precise_stats_of_masked_bn_count_real_tokens_only(layer_scaling):
    model, batches = _SeqModel(layer_scaling), _padded_batches()
    stats, used = collect_population_stats(model, batches, lambda b: model(*b))
    assert used == 3
    rows1, rows2 = [], []
    with torch.no_grad():
        for x, pad in batches:
            r = model.lin(x)[~pad]  # (N, C): the real tokens
            if layer_scaling:  # the official LayerScaling: each token divided by its RMS
                r = r / torch.sqrt((r * r).mean(-1, keepdim=True) + EPS)
            z = _direct_bn(r, 0, model.bn1.weight, model.bn1.bias)
            rows1.append(r)
            rows2.append(torch.relu(z) * 2 + 1)
    for name, rows in (("bn1", rows1), ("bn2", rows2)):
        allrows = torch.cat(rows).double()
        assert stats[name].count == allrows.shape[0] == 5 + 2 + 4 + 3 + 3 + 1 + 6 + 2 + 4
        torch.testing.assert_close(stats[name].mean, allrows.mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            stats[name].var, allrows.var(0, unbiased=False), rtol=1e-5, atol=1e-5
        )


def test_precise_stats_of_bn_official_count_every_position_with_pads_mean_filled():
    """bn_official normalizes all T·B positions: layer-scaled tokens, each pad replaced by the
    batch's real-token mean. Its population statistics are over those rows, recomputed here."""
    torch.manual_seed(0)
    lin, bn = nn.Linear(6, 6), OfficialMaskedBatchNorm(6)
    batches = _padded_batches()
    stats, used = collect_population_stats(
        bn, [(lin(x).detach(), pad) for x, pad in batches], lambda b: bn(*b)
    )
    assert used == 3 and bn_layers(bn)
    rows = []
    for x, pad in batches:
        h = lin(x).detach()
        h = h / torch.sqrt((h * h).mean(-1, keepdim=True) + EPS)
        h[pad] = h[~pad].mean(0)  # this batch's real-token mean
        rows.append(h.reshape(-1, 6))
    allrows = torch.cat(rows).double()
    assert stats[""].count == allrows.shape[0] == 3 * 5 + 2 * 3 + 4 * 6
    torch.testing.assert_close(stats[""].mean, allrows.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats[""].var, allrows.var(0, unbiased=False), rtol=1e-5, atol=1e-5)


def test_batch_mode_normalizes_by_the_real_tokens_and_leaves_the_buffers():
    model = _SeqModel()
    x, pad = _padded_batches()[2]
    buffers = {k: (v.clone(), v.data_ptr()) for k, v in model.named_buffers()}
    model.train()
    with batch_statistics(model):
        model.eval()  # beam search and the evaluators do this themselves: must not matter
        y = model(x, pad)
        again = model(x, pad)
    h = model.lin(x)
    real = ~pad
    mean, var = h[real].mean(0), h[real].var(0, unbiased=False)
    z = (h - mean) / torch.sqrt(var + EPS) * model.bn1.weight + model.bn1.bias  # pads too
    u = torch.relu(z) * 2 + 1  # no dropout
    mean2, var2 = u[real].mean(0), u[real].var(0, unbiased=False)
    expected = (u - mean2) / torch.sqrt(var2 + EPS) * model.bn2.weight + model.bn2.bias
    torch.testing.assert_close(y[real], expected[real], rtol=1e-4, atol=1e-4)
    assert torch.equal(y, again)
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k][0]) and v.data_ptr() == buffers[k][1], k
    # afterwards: the mode it was in, and BN on its running statistics again in eval
    assert model.training and model.bn1.training
    model.eval()
    with torch.no_grad():
        bn = model.bn1
        ema = model.bn1(model.lin(x), pad)
        want = (model.lin(x) - bn.running_mean) / torch.sqrt(bn.running_var + EPS)
        torch.testing.assert_close(ema, want * bn.weight + bn.bias)


def test_batch_mode_of_batchnorm2d_uses_the_batch_statistics():
    model = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm2d(3))
    _randomize(model)
    x = _image_batches()[1]
    before = model[1].running_mean.clone(), model[1].running_var.clone()
    with batch_statistics(model), torch.no_grad():
        y = model(x)
    bn = model[1]
    want = _direct_bn(x, (0, 2, 3), bn.weight.view(1, -1, 1, 1), bn.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == 0


# ------------------------------------------------------------------------------ runs
def _script():
    spec = importlib.util.spec_from_file_location(
        "inference_stats_script", REPO / "scripts" / "inference_stats.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_on_a_smoke_run_records_three_modes(image_folder, tmp_path, capsys):
    runs = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "normlab.train", "experiment=cifar10_resnet20", "scale=smoke",
        "norm=bn", "data.source=imagefolder", f"data.root={image_folder}",
        "trainer.progress=false", "trainer.threads=1", "probe=none",
    ]  # fmt: skip
    env = {**os.environ, "NORMLAB_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (runs / "cifar10_resnet20" / "smoke").iterdir()  # norm=bn,probe=none
    before = json.loads((run / "summary.json").read_text())

    # A PowerNorm run beside it: skipped in one line, its summary left alone.
    pn = tmp_path / "pn"
    (pn / "checkpoints").mkdir(parents=True)
    cfg = compose_config(["experiment=cifar10_resnet20", "scale=smoke", "norm=pn",
                          "data.source=imagefolder", f"data.root={image_folder}"])  # fmt: skip
    (pn / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (pn / "checkpoints" / "last.pt").write_bytes(b"")
    (pn / "summary.json").write_text('{"status": "complete"}')

    out = tmp_path / "out"
    rc = _script().main([str(run), str(pn), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "norm=pn: PowerNorm keeps a running quadratic mean" in stdout
    assert json.loads((pn / "summary.json").read_text()) == {"status": "complete"}
    after = json.loads((run / "summary.json").read_text())
    stats = after.pop("inference_stats")
    assert after == before  # only the new key
    assert set(stats["modes"]) == {"ema", "precise", "batch"}
    for entry in stats["modes"].values():
        assert 0 <= entry["test_acc"] <= 1 and entry["test_loss"] > 0
    # EMA is what the run itself tested: the same weights and data give its numbers exactly
    assert stats["modes"]["ema"]["test_acc"] == before["test_acc"]
    assert stats["modes"]["ema"]["test_loss"] == before["test_loss"]
    # default: the whole epoch (240 images, fewer than 100,000 values even in the stem)
    precise = stats["modes"]["precise"]
    assert precise["batches"] == 4 and precise["min_values_per_feature"] == 240 * 8 * 8
    batch = stats["modes"]["batch"]["first_layer_values_per_batch"]
    # the 80 test images drawn as training batches of the smoke preset's 64: 64 + 16
    assert batch["batches"] == 2 and batch["max"] == 64 * 32 * 32 and batch["min"] == 16 * 32 * 32
    rows = list(csv.DictReader((out / "table.csv").read_text().splitlines()))
    assert [r["mode"] for r in rows] == ["ema", "precise", "batch"]
    assert float(rows[1]["test_acc"]) == precise["test_acc"]
    table = (out / "table.md").read_text()
    assert "| cifar10_resnet20 | precise | population of 4 training batches" in table
    assert "PowerNorm keeps a running quadratic mean" in table
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["made_with"]["git_commit"] and prov["wall_s"] > 0
    assert prov["runs"][0]["data_source"] == before["data_source"]


def test_missing_or_unfinished_run_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "runs" / "norm=bn"
    assert _script().main([str(missing), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"inference_stats: error: run directory {missing} does not exist; train it first "
        "(make cifar10 NORM=bn or make iwslt14 NORM=bn, with the same SCALE)"
    )
    missing.mkdir(parents=True)
    (missing / "summary.json").write_text('{"status": "diverged"}')
    assert _script().main([str(missing), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a complete run (summary.json has status='diverged')" in err
    assert "\n" not in err
    assert _script().main([str(missing), "--out", str(out), "--batches", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("batches=0 is not a number of training batches; give 1 or more")
    assert not out.exists()


def test_transformer_bn_modes_on_the_averaged_checkpoint(tmp_path):
    corpus = make_fairseq_layout(tmp_path / "toy", {"valid": 160, "test": 16})
    cfg = compose_config(
        ["experiment=iwslt14_transformer", "scale=smoke", f"data.prepared_dir={corpus}",
         "norm=bn", "trainer.progress=false", "trainer.threads=1", "probe=none"]
    )  # fmt: skip
    validate_config(cfg)
    summary = train(cfg, tmp_path / "run")
    result = evaluate_inference_modes(tmp_path / "run", device="cpu")
    assert result["weights"] == "average of epoch0001.pt, epoch0002.pt"
    modes = result["modes"]
    # the run's own test (finalize): the same averaged weights give the same translations
    assert modes["ema"]["bleu"] == summary["bleu"]
    assert modes["ema"]["sacrebleu"] == summary["sacrebleu"]
    for entry in modes.values():
        assert entry["valid_loss"] > 0 and entry["sacrebleu"] >= 0
    # the population: every real source token of the epoch (the encoder's BN), pads left out
    task = TASKS.get("translation")(cfg, torch.device("cpu"))
    assert modes["precise"]["min_values_per_feature"] == sum(map(len, task.train_pairs[0]))
    assert modes["precise"]["batches"] == task.steps_per_epoch()


def test_batch_mode_draws_shuffled_training_size_batches_from_a_class_sorted_test_set(
    image_folder, monkeypatch
):
    """An image folder is sorted by class: evaluated in stored order, BN on batch statistics would
    see one class per batch. Batch mode draws the test set as training draws its batches."""
    import normlab.train.tasks.image_classification as image_task

    cfg = compose_config(
        ["experiment=cifar10_resnet20", "scale=smoke", "data.source=imagefolder",
         f"data.root={image_folder}", "trainer.batch_size=16", "trainer.eval_batch_size=8"]
    )  # fmt: skip
    task = TASKS.get("image_classification")(cfg, torch.device("cpu"))
    seen: list[torch.Tensor] = []

    def record(model, batches):
        batches = list(batches)
        seen.extend(y for _, y in batches)
        return {"loss": 0.0, "acc": 0.0}

    monkeypatch.setattr(image_task, "evaluate_classifier", record)
    task.evaluate_final()
    assert all(len(set(y.tolist())) == 1 for y in seen)  # stored order: one class a batch
    seen.clear()
    task.evaluate_final(batch_statistics=True)
    assert [len(y) for y in seen] == [16] * 5  # 80 test images, the training batch size
    assert all(len(set(y.tolist())) > 1 for y in seen)
    assert sorted(torch.cat(seen).tolist()) == sorted(task.test_data.labels.tolist())
