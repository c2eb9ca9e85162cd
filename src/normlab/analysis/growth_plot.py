"""fig2_growth.png/.svg: the growth analysis of normlab.analysis.growth, drawn against updates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.lines import Line2D

from normlab.analysis.growth import (
    PAPER_D,
    PAPER_UPDATES,
    PAPER_VAR_DIST,
    QUANTITIES,
    binned_medians,
    predict,
    quantity,
)
from normlab.analysis.plotting import COLORS, pyplot, save_figure
from normlab.analysis.series import Series
from normlab.analysis.verdicts import finite

PLOT_BINS = 30  # log-spaced bins of the whole run for the drawn medians


def growth_figure(all_series: list[Series], result: dict[str, Any], path_stem: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(16.5, 8.8))
    panels = list(axes.flat)
    for i, (s, r) in enumerate(zip(all_series, result["runs"], strict=True)):
        color = COLORS[i % len(COLORS)]
        for ax, (key, column, _) in zip(panels, QUANTITIES, strict=False):
            v = quantity(s, key, column)
            if v is None:
                continue
            ok = np.isfinite(v) & (v > 0)
            ax.plot(s.step[ok], v[ok], color=color, lw=0.4, alpha=0.3)
            # every bin counts here (the first steps have one per bin): drawn, not fitted
            x, y = binned_medians(s.step, v, 1, s.steps_trained, PLOT_BINS, min_per_bin=1)
            ax.plot(x, y, color=color, lw=1.6, marker="o", ms=3)
            q = r["quantities"][key]
            if finite(q["slope"]):
                lo, hi = r["fit"]["start"], r["fit"]["end"]
                xs = np.geomspace(lo, hi, 20)
                ax.plot(xs, [predict(q, x) for x in xs], color="k", lw=1.0)
                if key == "var_dist":
                    xe = np.geomspace(hi, PAPER_UPDATES, 20)
                    ax.plot(xe, [predict(q, x) for x in xe], color=color, lw=1.2, ls="--")
                    ax.axvline(lo, color=color, lw=0.6, ls=":")
        if "paper" in r:
            ax = panels[0]
            ax.plot([PAPER_UPDATES], [PAPER_VAR_DIST], marker="*", ms=14, color=color, ls="none")
            ax.plot(
                [PAPER_UPDATES],
                [r["paper"]["d_matched_var_dist"]],
                marker="*",
                ms=14,
                mfc="none",
                color=color,
                ls="none",
            )
    for ax, (key, _, ylabel) in zip(panels, QUANTITIES, strict=False):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("updates (optimizer steps)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        if key == "input_scale":
            names = sorted({s.input_scale_column for s in all_series if s.input_scale_column})
            ax.set_title(" / ".join(names) + " relative to step 1", fontsize=10)
    _legend(panels[-1], all_series, result)
    fig.suptitle(
        " vs ".join(s.label for s in all_series)
        + ": growth of the first BN layer's variance distance with updates",
        fontsize=12,
    )
    fig.tight_layout()
    save_figure(fig, path_stem)
    plt.close(fig)


def _legend(ax, all_series: list[Series], result: dict[str, Any]) -> None:
    ax.axis("off")
    handles = [
        Line2D([], [], color=COLORS[i % len(COLORS)], lw=1.6, marker="o", ms=3)
        for i in range(len(all_series))
    ]
    labels = [f"{s.label} ({s.layer}, d={s.d}): median per log bin" for s in all_series]
    handles += [
        Line2D([], [], color="grey", lw=0.4, alpha=0.6),
        Line2D([], [], color="k", lw=1.0),
        Line2D([], [], color="grey", lw=1.2, ls="--"),
        Line2D([], [], color="grey", lw=0.6, ls=":"),
        Line2D([], [], color="grey", marker="*", ms=12, ls="none"),
        Line2D([], [], color="grey", marker="*", ms=12, mfc="none", ls="none"),
    ]
    labels += [
        "per step",
        "power-law fit (Theil-Sen on binned medians)",
        f"fit extrapolated to {PAPER_UPDATES:,} updates",
        "start of the fit range",
        f"paper: Transformer_BN last-window median {PAPER_VAR_DIST} (d={PAPER_D})",
        "paper's value at our d (equal per-channel deviations)",
    ]
    ax.legend(handles, labels, loc="upper left", fontsize=8.5, frameon=False)
    verdicts = [
        f"{r['label']}: var_dist {r['var_dist_trend']}"
        + (f", growth from {r['explained_by']}" if r["var_dist_trend"] == "rises" else "")
        for r in result["runs"]
    ]
    ax.text(0.0, 0.02, "\n".join(verdicts), fontsize=8.5, va="bottom", transform=ax.transAxes)
