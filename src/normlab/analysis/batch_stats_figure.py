"""Figures 2 and 3 of the paper from run directories: box plots per 20% window of training.

For each run (e.g. ResNet-20/CIFAR-10 and Transformer_BN/IWSLT14) the probe series of one layer
(the first BN layer by default) is cut into five windows by fraction of training. Writes, under the
output folder: <fig>.png/.svg (the paper's 1/d metrics), <fig>_scale_free.png/.svg (1/√d and TID),
<fig>_lines.png/.svg (per step, log y), <fig>_boxes.csv, <fig>_summary.txt, provenance.json.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normlab.analysis.windows import WINDOWS, BoxStats, boxes_per_window, window_label
from normlab.io_utils import atomic_write, atomic_write_json, atomic_write_text
from normlab.probe.store import read_probe

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
# The BN column and the PN column of each fig4 quantity.
STAT_ALIASES = {
    "stat_dist": ("var_dist", "phi_dist"),
    "grad_stat": ("grad_var", "grad_phi"),
    "stat_rms_dist": ("var_rms_dist", "phi_rms_dist"),
    "tid_stat": ("tid_var", "tid_phi"),
}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


@dataclass
class Series:
    label: str
    run_dir: Path
    layer: str
    d: int
    frac: np.ndarray
    step: np.ndarray
    columns: dict[str, np.ndarray]
    summary: dict


def load_series(label: str, run_dir: str | Path, layer: str | None = None) -> Series:
    """The probe rows of one layer of a run (default: its first BN layer)."""
    run_dir = Path(run_dir)
    df = read_probe(run_dir).to_pandas()
    bn = df[df["kind"].isin(["bn", "pn"])]
    if bn.empty:
        raise ValueError(f"{run_dir} has no BN or PN layer in its probe data")
    if layer is None:
        layer = str(bn.loc[bn["layer_index"].idxmin(), "layer"])
    rows = bn[bn["layer"] == layer].sort_values("step")
    if rows.empty:
        raise ValueError(
            f"{run_dir} has no probe rows for layer {layer!r}; its layers: {sorted(bn['layer'].unique())}"
        )
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    cols = {c: rows[c].to_numpy(dtype=float) for c in rows.columns if rows[c].dtype.kind == "f"}
    kind = str(rows["kind"].iloc[0])
    for alias, (bn_col, pn_col) in STAT_ALIASES.items():
        col = pn_col if kind == "pn" else bn_col
        if col in cols:
            cols[alias] = cols[col]
    return Series(
        label,
        run_dir,
        layer,
        int(rows["d"].iloc[0]),
        rows["frac"].to_numpy(float),
        rows["step"].to_numpy(),
        cols,
        summary,
    )


def _boxes(series: Series, column: str) -> list[BoxStats]:
    return boxes_per_window(series.frac, series.columns[column])


def _box_panels(all_series: list[Series], metrics, title: str, path_stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(metrics)
    cols = 2
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.2 * rows), squeeze=False)
    width = 0.8 / len(all_series)
    for ax, (column, ylabel) in zip(axes.flat, metrics, strict=False):
        for i, s in enumerate(all_series):
            boxes = _boxes(s, column)
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
                for b in boxes
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
        ax.set_xlabel("percent of training")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=9, loc="upper left")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    _save(fig, path_stem)
    plt.close(fig)


def _fliers(s: Series, column: str, b: BoxStats) -> np.ndarray:
    from normlab.analysis.windows import window_of

    v = s.columns[column][window_of(s.frac) == b.window]
    return v[(v < b.whisker_low) | (v > b.whisker_high)]


def _line_panels(all_series: list[Series], metrics, title: str, path_stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.0), squeeze=False)
    for ax, (column, ylabel) in zip(axes.flat, metrics, strict=True):
        for i, s in enumerate(all_series):
            v = s.columns[column]
            ax.plot(100 * s.frac, v, lw=0.6, alpha=0.8, color=COLORS[i], label=s.label)
        ax.set_yscale("log")
        ax.set_xlabel("percent of training")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes.flat[0].legend(fontsize=9)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    _save(fig, path_stem)
    plt.close(fig)


def _save(fig, path_stem: Path) -> None:
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150)
        atomic_write(path_stem.with_suffix(f".{ext}"), lambda f, b=buf: f.write(b.getvalue()))


def _csv(all_series: list[Series], metrics) -> str:
    out = io.StringIO()
    fields = ["run", "layer", "d", "metric", *BoxStats.__dataclass_fields__]
    w = csv.DictWriter(out, fieldnames=fields)
    w.writeheader()
    for s in all_series:
        for column, _ in metrics:
            for b in _boxes(s, column):
                w.writerow(
                    {"run": s.label, "layer": s.layer, "d": s.d, "metric": column} | b.as_row()
                )
    return out.getvalue()


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _verdicts(base: Series, other: Series, paper_metrics, claim: str) -> list[str]:
    """The paper's three claims, judged with thresholds stated in the text."""
    lines = [
        "verdicts on the paper's claims (first run = vision baseline, last run = Transformer):"
    ]
    for column, _ in paper_metrics:
        ob, bb = _boxes(other, column), _boxes(base, column)
        ratios = [_ratio(o.median, b.median) for o, b in zip(ob, bb, strict=True)]
        if all(r >= 10 for r in ratios):
            far = "HOLDS (>= 10x in every window)"
        elif all(r > 1 for r in ratios):
            far = f"PARTLY (larger in every window, but {min(ratios):.3g}x at least, not orders of magnitude)"
        elif any(r > 1 for r in ratios):
            far = "MIXED (larger in some windows only)"
        else:
            far = "DOES NOT HOLD (smaller for the Transformer in every window)"
        lines.append(
            f"  (1) {claim}, {column}: {far}; ratios " + ", ".join(f"{r:.3g}" for r in ratios)
        )
        # Outliers as a fraction of the probed steps: the runs need not have the same length.
        o_frac = sum(b.outliers for b in ob) / max(sum(b.n for b in ob), 1)
        b_frac = sum(b.outliers for b in bb) / max(sum(b.n for b in bb), 1)
        o_ext = max(_ratio(b.max, b.median) for b in ob)
        b_ext = max(_ratio(b.max, b.median) for b in bb)
        extreme = "HOLDS" if o_ext > b_ext and o_frac >= b_frac else "DOES NOT HOLD"
        lines.append(
            f"  (2) extreme outliers, {column}: {extreme}; outlier share {o_frac:.1%} vs {b_frac:.1%}, "
            f"largest max/median {o_ext:.3g} vs {b_ext:.3g}"
        )
        growth = _ratio(ob[-1].median, ob[0].median)
        trend = (
            "GROWS (>2x)" if growth > 2 else ("SHRINKS (<0.5x)" if growth < 0.5 else "ROUGHLY FLAT")
        )
        lines.append(
            f"  (3) grows during training, {column} ({other.label}): {trend}; last/first "
            f"window median {growth:.3g} (paper's variance distance: 1.37/0.0505 = 27)"
        )
    return lines


