"""The translation task end to end at smoke scale on a toy fairseq-layout corpus."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import compose_config, make_fairseq_layout
from normlab.config import validate_config
from normlab.norms.masked_batchnorm import MaskedBatchNorm
from normlab.probe.store import read_probe
from normlab.tracking.metrics_file import read_metrics
from normlab.train.loop import TIMING_KEYS, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fairseq_layout(tmp_path_factory.mktemp("toy-de-en"), {"valid": 160, "test": 16})


def _overrides(corpus, *extra):
    return [
        "experiment=iwslt14_transformer",
        "scale=smoke",
        f"data.prepared_dir={corpus}",
        "trainer.progress=false",
        "trainer.threads=1",
        *extra,
    ]


def _train(overrides, run_dir):
    cfg = compose_config(overrides)
    validate_config(cfg)
    return train(cfg, run_dir)


@pytest.mark.parametrize("norm", ["ln", "bn"])
def test_smoke_run_writes_bleu_both_ways(corpus, tmp_path, norm):
    summary = _train(_overrides(corpus, f"norm={norm}", "trainer.epochs=3"), tmp_path)
    assert summary["status"] == "complete" and summary["norm"] == norm
    for key in ("bleu", "sacrebleu", "sacrebleu_signature", "valid_loss", "items_per_s", "wall_s"):
        assert key in summary, key
    assert summary["sacrebleu_signature"].startswith("nrefs:1")
    assert summary["test_sentences"] == 12 and summary["averaged_checkpoints"] == 2
    assert summary["unit"] == "tok"
    lines = (tmp_path / "generate-test.txt").read_text().splitlines()
    assert len(lines) == 3 * 12 and lines[0].startswith("S-0\t") and "@@" not in lines[0]
    losses = [float(r["loss"]) for r in read_metrics(tmp_path / "metrics.csv")]
    assert sum(losses[-3:]) < sum(losses[:3])
    assert len(list((tmp_path / "checkpoints").glob("epoch*.pt"))) == 2  # the last 2 are kept


def test_bn_run_probes_the_encoder_and_not_the_ln_decoder(corpus, tmp_path):
    _train(_overrides(corpus, "norm=bn", "trainer.epochs=1"), tmp_path)
    table = read_probe(tmp_path).to_pandas()
    bn_layers = sorted(table[table["kind"] == "bn"]["layer"].unique())
    assert bn_layers == [
        "encoder_final_norm",
        "encoder_layers.0.ffn_norm",
        "encoder_layers.0.self_attn_norm",
    ]
    first = table[(table["kind"] == "bn")].sort_values("layer_index").iloc[0]
    assert first["layer"] == "encoder_layers.0.self_attn_norm" and first["d"] == 32
    assert (table[table["kind"] == "ln"]["layer"].str.startswith("decoder")).all()


def test_bn_everywhere_preset(corpus):
    cfg = compose_config(_overrides(corpus, "norm=bn", "model.decoder_norm=null"))
    from normlab.train.tasks import TASKS

    task = TASKS.get("translation")(cfg, torch.device("cpu"))
    assert sum(isinstance(m, MaskedBatchNorm) for m in task.model.modules()) == 3 + 4


def test_resume_equals_uninterrupted_with_dropout(corpus, tmp_path):
    base = _overrides(corpus, "norm=bn", "trainer.epochs=3")
    straight = _train(base, tmp_path / "a")
    cut = _train([*base, "trainer.simulate_interrupt_at_step=9"], tmp_path / "b")
    assert cut["status"] == "interrupted"
    resumed = _train(base, tmp_path / "b")

    def strip(summary):
        return {k: v for k, v in summary.items() if k not in TIMING_KEYS and k != "config"}

    def rows(run_dir):
        return [
            {k: v for k, v in r.items() if k != "items_per_s"}
            for r in read_metrics(run_dir / "metrics.csv")
        ]

    assert strip(resumed) == strip(straight)
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert (tmp_path / "a" / "generate-test.txt").read_text() == (
        tmp_path / "b" / "generate-test.txt"
    ).read_text()
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["resumed"] == 1


def test_early_stopping_stops_on_a_flat_metric(corpus, tmp_path):
    # lr 0 after warmup-free start: the valid loss cannot improve, so patience 1 stops after epoch 2
    summary = _train(
        _overrides(
            corpus,
            "trainer.epochs=6",
            "trainer.early_stop_patience=1",
            "optim.lr=1e-12",
            "optim.schedule.warmup_steps=1",
        ),
        tmp_path,
    )
    assert summary["early_stopped"] is True
    assert summary["epochs"] < 6
