"""What `make fig2x2` writes into results/fig2x2/<scale>/: fig2x2.png/.svg (first BN layer, one
panel per cell), fig2x2_all_layers.png/.svg (the median over every probed BN layer), fig2x2_boxes.png
/.svg (Figure 2's box panels with the four runs side by side), fig2x2_ratios.csv (the two-way table
and verdict per metric and view), fig2x2_boxes.csv (box statistics per cell, metric and window),
fig2x2_summary.txt and provenance.json. Everything is written into a staging folder first and moved
in at the end, so a failure leaves the output folder as it was."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from normlab.analysis.batch_stats_figure import box_panels, figure_provenance
from normlab.analysis.batch_stats_summary import provenance_lines
from normlab.analysis.comparisons import boxes, medians, window_ratios
from normlab.analysis.fig2x2 import (
    CELL,
    CELLS,
    DRAWN,
    PAIRS,
    RATIO_COLUMNS,
    RULE,
    SCALE_FREE,
    TABLE,
    Grid,
    headline,
    ratio_row,
    verdict_of,
)
from normlab.analysis.fig2x2_plot import cell_panels
from normlab.analysis.growth import clean_json
from normlab.analysis.series import Series
from normlab.analysis.windows import BoxStats, window_label
from normlab.io_utils import atomic_write_json, atomic_write_text

VIEWS = {"first_bn": "first BN layer", "all_bn": "median over all probed BN layers"}
RATIO_TITLES = {
    "text_over_images_transformer": "text/img (Transf.)",
    "text_over_images_cnn": "text/img (CNN)",
    "transformer_over_cnn_images": "Transf./CNN (img)",
    "transformer_over_cnn_text": "Transf./CNN (text)",
}


def _views(grid: Grid) -> dict[str, dict[str, Series | None]]:
    return {"first_bn": dict(grid.first), "all_bn": dict(grid.all_layers)}


def _notes(grid: Grid) -> dict[str, str]:
    """Per cell, what the all-layers view lacks (the probe's configuration says why)."""
    notes = {}
    for key, s in grid.first.items():
        if grid.all_layers[key] is None:
            how = (s.config.get("probe") or {}).get("layers", "?")
            notes[key] = (
                f"{s.label}: the probe recorded only its first BN layer ({s.layer}; "
                f"probe.layers={how}), so it has no all-layers view and that view's ratios with "
                "it are unknown"
            )
    return notes


def status_note(s: Series) -> str | None:
    """A diverged or unfinished run is plotted from what its probe recorded; say so."""
    status = s.provenance.get("status")
    last = int(s.step.max())
    if status == "diverged":
        return (
            f"{s.label} DIVERGED at step {s.summary.get('diverged_at_step', '?')} (summary.json): "
            f"plotted from the {len(s.step)} steps its probe recorded before (up to step {last}); "
            "its windows are fifths of those steps"
        )
    if status != "complete":
        return f"{s.label} is {status}: plotted from the {len(s.step)} steps probed so far (up to step {last})"
    return None


def ratios_csv(tables: dict[str, dict[str, dict[str, float]]]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, ["view", "metric", "scale_free", *RATIO_COLUMNS, "verdict"])
    w.writeheader()
    for view, rows in tables.items():
        for metric, row in rows.items():
            verdict = verdict_of(row).verdict
            w.writerow(
                {"view": view, "metric": metric, "scale_free": metric in SCALE_FREE}
                | {k: repr(float(v)) for k, v in row.items()}
                | {"verdict": verdict}
            )
    return out.getvalue()


def boxes_csv(views: dict[str, dict[str, Series | None]]) -> str:
    out = io.StringIO()
    fields = ["view", "cell", "arch", "data", "run", "layer", "d", "metric"]
    w = csv.DictWriter(out, [*fields, *BoxStats.__dataclass_fields__])
    w.writeheader()
    for view, series in views.items():
        for key, s in series.items():
            if s is None:
                continue
            cell = CELL[key]
            head = {"view": view, "cell": key, "arch": cell.arch, "data": cell.data}
            head |= {"run": s.label, "layer": s.layer, "d": s.d if view == "first_bn" else ""}
            for metric in TABLE:
                for b in boxes(s, metric):
                    w.writerow(head | {"metric": metric} | b.as_row())
    return out.getvalue()


def _table_lines(rows: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"  {'metric':18s} " + " ".join(f"{RATIO_TITLES[c]:>19s}" for c in RATIO_COLUMNS)]
    lines[0] += "   verdict"
    for metric, row in rows.items():
        if metric == TABLE[len(SCALE_FREE)]:
            lines.append("  -- secondary: these also depend on the input's scale or on d --")
        lines.append(
            f"  {metric:18s} "
            + " ".join(f"{row[c]:19.3g}" for c in RATIO_COLUMNS)
            + f"   {verdict_of(row).verdict}"
        )
    return lines


def _verdict_lines(title: str, rows: dict[str, dict[str, float]]) -> list[str]:
    primary = {m: verdict_of(rows[m]) for m in SCALE_FREE}
    lines = [f"verdict, {title}: {headline(primary)}"]
    lines += [f"  {m}: {v.verdict.upper()} ({v.reason})" for m, v in primary.items()]
    rest = ", ".join(f"{m} -> {verdict_of(r).verdict}" for m, r in rows.items() if m not in primary)
    return [*lines, f"  secondary metrics (not decided on): {rest}"]


def summary_text(
    grid: Grid, tables: dict[str, dict[str, dict[str, float]]], made_with: dict[str, Any]
) -> str:
    lines = [
        "fig2x2: architecture or data? Figure 2's batch-vs-running statistics of BN on "
        f"{{CNN, Transformer}} x {{images, text}}, scale {grid.scale}",
        "",
    ]
    for key, s in grid.first.items():
        c = CELL[key]
        lines.append(
            f"  {s.label} [{c.arch} x {c.data}]: {s.run_dir}, first BN {s.layer} (d={s.d}), "
            f"{grid.layer_counts[key]} BN layer(s) probed, {len(s.step)} probed steps up to step "
            f"{int(s.step.max())}, windows on {s.steps_trained} steps ({s.steps_source}), "
            f"status {s.provenance['status']}"
        )
    notes = [n for n in (status_note(s) for s in grid.first.values()) if n]
    notes += list(_notes(grid).values())
    if notes:
        lines += ["", "notes:", *(f"  {n}" for n in notes)]
    lines += ["", *provenance_lines(list(grid.first.values()), made_with), ""]
    lines.append("median per window, first BN layer:")
    for s in grid.first.values():
        for metric in TABLE:
            lines.append(
                f"  {s.label:26s} {metric:18s} "
                + "  ".join(
                    f"{window_label(w)}: {m:9.3g}" for w, m in enumerate(medians(s, metric))
                )
            )
    lines += ["", "per-window ratios of the scale-free metrics, first BN layer:"]
    for pairs in PAIRS.values():
        for name, num, den in pairs:
            for metric in SCALE_FREE:
                r = window_ratios(grid.first[num], metric, grid.first[den], metric)
                lines.append(
                    f"  {RATIO_TITLES[name]:19s} {metric:18s} " + "  ".join(f"{x:7.3g}" for x in r)
                )
    for view, rows in tables.items():
        lines += [
            "",
            f"two-way table, {VIEWS[view]} (median over windows of the per-window median ratios):",
        ]
        lines += _table_lines(rows)
    lines += [
        "",
        f"verdict rule: {RULE}.",
        "decided on the scale-free metrics " + ", ".join(SCALE_FREE),
    ]
    lines[-1] += " (blind to the input's scale and to d, which differs across the four models)."
    for view, rows in tables.items():
        lines += ["", *_verdict_lines(VIEWS[view], rows)]
    return "\n".join(lines) + "\n"


def provenance(grid: Grid, made_with: dict[str, Any]) -> dict[str, Any]:
    prov = figure_provenance(list(grid.first.values()), "fig2x2", made_with)
    for run, key in zip(prov["runs"], grid.first, strict=True):
        c = CELL[key]
        run |= {"cell": key, "arch": c.arch, "data": c.data, "experiment": c.experiment}
        run["bn_layers_probed"] = grid.layer_counts[key]
    return prov


def _write_all(grid: Grid, out: Path) -> None:
    from normlab.tracking.provenance import environment, git_info

    views = _views(grid)
    tables = {view: {m: ratio_row(series, m) for m in TABLE} for view, series in views.items()}
    notes = _notes(grid)
    title = f"Architecture or data? BN batch vs running statistics, scale {grid.scale}"
    cell_panels(views["first_bn"], {}, DRAWN, f"{title}: first BN layer", out / "fig2x2")
    panel_notes = {
        k: "the probe recorded only its first BN layer: no all-layers view" for k in notes
    }
    cell_panels(
        views["all_bn"], panel_notes, DRAWN, f"{title}: median over all probed BN layers",
        out / "fig2x2_all_layers", show_d=False,
    )  # fmt: skip
    ordered = [grid.first[c.key] for c in CELLS]
    box_panels(ordered, DRAWN, f"{title}: first BN layer", out / "fig2x2_boxes")
    atomic_write_text(out / "fig2x2_ratios.csv", ratios_csv(tables))
    atomic_write_text(out / "fig2x2_boxes.csv", boxes_csv(views))
    made_with = git_info() | {"plot_env": environment("cpu")}
    atomic_write_text(out / "fig2x2_summary.txt", summary_text(grid, tables, made_with))
    atomic_write_json(out / "provenance.json", clean_json(provenance(grid, made_with)))


def write_outputs(grid: Grid, out: Path) -> Path:
    """Stage every file next to `out`, then move them in (one rename each)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.staging-") as tmp:
        _write_all(grid, Path(tmp))
        out.mkdir(exist_ok=True)
        for path in sorted(Path(tmp).iterdir()):
            os.replace(path, out / path.name)
    return out