def _summary(all_series: list[Series], fig: str, metrics) -> str:
    """Median ratio (last run / first run) per window, outliers, trend, and verdicts."""
    base, other = all_series[0], all_series[-1]
    single = len(all_series) == 1  # e.g. bench-gpu's paper-scale ResNet-20 half of Figure 2
    header = f"{fig}: {base.label} ({base.layer}, d={base.d})"
    if not single:
        header = f"{fig}: {other.label} ({other.layer}, d={other.d}) vs {base.label} ({base.layer}, d={base.d})"
    lines = [header, ""]
    for s in all_series:
        steps = int(s.step.max()) if len(s.step) else 0
        lines.append(
            f"  {s.label}: {len(s.step)} probed steps up to step {steps}, "
            f"{s.summary.get('data_source', '?')}, scale {s.summary.get('scale', '?')}"
        )
    lines.append("")
    if single:
        lines.append(f"median per window of {base.label}:")
    else:
        lines.append(f"median ratio {other.label} / {base.label} per window:")
    for column, _ in metrics:
        if single:
            values = [b.median for b in _boxes(base, column)]
        else:
            ob, bb = _boxes(other, column), _boxes(base, column)
            values = [_ratio(o.median, b.median) for o, b in zip(ob, bb, strict=True)]
        lines.append(
            f"  {column:14s} "
            + "  ".join(f"{window_label(w)}: {r:9.3g}" for w, r in enumerate(values))
        )
    lines.append("")
    lines.append("outliers (Tukey 1.5·IQR) per window, and max/median:")
    for s in all_series:
        for column, _ in metrics:
            bx = _boxes(s, column)
            lines.append(
                f"  {s.label:28s} {column:14s} outliers "
                + " ".join(f"{b.outliers:4d}" for b in bx)
                + "   max/median "
                + " ".join(f"{_ratio(b.max, b.median):7.3g}" for b in bx)
            )
    lines.append("")
    lines.append("trend (median of last window / first window):")
    for s in all_series:
        for column, _ in metrics:
            bx = _boxes(s, column)
            lines.append(f"  {s.label:28s} {column:14s} {_ratio(bx[-1].median, bx[0].median):9.3g}")
    if len(all_series) > 1 and fig in ("fig2", "fig3"):
        lines.append("")
        claim = "farther from running stats" if fig == "fig2" else "larger gradients"
        lines += _verdicts(base, other, metrics[:2], claim)
    elif len(all_series) > 1 and fig == "fig4":
        ratios = [
            _ratio(o.median, b.median)
            for o, b in zip(_boxes(other, "stat_dist"), _boxes(base, "stat_dist"), strict=True)
        ]
        smaller = [1 / r if r else float("nan") for r in ratios]
        verdict = (
            "HOLDS"
            if all(x >= 5 for x in smaller)
            else ("PARTLY" if all(x > 1 for x in smaller) else "DOES NOT HOLD")
        )
        lines += [
            "",
            f"claim (official figure): {other.label}'s statistic distance is 5-21x smaller than "
            f"{base.label}'s: {verdict}; {base.label}/{other.label} median per window "
            + ", ".join(f"{x:.3g}" for x in smaller),
        ]
    return "\n".join(lines) + "\n"


