"""A run's progress (TrainState) as checkpoints keep it, old checkpoints included, and the run
recorder's share of the files per rank; the one list of config keys that do not change a run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from normlab.cli import CONFIG_DIR, run_name
from normlab.config import UNCOMPUTED_KEYS, run_name_exclusions
from normlab.tracking.metrics_file import read_metrics
from normlab.tracking.run_recorder import RunRecorder, completed_summary
from normlab.train.checkpoint import config_differences
from normlab.train.state import TrainState

# checkpoints/last.pt's "progress" exactly as the training loop wrote it before TrainState existed
# (taken from a checkpoint that loop wrote: a Transformer smoke run cut at step 9).
BEFORE_TRAINSTATE = {
    "step": 9,
    "epoch": 2,
    "batch_in_epoch": 1,
    "train_s": 5.672444066998651,
    "items": 1789,
    "wall_s": 9.51457352899888,
    "resumed": 0,
    "best": 4.738515218098958,
    "bad_evals": 0,
    "early_stopped": False,
    "git_segments": [
        {"git_commit": "3e81786", "git_dirty": True, "started_at": "2026-11-30T18:52:17+0000"}
    ],
}
# ... and as the first checkpoints had it (commit 1c99f15), before early stopping and git segments
FIRST_FORMAT = {k: BEFORE_TRAINSTATE[k] for k in list(BEFORE_TRAINSTATE)[:7]}


def _segment(commit: str) -> dict:
    return {"git_commit": commit, "git_dirty": False, "started_at": "now"}


def test_progress_is_written_in_the_shape_checkpoints_have_always_had():
    state = TrainState(git_segments=[_segment("new")])
    state.resume(BEFORE_TRAINSTATE)
    progress = state.progress()
    assert list(progress) == list(BEFORE_TRAINSTATE)  # same keys, same order: no format change
    same = {k: v for k, v in progress.items() if k not in ("wall_s", "resumed", "git_segments")}
    assert same == {k: v for k, v in BEFORE_TRAINSTATE.items() if k in same}
    assert progress["resumed"] == 1 and progress["wall_s"] >= BEFORE_TRAINSTATE["wall_s"]
    assert [s["git_commit"] for s in progress["git_segments"]] == ["3e81786", "new"]


def test_a_checkpoint_from_before_early_stopping_resumes_with_the_defaults():
    state = TrainState(git_segments=[_segment("new")])
    state.resume(FIRST_FORMAT)
    assert (state.step, state.epoch, state.batch_in_epoch, state.items) == (9, 2, 1, 1789)
    assert (state.resumed, state.best, state.bad_evals, state.early_stopped) == (
        1,
        math.inf,
        0,
        False,
    )
    assert [s["git_commit"] for s in state.git_segments] == ["new"]


def test_early_stopping_counts_evaluations_without_improvement():
    state = TrainState()
    for value in (3.0, 2.0, 2.5, 2.0):
        state.record_eval(value, patience=2)
    assert (state.best, state.bad_evals, state.early_stopped) == (2.0, 2, True)
    unpatient = TrainState()
    unpatient.record_eval(1.0, patience=None)
    unpatient.record_eval(None, patience=3)  # the metric is not among this task's evaluations
    assert (unpatient.best, unpatient.bad_evals) == (math.inf, 0)


def _recorder(tmp_path, rank: int, own_probe_rows: bool, **kw) -> RunRecorder:
    cfg = OmegaConf.create({"logger": {"name": "none"}, "probe": {"flush_every": 1000}})
    return RunRecorder(
        cfg, tmp_path, {"seed": 0}, rank=rank, own_probe_rows=own_probe_rows,
        train_keys=["acc"], eval_keys=["test_acc"], **kw,
    )  # fmt: skip


def test_the_recorder_writes_on_rank_0_and_only_its_own_probe_rows_elsewhere(tmp_path):
    row = {"step": 1, "epoch": 0, "lr": 0.1, "loss": 2.0, "loss_normalizer": 32, "acc": 0.5}
    probe_rows = [{"step": 1, "layer": "bn1", "var_dist": 0.5}]
    other = _recorder(tmp_path, rank=1, own_probe_rows=False)
    other.log_step(row, 10.0)
    other.log_probe(probe_rows, 1)
    assert other.flush() is None
    other.diverged(2)
    other.close()
    assert not list(tmp_path.iterdir())  # nothing at all: rank 0 records the run
    per_rank = _recorder(tmp_path, rank=1, own_probe_rows=True)
    per_rank.log_probe(probe_rows, 1)
    per_rank.close()
    assert [p.name for p in tmp_path.rglob("*.parquet")] == ["part-0000000001-0000000001.parquet"]
    assert {p.parent.name for p in tmp_path.rglob("*.parquet")} == {"rank1"}

    main = _recorder(tmp_path, rank=0, own_probe_rows=True)
    main.log_step(row, 10.0)
    main.log_eval(1, 0, {"test_acc": 0.25})
    offsets = main.flush()
    main.log_step(row | {"step": 2}, 10.0)  # after the checkpoint: cut on resume
    main.close()
    resumed = _recorder(tmp_path, rank=0, own_probe_rows=True, resume_step=1, offsets=offsets)
    resumed.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.csv")] == ["1"]
    assert read_metrics(tmp_path / "eval.csv") == [{"step": "1", "epoch": "0", "test_acc": "0.25"}]
    assert (
        tmp_path / "config.yaml"
    ).read_text() == "logger:\n  name: none\nprobe:\n  flush_every: 1000\n"
    summary = {"status": "interrupted", "config": {"seed": 0}}
    assert resumed.finish(summary) is summary and completed_summary(tmp_path) is None
    resumed.finish(summary | {"status": "complete"})
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "complete"
    assert completed_summary(tmp_path)["status"] == "complete"


# --------------------------------------------------------------- keys that do not change a run
def test_the_run_name_and_the_resume_check_leave_out_the_same_keys():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        overrides = ["norm=ln", "seed=2"] + [f"++{k}=x" for k in UNCOMPUTED_KEYS if "." in k]
        overrides += ["device=cpu", "resume=never", "logger=wandb", "data.root=/elsewhere"]
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        hydra_job = cfg.hydra.job
        assert list(hydra_job.config.override_dirname.exclude_keys) == run_name_exclusions()
        assert run_name(hydra_job.override_dirname) == "norm=ln,seed=2"
    assert set(UNCOMPUTED_KEYS) <= set(run_name_exclusions())
    saved = {"seed": 0, "trainer": {"epochs": 3}, "data": {"root": "/a"}}
    current = {"seed": 0, "trainer": {"epochs": 3}, "data": {"root": "/a"}}
    for key in UNCOMPUTED_KEYS:
        *parents, leaf = key.split(".")
        node = current
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = "changed"
    assert config_differences(saved, current) == []
    # where the data lives stays out of the name but is compared: other data, another run
    assert config_differences(saved, current | {"data": {"root": "/b"}}) == [
        "data.root: '/a' -> '/b'"
    ]


@pytest.mark.parametrize("saved, current", [("cuda", "cpu"), ("cuda:1", "auto"), ("cpu", "cuda")])
def test_a_checkpoint_resumes_on_another_device(saved, current):
    """device does not change a run: a resume loads every tensor onto the CPU and from there onto
    the device of this run (as device=auto, the default, always did between machines)."""
    cfg = {"trainer": {"amp": None, "epochs": 3}}
    assert config_differences(cfg | {"device": saved}, cfg | {"device": current}) == []


def test_the_probe_state_goes_to_the_device_of_the_resuming_run():
    """The LN drift's last statistics come back from the checkpoint on the CPU; the next step
    compares them with statistics on the model's device (`meta` stands in for a GPU here)."""
    from torch import nn

    from normlab.probe.batch_stats import BatchStatsProbe

    probe = BatchStatsProbe(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
    (name,) = probe.layer_names
    state = {name: (torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))}
    probe.load_state_dict(state, torch.device("meta"))
    assert [t.device.type for t in probe.state_dict()[name]] == ["meta", "meta"]
    probe.load_state_dict({})  # a run without LN layers, or one saved before its first step
    assert probe.state_dict() == {}
