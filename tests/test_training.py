"""The training loop end to end at smoke scale: learning, resume, determinism, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import compose_config
from normlab.config import validate_config
from normlab.errors import TrainingDiverged, UserError
from normlab.probe.store import read_probe
from normlab.tracking.metrics_file import read_metrics
from normlab.train.loop import TIMING_KEYS, train


def _train(overrides, run_dir):
    cfg = compose_config(overrides)
    validate_config(cfg)
    return train(cfg, run_dir)


def _results(summary):
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def _rows(run_dir, name="metrics.csv"):
    return [
        {k: v for k, v in r.items() if k != "items_per_s"} for r in read_metrics(run_dir / name)
    ]


@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_smoke_run_lowers_the_loss_and_writes_the_run_directory(smoke_overrides, tmp_path, norm):
    summary = _train([*smoke_overrides, f"norm={norm}", "trainer.epochs=4"], tmp_path)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert len(rows) == summary["steps"] == 4 * 8  # 240 images / 32 per batch = 8 steps per epoch
    first = sum(float(r["loss"]) for r in rows[:4]) / 4
    last = sum(float(r["loss"]) for r in rows[-4:]) / 4
    assert last < 0.7 * first, (first, last)
    assert summary["status"] == "complete" and summary["norm"] == norm
    assert 0 <= summary["test_acc"] <= 1 and summary["test_loss"] > 0
    assert summary["data_source"] == "CIFAR-10 (PNG subset, 240 train / 80 test)"
    for key in ("wall_s", "git_commit", "torch", "device", "steps", "items_per_s"):
        assert key in summary
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["test_acc"] == summary["test_acc"]
    assert (tmp_path / "config.yaml").read_text().startswith("experiment_name: cifar10_resnet20")
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    assert len(read_metrics(tmp_path / "eval.csv")) == 4


def test_resume_after_interruption_equals_the_uninterrupted_run(smoke_overrides, tmp_path):
    straight = _train([*smoke_overrides, "trainer.epochs=3"], tmp_path / "a")
    # SIGTERM mid-epoch (step 13 of 24, epoch 1), then the same command again.
    cut = _train(
        [*smoke_overrides, "trainer.epochs=3", "trainer.simulate_interrupt_at_step=13"],
        tmp_path / "b",
    )
    assert cut["status"] == "interrupted" and cut["steps"] == 13
    assert not (tmp_path / "b" / "summary.json").exists()
    resumed = _train([*smoke_overrides, "trainer.epochs=3"], tmp_path / "b")
    assert resumed["resumed"] == 1
    assert _results(resumed) | {"config": None} == _results(straight) | {"config": None}
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert _rows(tmp_path / "a", "eval.csv") == _rows(tmp_path / "b", "eval.csv")
    probe_a, probe_b = read_probe(tmp_path / "a"), read_probe(tmp_path / "b")
    assert probe_a.num_rows == 3 * 8 * 19  # every step, ResNet-20's 19 BN layers
    assert probe_a.equals(probe_b.select(probe_a.column_names))
    wa = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise


def test_same_seed_same_result_other_seed_differs(smoke_overrides, tmp_path):
    a = _train([*smoke_overrides, "seed=1"], tmp_path / "a")
    b = _train([*smoke_overrides, "seed=1"], tmp_path / "b")
    _train([*smoke_overrides, "seed=2"], tmp_path / "c")
    assert _results(a) == _results(b)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert _rows(tmp_path / "a") != _rows(tmp_path / "c")


def test_completed_run_is_not_redone(smoke_overrides, tmp_path, capsys):
    first = _train(smoke_overrides, tmp_path)
    mtime = (tmp_path / "metrics.csv").stat().st_mtime_ns
    again = _train(smoke_overrides, tmp_path)
    assert again["test_acc"] == first["test_acc"]
    assert (tmp_path / "metrics.csv").stat().st_mtime_ns == mtime
    assert "already complete" in capsys.readouterr().out


def test_checkpoint_from_another_config_is_refused_naming_the_keys(smoke_overrides, tmp_path):
    _train([*smoke_overrides, "trainer.epochs=3", "trainer.simulate_interrupt_at_step=5"], tmp_path)
    with pytest.raises(UserError) as err:
        _train([*smoke_overrides, "trainer.epochs=3", "norm=ln", "optim.lr=0.05"], tmp_path)
    msg = str(err.value)
    assert "refusing to resume" in msg and "\n" not in msg
    assert "norm.name: 'bn' -> 'ln'" in msg and "optim.lr: 0.1 -> 0.05" in msg


def test_nan_loss_stops_at_the_step_and_keeps_the_last_good_checkpoint(smoke_overrides, tmp_path):
    # lr 1e30 after the first epoch: the first epoch's checkpoint is the last good one.
    overrides = [
        *smoke_overrides,
        "trainer.epochs=3",
        "optim.schedule.name=multistep",
        "optim.schedule.milestones=[1]",
        "optim.schedule.gamma=1e31",
        "optim.lr=0.1",
    ]
    with pytest.raises(TrainingDiverged) as err:
        _train(overrides, tmp_path)
    msg = str(err.value)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["progress"]["step"] == 8
    step = json.loads((tmp_path / "summary.json").read_text())["diverged_at_step"]
    assert step > 8
    assert f"at step {step} " in msg and "(step 8) is kept" in msg and "\n" not in msg


def test_typo_in_a_config_file_is_one_sentence(smoke_overrides):
    cfg = compose_config(smoke_overrides)
    cfg.trainer.epochs = "ten"
    with pytest.raises(UserError, match="invalid trainer config"):
        validate_config(cfg)


def test_run_directory_in_use_is_refused(smoke_overrides, tmp_path):
    from normlab.train.run_dir import RunDirLock

    with RunDirLock(tmp_path), pytest.raises(UserError, match="is in use by pid"):
        _train(smoke_overrides, tmp_path)


def test_summary_names_the_commit_the_run_started_from(smoke_overrides, tmp_path, monkeypatch):
    import normlab.train.loop as loop

    monkeypatch.setattr(loop, "git_info", lambda: {"git_commit": "start", "git_dirty": False})
    _train([*smoke_overrides, "trainer.epochs=2", "trainer.simulate_interrupt_at_step=3"], tmp_path)
    monkeypatch.setattr(loop, "git_info", lambda: {"git_commit": "later", "git_dirty": True})
    summary = _train([*smoke_overrides, "trainer.epochs=2"], tmp_path)
    assert summary["git_commit"] == "start" and summary["git_dirty"] is False
    assert [s["git_commit"] for s in summary["git_segments"]] == ["start", "later"]


def test_runs_made_before_a_key_existed_stay_the_same_run():
    """A key added later with the value that reproduces old runs (trainer.amp: null) does not make
    an old checkpoint 'another config'; any other value of it does."""
    from normlab.train.checkpoint import config_differences

    old = {"trainer": {"epochs": 3}, "distributed": {}}
    assert config_differences(old, {"trainer": {"epochs": 3, "amp": None, "compile": False}}) == []
    assert config_differences(old, {"trainer": {"epochs": 3, "amp": "bf16"}}) == [
        "trainer.amp: '<unset>' -> 'bf16'"
    ]
    synced = {"trainer": {"epochs": 3}, "distributed": {"sync_bn": True, "backend": "gloo"}}
    assert config_differences(old, synced) == ["distributed.sync_bn: '<unset>' -> True"]
