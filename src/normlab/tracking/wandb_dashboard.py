"""wandb dashboard of a sweep group: the regenerated figures and box-statistics tables as one wandb
run of the group, and the panels that mirror Figures 2 and 3 (the probe's series of the group's
first BN layer against train/step, one line per norm). `scripts/wandb_dashboard.py` is its command.

The layer to plot is read from the group's runs, not named here: a run's probe rows name each norm
layer by its module name (`probe/<layer>/<column>` on wandb), and the layer of the figures is the
first BN-family layer among them (the lowest `layer_index` of kind bn or pn, as the figures take
it). The runs are looked for where Hydra puts a group's runs, `<root>/<group>/<scale>/<job>/`,
under the runs folder ($NORMLAB_RUNS, default runs/) and then the committed copies in
results/runs/.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from normlab.errors import UserError
from normlab.probe.store import probe_layers
from normlab.tracking.wandb_mirror import logged_in

# The probe's columns the training loop logs as probe/<layer>/<column>, per figure, with the
# paper's label.
FIGURE_PANELS = {
    "Figure 2: batch vs running statistics": [
        ("mean_dist", "(1/d)‖μ_B − μ‖₂"),
        ("var_dist", "(1/d)‖σ²_B − σ²‖₂"),
        ("tid_mean", "TID (mean)"),
        ("tid_var", "TID (variance)"),
    ],
    "Figure 3: gradients of the batch statistics": [
        ("grad_mean", "(1/d)‖∂L/∂μ_B‖₂"),
        ("grad_var", "(1/d)‖∂L/∂σ²_B‖₂"),
    ],
}
FIGURES_JOB_TYPE = "figures"  # the run holding the figures; kept out of the panels' runs
X_AXIS = "train/step"
RUNNING_STATS_KINDS = ("bn", "pn")  # the probe's kinds of a layer with running statistics


def runs_roots() -> list[Path]:
    """Where a group's runs are looked for: the runs folder, then the committed copies."""
    return [Path(os.environ.get("NORMLAB_RUNS", "runs")), Path("results") / "runs"]


def first_bn_layer(layers: Sequence[tuple[str, str]]) -> str | None:
    """The first layer of kind bn or pn in a run's (layer, kind) list (in the model's order)."""
    return next((name for name, kind in layers if kind in RUNNING_STATS_KINDS), None)


def group_layers(group: str, roots: Sequence[Path]) -> list[str]:
    """The first BN-family layer of each run of `group` that has probe rows, without repeats,
    from the first root that holds any such run."""
    for root in roots:
        runs = sorted(p.parent for p in (Path(root) / group).glob("*/*/probe") if p.is_dir())
        found = [first_bn_layer(probe_layers(run)) for run in runs]
        if any(found):
            return list(dict.fromkeys(name for name in found if name is not None))
    where = " or ".join(str(Path(r) / group) for r in roots)
    raise UserError(
        f"no run of group {group!r} with a BN-family layer in its probe rows under {where}; "
        "name the layer to plot with --layer (its module name, as in probe/<layer>/<column>) "
        "or point NORMLAB_RUNS at the folder of the group's runs"
    )


def dashboard_spec(
    groups: list[str], layers: list[str], project: str, entity: str | None
) -> dict[str, Any]:
    """The panels as plain data: one line plot per probe column, y = that column of every layer."""
    sections = [
        {
            "name": f"{title} ({', '.join(layers)})",
            "panels": [
                {
                    "title": f"{key}: {label}",
                    "x": X_AXIS,
                    "y": [f"probe/{layer}/{key}" for layer in layers],
                    "log_y": True,
                }
                for key, label in panels
            ],
        }
        for title, panels in FIGURE_PANELS.items()
    ]
    return {
        "name": f"normlab {', '.join(groups)}: Figures 2 and 3",
        "project": project,
        "entity": entity,
        "runs": {
            "filter": {"group": groups, "job_type_not": FIGURES_JOB_TYPE},
            "group_by": (["group"] if len(groups) > 1 else []) + ["job_type"],  # job_type = norm
        },
        "x_axis": X_AXIS,
        "sections": sections,
    }


