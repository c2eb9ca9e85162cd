"""`data=parallel_text`: your own raw corpus, any language pair and script, through `normlab-train`
at every scale (issue 12 items 1, 6 and 8)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from helpers import (
    LEXICON,
    can_unshare,
    compose_config,
    make_fairseq_layout,
    make_raw_corpus,
    namespace,
    run_cli_batch,
    snapshot,
)
from normlab.cli import group_options
from normlab.config import validate_config
from normlab.data import load_dataset

SMOKE = ["experiment=iwslt14_transformer", "scale=smoke", "trainer.progress=false"]


def _argv(corpus: Path, src: str, tgt: str, *extra: str) -> list[str]:
    return [*SMOKE, "data=parallel_text", f"data.dir={corpus}", f"data.src={src}",
            f"data.tgt={tgt}", "data.merges=200", *extra]  # fmt: skip


def test_the_documented_command_composes_at_every_scale(tmp_path):
    """Every scale keeps your corpus' own train split (the presets train IWSLT14 on valid) and
    passes the config checks, so no preset key reaches the loader that it does not take."""
    for scale in group_options("preset/iwslt14_transformer"):
        cfg = compose_config(_argv(tmp_path, "fr", "en", f"scale={scale}"))
        validate_config(cfg)
        assert cfg.data.name == "parallel_text" and cfg.data.train_split == "train", scale
        assert cfg.data.holdout == (24 if scale == "smoke" else 0), scale


@pytest.mark.parametrize(("src", "tgt"), [("fr", "en"), ("el", "ru")])
def test_a_raw_corpus_in_any_language_pair_trains_through_the_cli(tmp_path, src, tgt):
    corpus = make_raw_corpus(tmp_path / "corpus", src, tgt, {"train": 150, "test": 12})
    runs = tmp_path / "runs"
    env = {"NORMLAB_RUNS": str(runs), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    (result,) = run_cli_batch([{"argv": _argv(corpus, src, tgt)}], env)
    assert result["rc"] == 0, result["stderr"][-3000:]
    assert "Traceback" not in result["stderr"]
    (run_dir,) = (runs / "iwslt14_transformer" / "smoke").iterdir()
    assert run_dir.name == f"data.merges=200,data.src={src},data.tgt={tgt},data=parallel_text"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["test_sentences"] == 12
    assert summary["data_source"].startswith(f"parallel text {src}-{tgt} from ")
    assert "bleu" in summary and "sacrebleu" in summary
    sources = [line for line in (run_dir / "generate-test.txt").read_text().splitlines()]
    first_src = sources[0].split("\t", 1)[1].split()
    assert set(first_src) - {".", "?"} <= set(LEXICON[src])  # the script survived, lowercased


def test_without_test_files_the_error_names_them(tmp_path):
    corpus = make_raw_corpus(tmp_path / "corpus", "fr", "en", {"train": 30})
    cfg = compose_config(_argv(corpus, "fr", "en"))
    with pytest.raises(
        Exception, match=r"has no test\.fr and no test\.en \(the run ends with BLEU"
    ):
        load_dataset(cfg.data)


def test_a_too_long_test_line_is_named_and_skipped_at_load_time(tmp_path):
    """Issue 12 item 8: a 5,000-token test line used to pass the data checks, train the whole
    run and fail at beam search. Now every split is checked when the data is loaded."""
    corpus = make_raw_corpus(tmp_path / "corpus", "fr", "en", {"train": 60, "test": 6})
    lines = (corpus / "test.fr").read_text().splitlines()
    lines[2] = " ".join(["élève"] * 5000)
    (corpus / "test.fr").write_text("\n".join(lines) + "\n")
    cfg = compose_config([*_argv(corpus, "fr", "en"), f"data.cache_dir={tmp_path / 'c'}"])
    data = load_dataset(cfg.data)
    assert len(data.test) == 5
    assert (
        f"test: 1 pair(s) longer than data.max_positions=1024 tokens skipped: {corpus}/test.fr line 3 (5,0"
        in data.detail
    )
    # the same for a prepared (fairseq-layout) folder, where the line is already BPE'd
    prepared = make_fairseq_layout(tmp_path / "prepared", {"valid": 40, "test": 5})
    test_de = (prepared / "test.de").read_text().splitlines()
    test_de[4] = " ".join(["w1"] * 1500)
    (prepared / "test.de").write_text("\n".join(test_de) + "\n")
    cfg = compose_config(
        [*SMOKE, f"data.prepared_dir={prepared}", f"data.cache_dir={tmp_path / 'c'}"]
    )
    data = load_dataset(cfg.data)
    assert len(data.test) == 4 and f"{prepared}/test.de line 5 (1,501 tokens)" in data.detail


@pytest.mark.skipif(not can_unshare(), reason="needs `unshare -Urm` to mount a folder read-only")
def test_a_read_only_cache_only_costs_the_caching(tmp_path):
    """Issue 12 item 6: data.cache_dir on a read-only mount: a warning, and the run goes on."""
    corpus = make_raw_corpus(tmp_path / "corpus", "fr", "en", {"train": 80, "test": 6})
    prepared = make_fairseq_layout(tmp_path / "prepared", {"valid": 60, "test": 6})
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    before = snapshot(cache, corpus, prepared)
    env = {"NORMLAB_RUNS": str(tmp_path / "runs")}
    short = ["trainer.epochs=1", "translation.beam=1"]
    cases = [
        {"argv": _argv(corpus, "fr", "en", f"data.cache_dir={cache}", *short)},
        {"argv": [*SMOKE, f"data.prepared_dir={prepared}", f"data.cache_dir={cache}", *short]},
    ]
    for result in run_cli_batch(cases, env, namespace(read_only=(cache,))):
        assert result["rc"] == 0, result["stderr"][-3000:]
        assert f"data.cache_dir {cache} is not writable" in result["stderr"]
        assert "Traceback" not in result["stderr"]
    assert snapshot(cache, corpus, prepared) == before


@pytest.mark.slow
def test_multi30k_raw_text_at_smoke_scale(shared_data, tmp_path):
    """A real raw corpus (Multi30K de-en, gzipped in the shared data): the first 600 training
    pairs and 50 test pairs, no valid files (carved out of train as prepare-iwslt14.sh does)."""
    corpus = tmp_path / "multi30k"
    corpus.mkdir()
    for split, name, n in (("train", "train", 600), ("test", "test_2016_flickr", 50)):
        for lang in ("de", "en"):
            with gzip.open(shared_data / "multi30k" / f"{name}.{lang}.gz", "rt") as f:
                lines = [next(f) for _ in range(n)]
            (corpus / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    env = {"NORMLAB_RUNS": str(tmp_path / "runs"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    (result,) = run_cli_batch([{"argv": _argv(corpus, "de", "en")}], env)
    assert result["rc"] == 0, result["stderr"][-3000:]
    assert result["stdout"].strip().splitlines()[-1].startswith("complete: ")
