"""wandb dashboards, offline: a 2-job sweep gives two runs of one group holding the probe's series,
scripts/wandb_dashboard.py logs a results folder's figures and tables, and its panel definition
mirrors Figures 2 and 3 for the first BN layer named by the group's runs' probe rows."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest

from helpers import REPO, run_smoke_sweep
from normlab.errors import UserError
from normlab.probe.batch_stats import BN_COLUMNS
from normlab.probe.store import ProbeStore, probe_layers
from normlab.tracking import wandb_dashboard as dash_lib

PROBE_KEYS = ("mean_dist", "var_dist", "tid_mean", "tid_var", "grad_mean", "grad_var")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_offline_run(run_dir: Path) -> dict:
    """The records of an offline run's .wandb file (a LevelDB-style log of protobuf records):
    its group/job_type, the history keys, the artifacts with their files."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, buf = 32768, 7, b""
    out = {"run": None, "history": set(), "artifacts": {}}
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind not in (1, 4):  # FULL or LAST: the record is complete
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        buf = b""
        which = record.WhichOneof("record_type")
        if which == "run":
            out["run"] = record.run
        elif which == "history":
            out["history"] |= {i.key or "/".join(i.nested_key) for i in record.history.item}
        elif which == "artifact":
            a = record.artifact
            out["artifacts"][a.name] = {e.path for e in a.manifest.contents}
    return out


def write_probe_run(run_dir: Path, layers: list[tuple[str, str]], steps: int = 2) -> Path:
    """A run directory whose probe rows name `layers` [(module name, kind)], in that order."""
    store = ProbeStore(run_dir / "probe")
    for step in range(1, steps + 1):
        store.add(
            [
                {"step": step, "layer": name, "layer_index": i, "kind": kind, "d": 4}
                for i, (name, kind) in enumerate(layers)
            ]
        )
    store.flush()
    return run_dir


RESNET_LAYERS = [("stem_norm", "bn"), ("blocks.0.norm1", "bn"), ("blocks.0.norm2", "bn")]
TRANSFORMER_BN = [
    ("encoder_layers.0.self_attn_norm", "bn"),
    ("encoder_layers.0.ffn_norm", "bn"),
    ("decoder_layers.0.self_attn_norm", "ln"),
]
TRANSFORMER_LN = [(name, "ln") for name, _ in TRANSFORMER_BN]