def build_workspace(spec: dict[str, Any], entity: str) -> Any:
    """The spec as a wandb-workspaces Workspace (not saved)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    by = {"group": ws.Metric("Group"), "job_type": ws.Metric("JobType")}
    runs = spec["runs"]
    return ws.Workspace(
        entity=entity,
        project=spec["project"],
        name=spec["name"],
        sections=[
            ws.Section(
                name=section["name"],
                is_open=True,
                panels=[
                    wr.LinePlot(title=p["title"], x=p["x"], y=p["y"], log_y=p["log_y"])
                    for p in section["panels"]
                ],
            )
            for section in spec["sections"]
        ],
        settings=ws.WorkspaceSettings(x_axis=spec["x_axis"]),
        runset_settings=ws.RunsetSettings(
            filters=ws.And(
                ws.Metric("Group").isin(runs["filter"]["group"]),
                ws.Metric("JobType") != runs["filter"]["job_type_not"],
            ),
            groupby=[by[k] for k in runs["group_by"]],
        ),
    )


def _cell(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def csv_table(path: Path) -> Any:
    import wandb

    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return wandb.Table(
        columns=rows[0], data=[[_cell(c) for c in r] for r in rows[1:]], allow_mixed_types=True
    )


def check_results_folder(folder: Path) -> None:
    """Fail with one sentence unless `folder` holds figures or tables to log."""
    if not folder.is_dir():
        raise UserError(
            f"results folder {folder} does not exist; make it with `make fig2` / `make fig3` or "
            "pass the folder they wrote"
        )
    if not any(folder.glob("*.png")) and not any(folder.glob("*.csv")):
        raise UserError(
            f"{folder} has no figures (*.png) or tables (*.csv); pass a folder written by "
            "scripts/plot_batch_stats.py"
        )


def log_results(
    results: list[Path], spec: dict[str, Any], mode: str, wandb_dir: Path
) -> tuple[str, Path]:
    """One wandb run of the group: each folder's PNGs as images, CSVs as tables, all its files as
    an artifact. Returns the run's id and its local folder."""
    import wandb

    wandb_dir.mkdir(parents=True, exist_ok=True)
    group = " + ".join(spec["runs"]["filter"]["group"])
    run = wandb.init(
        project=spec["project"],
        entity=spec["entity"],
        group=spec["runs"]["filter"]["group"][0],
        job_type=FIGURES_JOB_TYPE,
        name=f"figures {group}",
        tags=sorted({d.name for d in results}),  # the scales, e.g. cpu
        config={"results": [str(d) for d in results]},
        dir=str(wandb_dir),
        mode=mode,
    )
    try:
        for folder in results:
            prefix = f"{folder.parent.name}/{folder.name}"  # e.g. fig2/cpu
            media: dict[str, Any] = {
                f"{prefix}/{p.stem}": wandb.Image(str(p)) for p in sorted(folder.glob("*.png"))
            }
            media |= {f"{prefix}/{p.stem}": csv_table(p) for p in sorted(folder.glob("*.csv"))}
            run.log(media)
            name = re.sub(r"[^\w.-]+", "-", f"{group}-{prefix}")
            artifact = wandb.Artifact(name, type="figures", description=f"{folder} ({group})")
            artifact.add_dir(str(folder))
            with artifact.new_file("wandb_dashboard.json") as f:
                json.dump(spec, f, indent=2, ensure_ascii=False)
            run.log_artifact(artifact)
        return run.id, Path(run.dir).parent
    finally:
        run.finish()


def write_spec(spec: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in (".yaml", ".yml"):
        import yaml

        out.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    else:
        out.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n")


def save_workspace(spec: dict[str, Any]) -> str:
    """Save the panels as a workspace view (needs a login and wandb-workspaces); its URL."""
    import wandb

    entity = spec["entity"] or wandb.Api().default_entity
    return build_workspace(spec, entity).save().url


def make_dashboard(
    group: list[str],
    *,
    results: Sequence[Path] = (),
    layer: Sequence[str] | None = None,
    project: str = "normlab",
    entity: str | None = None,
    mode: str | None = None,
    wandb_dir: Path,
    out: Path | None = None,
    print_spec: bool = False,
    roots: Sequence[Path] | None = None,
) -> None:
    """Everything `scripts/wandb_dashboard.py` does, its messages printed; the arguments are its
    options (`group`, `layer`: the repeated ones, as lists; `layer` None: each group's first BN
    layer, read from its runs under `roots`, default `runs_roots()`)."""
    results = list(results)
    for folder in results:
        check_results_folder(folder)
    layers = list(layer or [])
    if not layers:
        roots = runs_roots() if roots is None else roots
        layers = list(dict.fromkeys(name for g in group for name in group_layers(g, roots)))
    spec = dashboard_spec(group, layers, project, entity)
    if out:
        write_spec(spec, out)
        print(f"wrote the panel definition to {out}", file=sys.stderr)
    if print_spec:
        print(json.dumps(spec, indent=2, ensure_ascii=False))
        return
    mode = mode or ("online" if logged_in() else "offline")
    if results:
        run_id, run_dir = log_results(results, spec, mode, wandb_dir)
        print(f"logged {len(results)} results folder(s) to wandb run {run_id} ({mode})")
        if mode == "offline":
            print(f"  offline run in {run_dir}: upload it with `make wandb-sync`")
    if mode != "online":
        print(
            f"{mode}: no workspace view saved; after `make wandb-sync`, log in and rerun with "
            "only --group to save it, or see the panels with --print-spec"
        )
        return
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        print(
            "wandb-workspaces is not installed, so no workspace view was saved; "
            "`pip install wandb-workspaces`, or build the panels by hand from --print-spec"
        )
        return
    print(f"workspace view saved: {save_workspace(spec)}")
