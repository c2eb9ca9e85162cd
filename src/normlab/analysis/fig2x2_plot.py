"""The 2×2 figures: one panel per cell (rows CNN / Transformer, columns images / text), each with the
window medians and interquartile ranges of Figure 2's metrics, on one shared log axis so that the
cells compare at a glance."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from normlab.analysis.comparisons import boxes
from normlab.analysis.fig2x2 import ARCHS, CELLS, DATA
from normlab.analysis.plotting import COLORS, pyplot, save_figure
from normlab.analysis.series import Series
from normlab.analysis.windows import WINDOWS, window_label

METRIC_COLORS = (*COLORS, "#ff7f0e", "#8c564b")
DATA_TITLES = {"images": "images (CIFAR-10)", "text": "text (IWSLT14 de→en)"}


def cell_panels(
    series: dict[str, Series | None],
    notes: dict[str, str],
    metrics: list[tuple[str, str]],
    title: str,
    path_stem: Path,
    show_d: bool = True,
) -> None:
    """Median and IQR per 20% window of each metric, one panel per cell; a cell without a series
    shows its note instead (e.g. only the first BN layer was probed)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharey=True, squeeze=False)
    width = 0.8 / len(metrics)
    for cell in CELLS:
        ax = axes[ARCHS.index(cell.arch), DATA.index(cell.data)]
        s = series.get(cell.key)
        head = f"{cell.arch} × {DATA_TITLES[cell.data]}"
        if s is None:
            ax.set_title(f"{head}\n{cell.label}", fontsize=10)
            note = textwrap.fill(notes.get(cell.key, "no data"), 50)
            ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize=9)
            ax.set_xticks([])
            continue
        for i, (column, label) in enumerate(metrics):
            bx = boxes(s, column)
            med = np.array([b.median for b in bx])
            err = np.array([[b.median - b.q1 for b in bx], [b.q3 - b.median for b in bx]])
            x = np.arange(WINDOWS) + (i - (len(metrics) - 1) / 2) * width
            ax.errorbar(x, med, yerr=err, fmt="o-", ms=3.5, lw=1, capsize=2,
                        color=METRIC_COLORS[i % len(METRIC_COLORS)], label=label)  # fmt: skip
        status = s.provenance.get("status")
        flag = f" — {status.upper()}" if status not in ("complete", None) else ""
        layer = f"{s.layer}, d={s.d}" if show_d else s.layer  # all layers: d is in the name
        ax.set_title(f"{head}\n{s.label}: {layer}{flag}", fontsize=10)
        ax.set_yscale("log")
        ax.set_xticks(range(WINDOWS), [window_label(w) for w in range(WINDOWS)])
        ax.grid(axis="y", alpha=0.3, which="both")
    for ax in axes[1]:
        ax.set_xlabel("percent of the steps trained")
    for ax in axes[:, 0]:
        ax.set_ylabel("median per window (bars: IQR)")
    handles, labels = next(
        (ax.get_legend_handles_labels() for ax in axes.flat if ax.get_legend_handles_labels()[0]),
        ([], []),
    )
    fig.legend(handles, labels, loc="lower center", ncol=len(metrics), fontsize=9)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save_figure(fig, path_stem)
    plt.close(fig)