def make_figure(
    runs: list[tuple[str, str | Path, str | None]], fig: str, out_dir: str | Path
) -> Path:
    """Write figure `fig` ("fig2" or "fig3") for runs given as (label, run_dir, layer or None)."""
    if fig not in FIGURES:
        raise ValueError(f"unknown figure {fig!r}; valid: {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_series = [load_series(label, run, layer) for label, run, layer in runs]
    paper, scale_free = FIGURES[fig]
    title = " vs ".join(s.label for s in all_series)
    _box_panels(all_series, paper, f"{title}: batch vs running statistics", out_dir / fig)
    if scale_free:
        _box_panels(
            all_series, scale_free, f"{title}: scale-free variants", out_dir / f"{fig}_scale_free"
        )
    _line_panels(all_series, paper, f"{title}: per step", out_dir / f"{fig}_lines")
    metrics = paper + scale_free
    atomic_write_text(out_dir / f"{fig}_boxes.csv", _csv(all_series, metrics))
    atomic_write_text(out_dir / f"{fig}_summary.txt", _summary(all_series, fig, metrics))
    from normlab.tracking.provenance import environment, git_info

    atomic_write_json(
        out_dir / "provenance.json",
        {
            "figure": fig,
            "made_with": git_info() | {"plot_env": environment("cpu")},
            "runs": [
                {"label": s.label, "run_dir": str(s.run_dir), "layer": s.layer, "d": s.d}
                | {
                    k: s.summary.get(k)
                    for k in (
                        "git_commit",
                        "git_dirty",
                        "data_source",
                        "data_detail",
                        "scale",
                        "wall_s",
                        "steps",
                        "device",
                        "cpu",
                        "gpu",
                        "torch",
                        "config",
                    )
                }
                for s in all_series
            ],
        },
    )
    return out_dir
