#!/usr/bin/env python
"""wandb dashboard of a sweep group: the regenerated figures and box-statistics tables as one wandb
run of the group, and the panels that mirror Figures 2 and 3 (the probe's series of the first BN
layer against train/step, one line per norm).

    python scripts/wandb_dashboard.py --group cifar10_resnet20 \\
        --results results/fig2/cpu --results results/fig3/cpu    # log figures + tables
    python scripts/wandb_dashboard.py --group cifar10_resnet20      # only the dashboard panels
    python scripts/wandb_dashboard.py --group cifar10_resnet20 --print-spec   # show them, no wandb
    python scripts/wandb_dashboard.py --group iwslt14_transformer --out dashboard.yaml

Offline unless you are logged in (WANDB_API_KEY or `wandb login`), as for logger=wandb: the offline
run lands in $NORMLAB_RUNS/wandb_figures (default runs/), where `make wandb-sync` finds it. Logged in
and with `pip install wandb-workspaces`, the panels are saved as a workspace view of the project;
otherwise --print-spec / --out give their definition (also stored in the run's artifact).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from normlab.tracking.wandb_mirror import _logged_in

# The probe's keys the training loop logs as probe/<layer>/<key>, per figure, with the paper's label.
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
# The first BN-family layer of each experiment's model (the layer the paper's figures show).
FIRST_LAYER = {
    "iwslt14_transformer": "encoder_layers.0.self_attn_norm",
    "table1": "encoder_layers.0.self_attn_norm",
}
DEFAULT_LAYER = "stem_norm"  # ResNet-20: cifar10_resnet20, cnn_norms
FIGURES_JOB_TYPE = "figures"  # the run holding the figures; kept out of the panels' runs
X_AXIS = "train/step"


def dashboard_spec(
    groups: list[str], layers: list[str], project: str, entity: str | None
) -> dict[str, Any]:
    """The panels as plain data: one line plot per probe key, y = that key of every layer."""
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--group", action="append", required=True, help="wandb group = experiment (repeatable)"
    )
    ap.add_argument(
        "--results", action="append", type=Path, default=[], help="a folder of figures and CSVs"
    )
    ap.add_argument(
        "--layer",
        action="append",
        help="probe layer to plot (repeatable; default: each group's first BN layer)",
    )
    ap.add_argument("--project", default="normlab")
    ap.add_argument("--entity", default=None)
    ap.add_argument("--mode", choices=["online", "offline", "disabled"], default=None)
    ap.add_argument(
        "--wandb-dir",
        type=Path,
        default=Path(os.environ.get("NORMLAB_RUNS", "runs")) / "wandb_figures",
        help="where the local wandb run goes (default: $NORMLAB_RUNS/wandb_figures)",
    )
    ap.add_argument("--out", type=Path, help="also write the panel definition here (.json, .yaml)")
    ap.add_argument(
        "--print-spec", action="store_true", help="print the panel definition; log nothing"
    )
    args = ap.parse_args(argv)

    for folder in args.results:
        if not folder.is_dir():
            print(
                f"wandb_dashboard: error: results folder {folder} does not exist; "
                "make it with `make fig2` / `make fig3` or pass the folder they wrote",
                file=sys.stderr,
            )
            return 2
        if not any(folder.glob("*.png")) and not any(folder.glob("*.csv")):
            print(
                f"wandb_dashboard: error: {folder} has no figures (*.png) or tables (*.csv); "
                "pass a folder written by scripts/plot_batch_stats.py",
                file=sys.stderr,
            )
            return 2
    layers = args.layer or list(
        dict.fromkeys(FIRST_LAYER.get(g, DEFAULT_LAYER) for g in args.group)
    )
    spec = dashboard_spec(args.group, layers, args.project, args.entity)
    if args.out:
        write_spec(spec, args.out)
        print(f"wrote the panel definition to {args.out}", file=sys.stderr)
    if args.print_spec:
        print(json.dumps(spec, indent=2, ensure_ascii=False))
        return 0
    mode = args.mode or ("online" if _logged_in() else "offline")
    if args.results:
        run_id, run_dir = log_results(args.results, spec, mode, args.wandb_dir)
        print(f"logged {len(args.results)} results folder(s) to wandb run {run_id} ({mode})")
        if mode == "offline":
            print(f"  offline run in {run_dir}: upload it with `make wandb-sync`")
    if mode != "online":
        print(
            f"{mode}: no workspace view saved; after `make wandb-sync`, log in and rerun with "
            "only --group to save it, or see the panels with --print-spec"
        )
        return 0
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        print(
            "wandb-workspaces is not installed, so no workspace view was saved; "
            "`pip install wandb-workspaces`, or build the panels by hand from --print-spec"
        )
        return 0
    print(f"workspace view saved: {save_workspace(spec)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
