"""`experiment=multi30k_transformer` (data=multi30k) through `normlab-train`: composition at every
scale, a smoke run end to end on a slice of the real files, and refusals in one line (issue 14)."""

from __future__ import annotations

import json
import os

import pytest

from helpers import compose_config, run_cli_batch, write_gz
from normlab.cli import group_options
from normlab.config import validate_config
from normlab.data.iwslt14.textio import read_lines

EXPERIMENT = "multi30k_transformer"
SMOKE = [f"experiment={EXPERIMENT}", "scale=smoke", "trainer.progress=false", "trainer.threads=1"]


def test_the_experiment_composes_at_every_scale():
    scales = group_options(f"preset/{EXPERIMENT}")
    assert {"smoke", "cpu", "paper"} <= set(scales)
    for scale in scales:
        cfg = compose_config([f"experiment={EXPERIMENT}", f"scale={scale}"])
        validate_config(cfg)
        assert (cfg.task, cfg.model.name, cfg.data.name) == (
            "translation",
            "transformer",
            "multi30k",
        )
        assert cfg.data.dir == "../shared/data/multi30k", scale  # read in place, never copied
        assert cfg.data.test_set == "test_2016_flickr", scale


def test_the_cpu_recipe_is_the_documented_one():
    """The numbers the experiment's comment names (Trevett's model, 2,048-token batches), and the
    whole recipe at cpu scale: 10 epochs of 232 updates, warmup 15% of them."""
    cfg = compose_config([f"experiment={EXPERIMENT}", "scale=cpu"])
    m, o, t = cfg.model, cfg.optim, cfg.translation
    shape = [m.d_model, m.encoder_layers, m.decoder_layers, m.heads, m.ffn_dim]
    assert shape == [256, 3, 3, 8, 512]
    assert [m.dropout, m.attention_dropout, m.activation_dropout] == [0.1, 0.1, 0.1]
    assert [o.name, o.lr, o.schedule.name, o.schedule.warmup_steps] == [
        "adamw", 1e-3, "inverse_sqrt", 350,
    ]  # fmt: skip
    assert [t.max_tokens, t.label_smoothing, t.beam, t.average_last] == [2048, 0.1, 5, 3]
    assert [cfg.trainer.epochs, cfg.data.merges] == [10, 8000]


@pytest.fixture
def multi30k_slice(shared_data, tmp_path):
    """The first 400 training, 60 val and 30 test_2016_flickr pairs of the real files, gzipped
    under their own names in a folder of their own."""
    source = shared_data / "multi30k"
    if not source.is_dir():
        pytest.skip(f"{source} not found: this check reads a slice of the official Multi30K files")
    folder = tmp_path / "multi30k"
    folder.mkdir()
    for stem, n in (("train", 400), ("val", 60), ("test_2016_flickr", 30)):
        for lang in ("de", "en"):
            write_gz(folder / f"{stem}.{lang}.gz", read_lines(source / f"{stem}.{lang}.gz")[:n])
    return folder


def test_smoke_run_end_to_end_and_refusals_in_one_line(multi30k_slice, tmp_path):
    runs = tmp_path / "runs"
    env = {"NORMLAB_RUNS": str(runs), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    watch = [str(multi30k_slice)]
    cases = [  # the refusals first: they must leave no run directory behind
        {"argv": [*SMOKE, f"data.dir={multi30k_slice}", "data.test_set=test_2019"]},
        {"argv": [*SMOKE, f"data.dir={tmp_path / 'nowhere'}"]},
        {"argv": [*SMOKE, f"data.dir={multi30k_slice}"], "watch": watch},
    ]
    bad_test_set, no_folder, ok = run_cli_batch(cases, env)
    for result, message in (
        (
            bad_test_set,
            "normlab: error: data.test_set='test_2019' is not a Multi30K German-English",
        ),
        (no_folder, f"normlab: error: data.dir={tmp_path / 'nowhere'} is not a folder; point"),
    ):
        assert result["rc"] != 0 and result["stderr"].startswith(message), result["stderr"]
        assert result["stderr"].count("\n") == 1, result["stderr"]
    assert ok["rc"] == 0, ok["stderr"][-3000:]
    assert "Traceback" not in ok["stderr"] and ok["unchanged"]  # the data folder is only read
    assert ok["stdout"].strip().splitlines()[-1].startswith("complete: ")
    # data.dir is not part of a run's name; the refused data.test_set=test_2019 left nothing
    assert [p.name for p in (runs / EXPERIMENT / "smoke").iterdir()] == ["default"]
    summary = json.loads((runs / EXPERIMENT / "smoke" / "default" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["test_sentences"] == 12
    assert summary["data_source"] == "Multi30K de-en (task 1), test set test_2016_flickr"
    assert "valid: valid (60 pairs)" in summary["data_detail"]
    assert "bleu" in summary and "sacrebleu" in summary


def test_make_multi30k_runs_the_documented_command(tmp_path):
    """`make multi30k NORM=ln SCALE=cpu` (README targets) is normlab-train on this experiment, with
    the shared copy of Multi30K when SHARED points at a folder that has one."""
    import subprocess

    from helpers import REPO

    (tmp_path / "multi30k").mkdir()
    cmd = ["make", "-n", "--no-print-directory", "multi30k", "NORM=ln", "SCALE=cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(
        [*cmd, f"SHARED={tmp_path}"], capture_output=True, text=True, cwd=REPO, check=True, env=env
    ).stdout.splitlines()[-1]
    assert out.split()[1:] == [
        f"experiment={EXPERIMENT}",
        "scale=cpu",
        "norm=ln",
        f"data.dir={tmp_path}/multi30k",
    ]
    assert out.split()[0].endswith("normlab-train")
