"""trainer.sync_every (issue 16 item 5): a step's numbers stay on the device and reach the host
every N steps in one copy. N changes when the numbers are read, never what is recorded: the files of
N = 1 and N = 50 are the same (but for the timing column items_per_s), a divergence is reported at
the same step with the same message, and a bad N is refused in one sentence."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import compose_config, make_fairseq_layout, run_cli_batch
from normlab.config import validate_config
from normlab.errors import TrainingDiverged, UserError
from normlab.probe.store import read_probe
from normlab.tracking.metrics_file import read_metrics
from normlab.train import loop
from normlab.train.parts import sync_interval

TIMING_COLUMNS = ("items_per_s",)  # wall-clock: the only column that may differ between runs


def _train(overrides: list[str], run_dir) -> dict:
    cfg = compose_config(overrides)
    validate_config(cfg)
    return loop.train(cfg, run_dir)


def _rows(path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in read_metrics(path)]


def _assert_same_files(a, b, resumed: bool = False) -> None:
    """metrics.csv and eval.csv row for row, and the probe's Parquet parts byte for byte (of a
    resumed run, which cut its parts at the checkpoint, the rows they hold)."""
    assert _rows(a / "metrics.csv") == _rows(b / "metrics.csv")
    assert (a / "eval.csv").read_bytes() == (b / "eval.csv").read_bytes()
    if resumed:
        assert read_probe(a).to_pandas().equals(read_probe(b).to_pandas())
        return
    parts_a = sorted(p.name for p in (a / "probe").glob("part-*.parquet"))
    parts_b = sorted(p.name for p in (b / "probe").glob("part-*.parquet"))
    assert parts_a == parts_b and parts_a
    for name in parts_a:
        assert (a / "probe" / name).read_bytes() == (b / "probe" / name).read_bytes(), name


@pytest.fixture
def image_run(smoke_overrides) -> list[str]:
    # 240 images / 4 = 60 steps an epoch: with N = 50 one copy falls inside the epoch (step 50),
    # the other where the epoch's evaluation and checkpoint force it (step 60).
    return [*smoke_overrides, "trainer.batch_size=4", "trainer.epochs=2", "trainer.max_steps=60"]


def test_image_run_files_do_not_depend_on_sync_every(image_run, tmp_path):
    for n in (1, 50):
        _train([*image_run, f"trainer.sync_every={n}"], tmp_path / f"n{n}")
    a, b = tmp_path / "n1", tmp_path / "n50"
    assert len(_rows(a / "metrics.csv")) == 60
    _assert_same_files(a, b)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (a, b)]
    for key in ("status", "steps", "test_acc", "test_loss"):
        assert summaries[0][key] == summaries[1][key], key


def test_a_stop_mid_window_resumes_into_the_same_files(image_run, tmp_path):
    """A signal at step 55: the checkpoint copies steps 51-55 first, and the resumed run (here with
    N = 50 too) continues the files exactly (the probe on one layer: faster)."""
    image_run = [*image_run, "probe.layers=first"]
    a, cut = tmp_path / "n1", tmp_path / "cut"
    _train([*image_run, "trainer.sync_every=1"], a)
    stopped = _train(
        [*image_run, "trainer.sync_every=50", "trainer.simulate_interrupt_at_step=55"], cut
    )
    assert stopped["status"] == "interrupted" and stopped["steps"] == 55
    assert len(_rows(cut / "metrics.csv")) == 55
    _train([*image_run, "trainer.sync_every=50"], cut)
    _assert_same_files(a, cut, resumed=True)


def test_translation_run_files_do_not_depend_on_sync_every(tmp_path):
    """Masked BN over the real tokens, its probe rows with counts and pad fractions, and a
    Transformer's batch metrics: the same whether copied every step or every 50 (32 tokens a
    batch: 56 steps an epoch, so copies at steps 50, 56 and 60)."""
    corpus = make_fairseq_layout(tmp_path / "toy", {"valid": 160, "test": 16})
    base = [
        "experiment=iwslt14_transformer", "scale=smoke", f"data.prepared_dir={corpus}", "norm=bn",
        "trainer.progress=false", "trainer.threads=1", "translation.max_tokens=32",
        "trainer.epochs=2", "trainer.max_steps=60",
    ]  # fmt: skip
    for n in (1, 50):
        _train([*base, f"trainer.sync_every={n}"], tmp_path / f"n{n}")
    a, b = tmp_path / "n1", tmp_path / "n50"
    assert len(_rows(a / "metrics.csv")) > 50
    _assert_same_files(a, b)


def test_a_divergence_is_reported_at_the_same_step_whatever_sync_every(image_run, tmp_path):
    """lr ×1e31 after the first epoch (60 steps): the loss turns non-finite a few steps later, in
    the middle of the 50-step window that is copied at step 110 (the probe on one layer: faster)."""
    overrides = [
        *image_run,
        "trainer.max_steps=110",
        "probe.layers=first",
        "optim.schedule.name=multistep",
        "optim.schedule.milestones=[1]",
        "optim.schedule.gamma=1e31",
    ]
    messages, steps = [], []
    for n in (1, 50):
        run_dir = tmp_path / f"n{n}"
        with pytest.raises(TrainingDiverged) as err:
            _train([*overrides, f"trainer.sync_every={n}"], run_dir)
        messages.append(str(err.value).replace(str(run_dir), "<run>"))
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "diverged"
        steps.append(summary["diverged_at_step"])
        ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
        assert ckpt["progress"]["step"] == 60  # the last good checkpoint, not a NaN one
    assert steps[0] == steps[1] and 60 < steps[0] < 110, steps
    assert messages[0] == messages[1] and f"at step {steps[0]} (epoch 1)" in messages[0]
    a, b = tmp_path / "n1", tmp_path / "n50"
    assert [int(r["step"]) for r in _rows(a / "metrics.csv")][-1] == steps[0] - 1
    _assert_same_files(a, b)


def test_a_bad_sync_every_is_refused_in_one_sentence(image_run, tmp_path):
    runs = tmp_path / "runs"
    cases = [{"argv": [*image_run, f"trainer.sync_every={v}"]} for v in ("0", "abc")]
    results = run_cli_batch(cases, {"NORMLAB_RUNS": str(runs)})
    for value, result in zip(("0", "'abc'"), results, strict=True):
        assert result["rc"] == 2, result["stderr"][-2000:]
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("normlab: error: "), lines
        assert f"trainer.sync_every={value} is not a number of steps" in lines[0]
        assert "e.g. trainer.sync_every=50" in lines[0] and "auto" in lines[0]
    assert not any(p.is_file() for p in runs.rglob("*")), "a refused run left files"


def test_auto_is_one_step_on_a_cpu_and_fifty_on_a_gpu():
    assert sync_interval("auto", torch.device("cpu")) == 1
    assert sync_interval(None, torch.device("cpu")) == 1
    assert sync_interval("auto", torch.device("cuda", 0)) == 50
    assert sync_interval(7, torch.device("cuda", 0)) == 7
    for bad in (0, -3, True, "x", 2.0):
        with pytest.raises(UserError, match="trainer.sync_every="):
            sync_interval(bad, torch.device("cpu"))


def test_no_host_copy_inside_a_step_between_copies(image_run, tmp_path, monkeypatch):
    """Within the training steps, every way normlab reads a tensor on the host (item, tolist,
    float/int/bool of a tensor) is counted: N = 1 reads at every step, N = 50 once in 60 steps.
    (On a GPU `torch.cuda.set_sync_debug_mode` would also see the copies torch makes itself.)"""
    counts = {"in_step": 0, "reads": 0}
    real_step = loop._Run._train_step

    def train_step(self, *args, **kwargs):
        counts["in_step"] += 1
        try:
            return real_step(self, *args, **kwargs)
        finally:
            counts["in_step"] -= 1

    def counted(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if counts["in_step"]:
                counts["reads"] += 1
            return real(self, *args, **kwargs)

        return read

    monkeypatch.setattr(loop._Run, "_train_step", train_step)
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    reads = {}
    for n in (1, 50):
        counts["reads"] = 0
        _train([*image_run, f"trainer.sync_every={n}"], tmp_path / f"{n}")
        reads[n] = counts["reads"]
    assert reads[1] >= 60, reads  # the counting sees the copies: one per step at least
    assert reads[50] <= 1, reads  # one copy at step 50; steps 51-60 are copied at the evaluation


def test_plain_rows_give_what_item_gives_in_one_copy():
    from normlab.probe.store import plain_rows

    values = {
        "f32": torch.tensor(0.1, dtype=torch.float32),
        "f64": torch.tensor(1 / 3, dtype=torch.float64),
        "bf16": torch.tensor(3.14159, dtype=torch.bfloat16),
        "i64": torch.tensor(2**40 + 3),
        "flag": torch.tensor(True),
        "nan": torch.tensor(float("nan")),
        "plain": 7,
        "name": "stem_norm",
    }
    (row,) = plain_rows([values])
    for key, value in values.items():
        expected = value.item() if torch.is_tensor(value) else value
        assert type(row[key]) is type(expected), key
        assert row[key] == expected or (key == "nan" and row[key] != row[key]), key


def test_a_tensor_count_updates_the_running_variance_as_the_int_does():
    """Synchronized BN's global count stays on the device; the unbiased correction computed from it
    there gives the running variance bit for bit as the int count (the single-process path) does."""
    from torch import nn

    from normlab.norms.global_stats import update_running_stats

    torch.manual_seed(0)
    for count in [2, 3, 7, 150, 1023, 4096, 65_537, 3 * 2**22 + 7]:
        mean, var = torch.randn(16), torch.rand(16) * 5
        by_int, by_tensor = nn.BatchNorm1d(16), nn.BatchNorm1d(16)
        update_running_stats(by_int, mean, var, count)
        update_running_stats(by_tensor, mean, var, torch.tensor(count))
        assert torch.equal(by_int.running_var, by_tensor.running_var), count
        assert torch.equal(by_int.running_mean, by_tensor.running_mean), count