@pytest.fixture
def group_runs(tmp_path, monkeypatch):
    """Runs of two groups under $NORMLAB_RUNS, in Hydra's layout; the working directory has no
    results/runs, so the layers come from these runs only."""
    runs = tmp_path / "runs"
    write_probe_run(runs / "cifar10_resnet20" / "smoke" / "norm=bn", RESNET_LAYERS)
    write_probe_run(runs / "iwslt14_transformer" / "smoke" / "norm=ln", TRANSFORMER_LN)
    write_probe_run(runs / "iwslt14_transformer" / "smoke" / "norm=bn", TRANSFORMER_BN)
    monkeypatch.setenv("NORMLAB_RUNS", str(runs))
    monkeypatch.chdir(tmp_path)
    return runs


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login, caches in tmp
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "home" / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def test_two_job_sweep_gives_two_grouped_offline_runs_with_the_probe_series(
    image_folder, offline_wandb, capsys
):
    runs = offline_wandb / "runs"
    proc = run_smoke_sweep(
        image_folder,
        runs,
        "norm=bn",
        "seed=0,1",
        "logger=wandb",
        "trainer.threads=1",
        "trainer.batch_size=32",
        "trainer.max_steps=3",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = runs / "cifar10_resnet20" / "smoke"
    offline = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(offline) == 2
    for run_dir in offline:
        rec = read_offline_run(run_dir)
        assert rec["run"].run_group == "cifar10_resnet20"  # group = experiment
        assert rec["run"].job_type == "bn"  # job_type = norm
        assert rec["run"].tags == ["smoke"]
        assert {"train/step", "train/loss", "eval/test_acc"} <= rec["history"]
        assert {f"probe/stem_norm/{k}" for k in PROBE_KEYS} <= rec["history"]
    # `make wandb-sync` without a login lists both runs and uploads nothing
    assert _script("wandb_sync").main([str(runs)]) == 0
    out = capsys.readouterr().out
    assert "2 offline wandb run(s)" in out and "not logged in" in out


def _results_folder(root: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = root / "results" / "fig2" / "smoke"
    folder.mkdir(parents=True)
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    fig.savefig(folder / "fig2.png", dpi=20)
    plt.close(fig)
    (folder / "fig2_boxes.csv").write_text(
        "run,layer,metric,window,median\nResNet,stem_norm,var_dist,0-20%,0.5\n"
        "ResNet,stem_norm,var_dist,20-40%,0.25\n"
    )
    (folder / "fig2_summary.txt").write_text("fig2: a summary\n")
    return folder


def test_dashboard_logs_figures_and_tables_into_an_offline_run_of_the_group(
    offline_wandb, group_runs
):
    import wandb

    folder = _results_folder(offline_wandb)
    wandb_dir = offline_wandb / "wandb_figures"
    rc = _script("wandb_dashboard").main(
        ["--group", "cifar10_resnet20", "--results", str(folder), "--wandb-dir", str(wandb_dir)]
    )
    assert rc == 0
    (run_dir,) = (wandb_dir / "wandb").glob("offline-run-*")
    wandb.teardown()  # the wandb service writes the run's log out when it stops (at exit)
    rec = read_offline_run(run_dir)
    assert rec["run"].run_group == "cifar10_resnet20" and rec["run"].job_type == "figures"
    assert any(k.startswith("fig2/smoke/fig2/") for k in rec["history"])  # the image
    assert any(k.startswith("fig2/smoke/fig2_boxes/") for k in rec["history"])  # the table
    assert list((run_dir / "files" / "media" / "images").rglob("*.png"))
    (table,) = (run_dir / "files" / "media" / "table").rglob("*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"][:3] == ["run", "layer", "metric"] and len(table["data"]) == 2
    files = rec["artifacts"]["cifar10_resnet20-fig2-smoke"]
    assert {"fig2.png", "fig2_boxes.csv", "fig2_summary.txt", "wandb_dashboard.json"} <= files
    # and `make wandb-sync` finds it under the runs folder
    assert _script("wandb_sync").offline_runs(offline_wandb) == [run_dir]


def test_dashboard_spec_mirrors_figures_2_and_3(group_runs, tmp_path, capsys):
    dash = _script("wandb_dashboard")
    assert dash.main(["--group", "cifar10_resnet20", "--print-spec"]) == 0
    spec = json.loads(capsys.readouterr().out)
    panels = [p for s in spec["sections"] for p in s["panels"]]
    assert [p["y"] for p in panels] == [[f"probe/stem_norm/{k}"] for k in PROBE_KEYS]
    assert {p["x"] for p in panels} == {"train/step"}
    assert spec["runs"] == {
        "filter": {"group": ["cifar10_resnet20"], "job_type_not": "figures"},
        "group_by": ["job_type"],
    }
    # two groups (Figure 3: Transformer vs ResNet): each one's first BN layer, grouped by both
    out = tmp_path / "dash.yaml"
    args = ["--group", "iwslt14_transformer", "--group", "cifar10_resnet20", "--out", str(out)]
    assert dash.main([*args, "--print-spec"]) == 0
    import yaml

    spec = yaml.safe_load(out.read_text())
    assert spec["sections"][1]["panels"][1]["y"] == [
        "probe/encoder_layers.0.self_attn_norm/grad_var",
        "probe/stem_norm/grad_var",
    ]
    assert spec["runs"]["group_by"] == ["group", "job_type"]
    # --layer names the layers instead of the runs
    capsys.readouterr()
    assert dash.main(["--group", "g", "--layer", "blocks.0.attn_norm", "--print-spec"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["sections"][0]["panels"][0]["y"] == ["probe/blocks.0.attn_norm/mean_dist"]


def test_figure_panels_plot_columns_the_probe_logs():
    keys = [key for panels in dash_lib.FIGURE_PANELS.values() for key, _ in panels]
    assert keys == list(PROBE_KEYS) and set(keys) <= set(BN_COLUMNS)


def test_a_runs_probe_layers_come_in_the_models_order(tmp_path):
    layers = [("b.norm", "ln"), ("a.norm", "bn"), ("c.norm", "pn")]
    run = write_probe_run(tmp_path / "run", layers)
    assert probe_layers(run) == layers  # by layer_index, not by name
    assert probe_layers(tmp_path / "no_probe_yet") == []
    assert dash_lib.first_bn_layer(layers) == "a.norm"
    assert dash_lib.first_bn_layer([("c.norm", "pn"), ("a.norm", "bn")]) == "c.norm"
    assert dash_lib.first_bn_layer(TRANSFORMER_LN) is None


def test_group_layers_come_from_the_first_root_with_a_bn_run(tmp_path):
    own, committed = tmp_path / "runs", tmp_path / "results" / "runs"
    write_probe_run(committed / "vit" / "cpu" / "norm=bn", [("blocks.0.attn_norm", "bn")])
    assert dash_lib.group_layers("vit", [own, committed]) == ["blocks.0.attn_norm"]
    # a run of the group in the runs folder wins; its LN-only runs name no BN layer
    write_probe_run(own / "vit" / "smoke" / "norm=ln", [("blocks.0.attn_norm", "ln")])
    write_probe_run(own / "vit" / "smoke" / "norm=bn", [("patch_norm", "bn")])
    assert dash_lib.group_layers("vit", [own, committed]) == ["patch_norm"]
    # the same first layer in every run of a sweep: named once
    write_probe_run(own / "vit" / "smoke" / "norm=bn,seed=1", [("patch_norm", "bn")])
    assert dash_lib.group_layers("vit", [own, committed]) == ["patch_norm"]


def test_a_group_without_runs_is_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NORMLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no run of group 'table1'.*--layer"):
        dash_lib.group_layers("table1", dash_lib.runs_roots())
    assert _script("wandb_dashboard").main(["--group", "table1", "--print-spec"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("wandb_dashboard: error: no run of group 'table1'")


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # wandb-workspaces' pydantic v1 validators
def test_dashboard_spec_builds_a_wandb_workspace():
    pytest.importorskip("wandb_workspaces")
    spec = dash_lib.dashboard_spec(["cifar10_resnet20"], ["stem_norm"], "normlab", None)
    workspace = dash_lib.build_workspace(spec, entity="someone")
    view = workspace._to_model().model_dump()  # what .save() would upload
    text = json.dumps(view, ensure_ascii=False)
    assert all(f"probe/stem_norm/{k}" in text for k in PROBE_KEYS)
    assert [s.name for s in workspace.sections][0].startswith("Figure 2")
    assert "Group" in repr(workspace.runset_settings.filters)


def test_missing_results_folder_is_one_sentence(tmp_path, capsys):
    rc = _script("wandb_dashboard").main(
        ["--group", "g", "--results", str(tmp_path / "nope"), "--wandb-dir", str(tmp_path / "w")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("wandb_dashboard: error: results folder") and "does not exist" in err
    assert not (tmp_path / "w").exists()
