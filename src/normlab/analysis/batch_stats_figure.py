"""Figures 2, 3 and 4 of the paper from run directories: box plots per 20% window of training.

For each run (e.g. ResNet-20/CIFAR-10 and Transformer_BN/IWSLT14) the probe series of one layer
(the first BN layer by default) is cut into five windows of the steps it actually trained. Writes,
under the output folder: <fig>.png/.svg (the paper's 1/d metrics; Figure 3 in both gradient
conventions when the runs log loss_normalizer), <fig>_scale_free.png/.svg (1/√d and TID),
<fig>_lines.png/.svg (per step, log y), <fig>_boxes.csv (also the *_rel metrics: over the input
scale), <fig>_summary.txt, provenance.json; Figure 3 also <fig>_steps.csv (the gradients per step in
both conventions); Figure 2 also fig2_growth.png/.svg/.json when the runs log their input scale.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from normlab.analysis.batch_stats_summary import summary_text
from normlab.analysis.comparisons import boxes
from normlab.analysis.growth import clean_json, growth_analysis, growth_text
from normlab.analysis.plotting import COLORS, pyplot, save_figure
from normlab.analysis.series import Series, load_series, relative_name
from normlab.analysis.windows import WINDOWS, BoxStats, window_label, window_of
from normlab.io_utils import atomic_write_json, atomic_write_text

__all__ = ["FIGURES", "Series", "load_series", "make_figure"]

# (column, axis label) per figure; the first list is the paper's, the second the scale-free companions.
FIGURES = {
    "fig2": (
        [
            ("mean_dist", "mean distance  (1/d)‖μ_B − μ‖₂"),
            ("var_dist", "variance distance  (1/d)‖σ²_B − σ²‖₂"),
        ],
        [
            ("mean_rms_dist", "(1/√d)‖μ_B − μ‖₂"),
            ("var_rms_dist", "(1/√d)‖σ²_B − σ²‖₂"),
            ("tid_mean", "TID (mean)"),
            ("tid_var", "TID (variance)"),
        ],
    ),
    "fig3": (
        [("grad_mean", "(1/d)‖∂L/∂μ_B‖₂"), ("grad_var", "(1/d)‖∂L/∂σ²_B‖₂")],
        [],
    ),
    # BN's variance statistic vs PowerNorm's quadratic mean (the official repo's BN-vs-PN-V figure):
    # for a BN layer stat = σ², for a PN layer stat = ψ².
    "fig4": (
        [
            ("stat_dist", "(1/d)‖σ²_B − σ²‖₂ (BN), (1/d)‖ψ²_B − ψ²‖₂ (PN)"),
            ("grad_stat", "(1/d)‖∂L/∂σ²_B‖₂ (BN), (1/d)‖∂L/∂ψ²_B‖₂ (PN)"),
        ],
        [
            ("stat_rms_dist", "(1/√d)‖σ²_B − σ²‖₂, (1/√d)‖ψ²_B − ψ²‖₂"),
            ("tid_stat", "TID (variance) / TID (ψ)"),
        ],
    ),
}
# Scale-free companions, in the CSV and the summary: each 1/d and 1/√d metric over the input scale,
# and the input scale itself.
RELATIVE = {
    "fig2": [relative_name(c) for c in ("mean_dist", "var_dist", "mean_rms_dist", "var_rms_dist")]
    + ["batch_var_mean"],
    "fig3": [relative_name(c) for c in ("grad_mean", "grad_var")] + ["batch_var_mean"],
    "fig4": [relative_name(c) for c in ("stat_dist", "stat_rms_dist", "grad_stat")]
    + ["stat_scale"],
}
# Figure 3 in fairseq's convention: the gradients of the summed loss (× loss_normalizer).
SUMMED = [
    ("grad_mean_summed", "(1/d)‖∂L_sum/∂μ_B‖₂  (summed loss)"),
    ("grad_var_summed", "(1/d)‖∂L_sum/∂σ²_B‖₂  (summed loss)"),
]
MEAN_LABELS = {
    "grad_mean": "(1/d)‖∂L/∂μ_B‖₂  (mean loss, as logged)",
    "grad_var": "(1/d)‖∂L/∂σ²_B‖₂  (mean loss, as logged)",
}


def box_panels(all_series: list[Series], metrics, title: str, path_stem: Path) -> None:
    plt = pyplot()
    n = len(metrics)
    cols = 2
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.2 * rows), squeeze=False)
    width = 0.8 / len(all_series)
    for ax, (column, ylabel) in zip(axes.flat, metrics, strict=False):
        for i, s in enumerate(all_series):
            stats = [
                dict(
                    med=b.median,
                    q1=b.q1,
                    q3=b.q3,
                    whislo=b.whisker_low,
                    whishi=b.whisker_high,
                    fliers=_fliers(s, column, b),
                    label="",
                )
                for b in boxes(s, column)
            ]
            pos = np.arange(WINDOWS) + (i - (len(all_series) - 1) / 2) * width
            art = ax.bxp(
                stats,
                positions=pos,
                widths=width * 0.9,
                patch_artist=True,
                flierprops=dict(marker="o", markersize=3, alpha=0.5, markeredgecolor=COLORS[i]),
            )
            for patch in art["boxes"]:
                patch.set_facecolor(COLORS[i])
                patch.set_alpha(0.45)
            ax.plot(
                [], [], color=COLORS[i], lw=6, alpha=0.45, label=f"{s.label} ({s.layer}, d={s.d})"
            )
        ax.set_xticks(range(WINDOWS), [window_label(w) for w in range(WINDOWS)])
        ax.set_xlabel("percent of the steps trained")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=9, loc="upper left")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    save_figure(fig, path_stem)
    plt.close(fig)


def _fliers(s: Series, column: str, b: BoxStats) -> np.ndarray:
    v = s.columns[column][window_of(s.frac) == b.window]
    return v[(v < b.whisker_low) | (v > b.whisker_high)]


def _line_panels(all_series: list[Series], metrics, title: str, path_stem: Path) -> None:
    plt = pyplot()
    cols = min(len(metrics), 2)
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.0 * rows), squeeze=False)
    for ax, (column, ylabel) in zip(axes.flat, metrics, strict=True):
        for i, s in enumerate(all_series):
            v = s.columns[column]
            ax.plot(100 * s.frac, v, lw=0.6, alpha=0.8, color=COLORS[i], label=s.label)
        ax.set_yscale("log")
        ax.set_xlabel("percent of the steps trained")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes.flat[0].legend(fontsize=9)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    save_figure(fig, path_stem)
    plt.close(fig)


def _csv(all_series: list[Series], metrics: list[str]) -> str:
    out = io.StringIO()
    fields = ["run", "layer", "d", "metric", *BoxStats.__dataclass_fields__]
    w = csv.DictWriter(out, fieldnames=fields)
    w.writeheader()
    for s in all_series:
        for column in metrics:
            for b in boxes(s, column):
                w.writerow(
                    {"run": s.label, "layer": s.layer, "d": s.d, "metric": column} | b.as_row()
                )
    return out.getvalue()


def _steps_csv(all_series: list[Series], columns: list[str]) -> str:
    """Figure 3 per step: the logged gradients, loss_normalizer and their products."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["run", "step", "frac", *columns])
    for s in all_series:
        values = [s.columns.get(c, np.full(s.step.shape, np.nan)) for c in columns]
        for i, step in enumerate(s.step):
            w.writerow(
                [s.label, int(step), repr(float(s.frac[i]))] + [repr(float(v[i])) for v in values]
            )
    return out.getvalue()


