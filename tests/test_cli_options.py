"""Every `data=`, `model=` and `norm=` option the README documents, run through the CLI (the code
the `normlab-train` console script runs: Hydra composition, the checks, the run directory), so a
documented option that does not work fails here (issue 12 item 1: `data=parallel_text` had no
config file)."""

from __future__ import annotations

import json
import re

import pytest
from omegaconf import OmegaConf

from helpers import (
    REPO,
    compose_config,
    make_fairseq_layout,
    make_multi30k_like,
    make_raw_corpus,
    run_cli_batch,
)
from normlab.cli import CONFIG_DIR, group_options


def documented(group: str) -> list[str]:
    """The options of `group` in the README's table of config groups (`{a,b}` expanded)."""
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        groups = re.findall(r"`(\w+)`", cells[0])
        if group not in groups:
            continue
        options = cells[1].split(";")[groups.index(group)] if len(groups) > 1 else cells[1]
        names = []
        for name in re.findall(r"`([^`]+)`", options):
            stem, _, rest = name.partition("{")
            names += [stem + v for v in rest.rstrip("}").split(",")] if rest else [name]
        return names
    raise AssertionError(f"the README documents no options for {group}")


def test_the_readme_documents_the_groups_options():
    assert {"bn", "ln", "gn", "none", "pnv", "pn"} <= set(documented("norm"))
    assert documented("data") == ["cifar10", "iwslt14", "parallel_text", "multi30k"]
    assert {"resnet20", "transformer_smoke"} <= set(documented("model"))


def _completed(result: dict, name: str, runs_root) -> None:
    assert result["rc"] == 0, (name, result["stderr"][-3000:])
    last = result["stdout"].strip().splitlines()[-1]
    assert last.startswith("complete: "), (name, last)
    summary = json.loads((runs_root / last.split(" ")[1] / "summary.json").read_text())
    assert summary["steps"] == 2, name


@pytest.mark.slow
def test_every_documented_option_runs_through_the_cli(image_folder, tmp_path):
    """ResNet-20 with each norm; a norm that ResNet-20 refuses (in one sentence: norm=pn) runs on
    the Transformer instead; each Transformer model file; each translation dataset: 2 steps each."""
    prepared = make_fairseq_layout(tmp_path / "fairseq", {"valid": 80, "test": 12})
    corpus = make_raw_corpus(tmp_path / "corpus", "fr", "en", {"train": 100, "test": 12})
    m30k = make_multi30k_like(tmp_path / "m30k", {"train": 100, "val": 12, "test_2016_flickr": 12})
    common = ["trainer.max_steps=2", "trainer.progress=false"]
    image = ["scale=smoke", "data.source=imagefolder", f"data.root={image_folder}", *common]
    text = ["experiment=iwslt14_transformer", "scale=smoke", "translation.beam=1", *common]
    toy = [f"data.prepared_dir={prepared}"]
    iwslt14 = [*text, *toy]
    env = {"NORMLAB_RUNS": str(tmp_path / "runs"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    norms = documented("norm")
    on_images = run_cli_batch([{"argv": [*image, f"norm={n}"]} for n in norms], env)
    cases, refused = {"data=cifar10": None}, []
    for norm, result in zip(norms, on_images, strict=True):
        assert "Traceback" not in result["stderr"], (norm, result["stderr"][-3000:])
        if result["rc"] == 2:  # refused for images, in one line: the Transformer takes it
            assert result["stderr"].startswith("normlab: error: norm"), result["stderr"]
            assert result["stderr"].count("\n") == 1, result["stderr"]
            refused.append(norm)
            cases[f"norm={norm} (Transformer)"] = [*iwslt14, f"norm={norm}"]
        else:
            _completed(result, f"norm={norm}", tmp_path)
    assert "pn" in refused and {"bn", "ln", "gn", "none", "pnv"}.isdisjoint(refused)
    # each model file in an experiment that trains its builder (and so its task's data)
    experiment_of = {}
    for experiment in reversed(group_options("experiment")):
        cfg = compose_config([f"experiment={experiment}", "scale=smoke"])
        experiment_of[cfg.model.name] = (experiment, cfg.task)
    for model in documented("model"):
        name = OmegaConf.load(CONFIG_DIR / "model" / f"{model}.yaml").name
        experiment, task = experiment_of[name]
        data = image if task == "image_classification" else [*text[1:], *toy]
        if model != "resnet20":
            cases[f"model={model}"] = [f"experiment={experiment}", *data, f"model={model}"]
    cases["data=iwslt14"] = iwslt14
    cases["data=parallel_text"] = [*text, "data=parallel_text", f"data.dir={corpus}",
                                   "data.src=fr", "data.tgt=en", "data.merges=100"]  # fmt: skip
    # Multi30K in its own experiment (the IWSLT14 presets set keys of fairseq's splits)
    cases["data=multi30k"] = ["experiment=multi30k_transformer", *text[1:], "data=multi30k",
                              f"data.dir={m30k}", "data.merges=100"]  # fmt: skip
    del cases["data=cifar10"]  # every norm above ran on it
    results = run_cli_batch([{"argv": argv} for argv in cases.values()], env)
    for name, result in zip(cases, results, strict=True):
        assert "Traceback" not in result["stderr"], (name, result["stderr"][-3000:])
        _completed(result, name, tmp_path)
