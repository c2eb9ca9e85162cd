"""Faults while a run goes on (issue 12): a full disk at a checkpoint, a NaN evaluation, writers
killed mid-write, a probe that has nothing to record."""

from __future__ import annotations

import fcntl
import json
import math
import os

import pytest
import torch

from helpers import can_unshare, compose_config, namespace, run_cli_batch
from normlab.config import validate_config
from normlab.errors import TrainingDiverged
from normlab.io_utils import remove_stale_temporaries
from normlab.tracking.metrics_file import read_metrics
from normlab.train.loop import train


def _train(overrides, run_dir):
    cfg = compose_config(overrides)
    validate_config(cfg)
    return train(cfg, run_dir)


def test_a_nan_evaluation_stops_the_run_like_a_nan_loss(smoke_overrides, tmp_path, monkeypatch):
    """Issue 12 item 10: the second epoch's evaluation is NaN before the training loss is."""
    from normlab.train.tasks.image_classification import ImageClassificationTask

    real = ImageClassificationTask.evaluate
    calls = []

    def evaluate(self):
        calls.append(1)
        metrics = real(self)
        return metrics | ({"test_loss": math.nan} if len(calls) == 2 else {})

    monkeypatch.setattr(ImageClassificationTask, "evaluate", evaluate)
    with pytest.raises(TrainingDiverged) as err:
        _train([*smoke_overrides, "trainer.epochs=3", "probe=none"], tmp_path)
    msg = str(err.value)
    assert "the evaluation's test_loss became nan at step 16 (epoch 2)" in msg, msg
    assert "(step 8) is kept" in msg and "\n" not in msg
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_at_step"] == 16
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["progress"]["step"] == 8  # the NaN epoch was not checkpointed
    assert all(math.isfinite(float(r["test_loss"])) for r in read_metrics(tmp_path / "eval.csv"))


def _hold_lock(path):
    """A temp file that a live writer is still writing: we hold its lock, as atomic_write does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_leftovers_of_killed_writers_are_removed_when_a_run_starts(smoke_overrides, tmp_path):
    """Issue 12 item 13: SIGKILL during an atomic write leaves `.last.pt.*.tmp` and
    `probe/.part-*.parquet.*.tmp`; the next start removes those that no live process holds."""
    overrides = [*smoke_overrides, "trainer.epochs=2"]
    _train([*overrides, "trainer.simulate_interrupt_at_step=3"], tmp_path)
    stale = [
        tmp_path / "checkpoints" / ".last.pt.k1ll3d.tmp",
        tmp_path / "probe" / ".part-0000000001-0000000003.parquet.x7y.tmp",
        tmp_path / ".summary.json.abc.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half a file")
    live = tmp_path / "probe" / ".part-0000000004-0000000004.parquet.live.tmp"
    fd = _hold_lock(live)
    try:
        summary = _train(overrides, tmp_path)
        assert summary["status"] == "complete" and summary["resumed"] == 1
        assert not any(p.exists() for p in stale)
        assert live.exists()  # a live writer's file is not touched
    finally:
        os.close(fd)
    assert remove_stale_temporaries(live.parent) == [live]  # once its writer is gone, it goes


def test_a_killed_cache_builder_leaves_nothing_behind(tmp_path):
    from normlab.data.iwslt14.cache import build_entry, lookup

    cache, key = tmp_path / "cache", "k" * 24
    stale, live = cache / f".{key}.dead.tmp", cache / f".{key}.busy.tmp"
    for folder in (stale, live):
        (folder / "splits").mkdir(parents=True)
        (folder / ".building").write_bytes(b"")
    fd = _hold_lock(live / ".building")
    try:
        assert lookup(cache, key) is None
        assert not stale.exists() and live.exists()
    finally:
        os.close(fd)

    def build(tmp):
        (tmp / "meta.json").write_text("{}")

    assert build_entry(cache, key, build) == cache / key
    assert lookup(cache, key) == cache / key and not live.exists()


def test_the_probe_says_once_that_it_has_nothing_to_record(smoke_overrides, tmp_path, capsys):
    """Issue 12 item 12: GroupNorm has no running statistics, so probe/ would stay empty."""
    _train([*smoke_overrides, "norm=gn", "trainer.max_steps=2"], tmp_path / "gn")
    err = capsys.readouterr().err
    assert err.count("normlab: note: norm=gn leaves this model without a BN-family layer") == 1
    assert "records nothing (probe=none turns it off)" in err
    assert not list((tmp_path / "gn").glob("probe/part-*.parquet"))
    _train([*smoke_overrides, "norm=bn", "trainer.max_steps=2"], tmp_path / "bn")
    assert "normlab: note" not in capsys.readouterr().err


@pytest.mark.skipif(not can_unshare(), reason="needs `unshare -Urm` to mount a small tmpfs")
def test_a_full_disk_at_a_checkpoint_is_one_sentence_and_keeps_the_last_one(image_folder, tmp_path):
    """Issue 12 item 7: the run directory on a 3.5 MB tmpfs: the first checkpoint (~2.2 MB)
    fits, the second does not (the old one stays until the new one is complete)."""
    runs, copy = tmp_path / "runs", tmp_path / "copy"
    runs.mkdir()
    argv = [
        "scale=smoke", "data.source=imagefolder", f"data.root={image_folder}", "probe=none",
        "trainer.progress=false", "trainer.batch_size=32", "hydra.run.dir=" + str(runs / "run"),
    ]  # fmt: skip
    prefix = namespace(tmpfs=((runs, "3500k"),))
    # the tmpfs goes with the namespace: copy the run out before it does
    prefix[-2] = prefix[-2].replace('exec "$@"', f'"$@"; cp -a {runs}/run {copy}')
    (result,) = run_cli_batch([{"argv": argv}], {"XDG_CACHE_HOME": str(tmp_path / "c")}, prefix)
    err = result["stderr"].strip()
    assert result["rc"] == 2 and "Traceback" not in err, err
    assert err.startswith("normlab: error: disk full at ") and err.count("\n") == 0, err
    assert "the last checkpoint" in err and "(step 8) is intact" in err, err
    ckpt = torch.load(copy / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["progress"]["step"] == 8
    assert not list((copy / "checkpoints").glob(".*.tmp"))