RUN_KEYS = ("data_source", "data_detail", "scale", "wall_s", "steps", "device", "cpu", "gpu")


def figure_provenance(all_series: list[Series], fig: str, made_with: dict) -> dict:
    return {
        "figure": fig,
        "made_with": made_with,
        "runs": [
            {
                "label": s.label,
                "run_dir": str(s.run_dir),
                "layer": s.layer,
                "d": s.d,
                "steps_trained": s.steps_trained,
                "steps_trained_from": s.steps_source,
            }
            | {k: s.summary.get(k) for k in (*RUN_KEYS, "torch", "config")}
            # over every segment of a resumed run: summary.json's own git_dirty is the first's
            | s.provenance
            for s in all_series
        ],
    }


def make_figure(
    runs: list[tuple[str, str | Path, str | None]], fig: str, out_dir: str | Path
) -> Path:
    """Write figure `fig` ("fig2", "fig3" or "fig4") for runs given as (label, run_dir, layer)."""
    if fig not in FIGURES:
        raise ValueError(f"unknown figure {fig!r}; valid: {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_series = [load_series(label, run, layer) for label, run, layer in runs]
    paper, scale_free = FIGURES[fig]
    summed = fig == "fig3" and all(s.has("loss_normalizer") for s in all_series)
    drawn = [(c, MEAN_LABELS.get(c, y)) for c, y in paper] if summed else list(paper)
    drawn += SUMMED if summed else []
    title = " vs ".join(s.label for s in all_series)
    what = "gradients of the batch statistics" if fig == "fig3" else "batch vs running statistics"
    box_panels(all_series, drawn, f"{title}: {what}", out_dir / fig)
    if scale_free:
        box_panels(
            all_series, scale_free, f"{title}: scale-free variants", out_dir / f"{fig}_scale_free"
        )
    _line_panels(all_series, drawn, f"{title}: per step", out_dir / f"{fig}_lines")
    boxed = [c for c, _ in paper + scale_free]
    table = boxed + RELATIVE[fig]
    if summed:
        table += [c for c, _ in SUMMED] + ["loss_normalizer"]
    atomic_write_text(out_dir / f"{fig}_boxes.csv", _csv(all_series, table))
    if fig == "fig3":
        cols = ["grad_mean", "grad_var"]
        if summed:
            cols += ["loss_normalizer", "grad_mean_summed", "grad_var_summed"]
        atomic_write_text(out_dir / f"{fig}_steps.csv", _steps_csv(all_series, cols))
    growth_lines = None
    if fig == "fig2" and any(s.input_scale_column for s in all_series):
        from normlab.analysis.growth_plot import growth_figure

        result = growth_analysis(all_series)
        growth_figure(all_series, result, out_dir / "fig2_growth")
        atomic_write_json(out_dir / "fig2_growth.json", clean_json(result))
        growth_lines = growth_text(result)
    from normlab.tracking.provenance import environment, git_info

    made_with = git_info() | {"plot_env": environment("cpu")}
    text = summary_text(all_series, fig, table, boxed, made_with, summed, growth_lines)
    atomic_write_text(out_dir / f"{fig}_summary.txt", text)
    atomic_write_json(
        out_dir / "provenance.json", clean_json(figure_provenance(all_series, fig, made_with))
    )
    return out_dir
