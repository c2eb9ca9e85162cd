"""wandb mirrors the local files offline, and a broken wandb never stops training."""

from __future__ import annotations

import warnings

import pytest

from helpers import compose_config
from normlab.train.loop import train


def test_offline_wandb_run_records_the_training(smoke_overrides, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config(
        [*smoke_overrides, "logger=wandb", "logger.mode=offline", "trainer.max_steps=4"]
    )
    summary = train(cfg, tmp_path)
    assert summary["status"] == "complete"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_a_failing_wandb_only_warns(smoke_overrides, tmp_path, monkeypatch):
    import wandb

    def broken(*a, **k):
        raise RuntimeError("wandb service unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    cfg = compose_config([*smoke_overrides, "logger=wandb", "trainer.max_steps=2"])
    with pytest.warns(UserWarning, match="wandb could not start"):
        summary = train(cfg, tmp_path)
    assert summary["status"] == "complete"
    warnings.resetwarnings()


def test_wandb_sync_lists_offline_runs_when_not_logged_in(
    smoke_overrides, tmp_path, monkeypatch, capsys
):
    import importlib.util

    from helpers import REPO

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    cfg = compose_config(
        [*smoke_overrides, "logger=wandb", "logger.mode=offline", "trainer.max_steps=2"]
    )
    train(cfg, tmp_path / "runs" / "one")
    spec = importlib.util.spec_from_file_location("wandb_sync", REPO / "scripts" / "wandb_sync.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "1 offline wandb run(s)" in out and "not logged in" in out


def test_a_resumed_run_continues_the_same_wandb_run(smoke_overrides, tmp_path, monkeypatch):
    """Issue 12 item 14: the wandb run id is kept in the run directory, so the rerun that resumes
    a cut-off run logs to the same wandb run instead of a second one."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = [*smoke_overrides, "logger=wandb", "logger.mode=offline", "trainer.max_steps=4"]
    cut = train(compose_config([*overrides, "trainer.simulate_interrupt_at_step=2"]), tmp_path)
    assert cut["status"] == "interrupted"
    saved = (tmp_path / "wandb_id").read_text().strip()
    assert train(compose_config(overrides), tmp_path)["resumed"] == 1
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    # offline-run-<time>-<id>[-1]: the same id both times (wandb adds -1 to a repeated folder name)
    assert len(runs) == 2 and all(f"-{saved}" in r.name for r in runs), runs
