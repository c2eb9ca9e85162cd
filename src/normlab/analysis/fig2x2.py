"""Architecture or data? Figure 2's measurement on the 2×2 of {CNN, Transformer} × {images, text}.

ResNet-20 and a ViT on CIFAR-10, a convolutional encoder and the Transformer on IWSLT14, all with
BN, probed alike. Each metric's window medians (the first BN layer's, and the median over all
probed BN layers) are compared as ratios that change one factor at a time: text/images at a fixed
architecture and Transformer/CNN at fixed data. `factor_verdict` decides from the four ratios which
factor carries the difference. `make_fig2x2` loads the runs and writes figures, tables, summary and
provenance (fig2x2_report.py, fig2x2_plot.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from normlab.analysis.comparisons import window_ratios
from normlab.analysis.series import Series, add_derived, load_series
from normlab.analysis.verdicts import DOMINANT, NEUTRAL, finite
from normlab.analysis.windows import trained_fraction
from normlab.errors import UserError
from normlab.probe.store import PART_GLOB, read_probe


@dataclass(frozen=True)
class Cell:
    key: str
    label: str
    arch: str  # "CNN" or "Transformer"
    data: str  # "images" or "text"
    experiment: str
    make_target: str  # the Makefile target that trains it (with NORM=bn SCALE=<scale>)

    def run_dir(self, runs: Path, scale: str) -> Path:
        return Path(runs) / self.experiment / scale / "norm=bn"

    def make_command(self, scale: str) -> str:
        return f"make {self.make_target} NORM=bn SCALE={scale}"


CELLS = (
    Cell("resnet", "ResNet-20 / CIFAR-10", "CNN", "images", "cifar10_resnet20", "cifar10"),
    Cell("vit", "ViT / CIFAR-10", "Transformer", "images", "cifar10_vit", "cifar10-vit"),
    Cell("conv", "Conv encoder / IWSLT14", "CNN", "text", "iwslt14_conv", "iwslt14-conv"),
    Cell(
        "transformer",
        "Transformer_BN / IWSLT14",
        "Transformer",
        "text",
        "iwslt14_transformer",
        "iwslt14",
    ),
)
CELL = {c.key: c for c in CELLS}
ARCHS, DATA = ("CNN", "Transformer"), ("images", "text")

# Each factor is measured twice, once at each level of the other one: (column, numerator, denominator).
PAIRS = {
    "data": (
        ("text_over_images_transformer", "transformer", "vit"),
        ("text_over_images_cnn", "conv", "resnet"),
    ),
    "architecture": (
        ("transformer_over_cnn_images", "vit", "resnet"),
        ("transformer_over_cnn_text", "transformer", "conv"),
    ),
}
RATIO_COLUMNS = [name for pairs in PAIRS.values() for name, _, _ in pairs]

DRAWN = [
    ("mean_dist", "D_μ (1/d)"),
    ("var_dist", "D_σ² (1/d)"),
    ("mean_rms_dist", "D_μ (1/√d)"),
    ("var_rms_dist", "D_σ² (1/√d)"),
    ("tid_mean", "TID (mean)"),
    ("tid_var", "TID (variance)"),
]
# Blind to the input's scale AND to d: the four models' first BNs have d from 16 to 512, and the 1/d
# metrics (the *_dist_rel columns too) shrink as 1/√d, which would pass for an architecture effect.
SCALE_FREE = ["tid_mean", "tid_var", "mean_rms_dist_rel", "var_rms_dist_rel"]
# Reported but not decided on: they also carry the input's scale or d (batch_var_mean: the scale).
SECONDARY = ["mean_dist_rel", "var_dist_rel", "mean_dist", "var_dist", "mean_rms_dist"]
SECONDARY += ["var_rms_dist", "batch_var_mean"]
TABLE = SCALE_FREE + SECONDARY
PROBE_COLUMNS = [c for c, _ in DRAWN] + ["batch_var_mean"]

RULE = (
    f"per metric, a factor CARRIES the difference when both of its ratios are beyond {NEUTRAL:g}x "
    "of 1 in the same direction and the smaller of their |log| is at least "
    f"{DOMINANT:g}x the larger |log| of the other factor's two ratios (or the other factor's two "
    f"are both within {NEUTRAL:g}x of 1); NEITHER: all four within {NEUTRAL:g}x of 1; BOTH: each "
    "factor consistent, neither carrying; MIXED: anything else (a factor's two ratios disagree, "
    "one beyond and one within or beyond both ways: an interaction); UNKNOWN: a ratio is missing. Each ratio is "
    "the median over the five windows of the per-window ratio of medians"
)


@dataclass
class Verdict:
    verdict: str  # data | architecture | both | neither | mixed | unknown
    reason: str


def _state(logs: list[float]) -> str:
    """A factor's two ratios: 'none' (both within NEUTRAL of 1), 'consistent' (both beyond it, the
    same way), 'opposite' (beyond it both ways) or 'partial' (one beyond it, one within)."""
    edge = math.log(NEUTRAL)
    beyond = [x for x in logs if abs(x) > edge]
    if not beyond:
        return "none"
    if len(beyond) < len(logs):
        return "partial"
    return "consistent" if all(x > 0 for x in beyond) or all(x < 0 for x in beyond) else "opposite"


def _carries(logs: list[float], state: str, other: list[float], other_state: str) -> bool:
    if state != "consistent":
        return False
    return other_state == "none" or min(map(abs, logs)) >= DOMINANT * max(map(abs, other))


def factor_verdict(data: tuple[float, float], arch: tuple[float, float]) -> Verdict:
    """data: text/images at Transformer and at CNN; arch: Transformer/CNN on images and on text."""
    x = [f"{r:.3g}x" if finite(r) else "missing" for r in (*data, *arch)]
    shown = (
        f"text/images {x[0]} (Transformer), {x[1]} (CNN); "
        f"Transformer/CNN {x[2]} (images), {x[3]} (text)"
    )
    if not all(finite(r) and r > 0 for r in (*data, *arch)):
        return Verdict("unknown", f"a ratio is missing ({shown})")
    ld, la = [math.log(r) for r in data], [math.log(r) for r in arch]
    sd, sa = _state(ld), _state(la)
    if sd == sa == "none":
        verdict = "neither"
    elif _carries(ld, sd, la, sa):
        verdict = "data"
    elif _carries(la, sa, ld, sd):
        verdict = "architecture"
    elif sd == sa == "consistent":
        verdict = "both"
    else:
        verdict = "mixed"
    return Verdict(verdict, f"{shown}; data {sd}, architecture {sa}")


HEADLINES = {
    "data": "DATA: text vs images carries the fluctuation difference, the architecture does not",
    "architecture": "ARCHITECTURE: Transformer vs CNN carries the fluctuation difference, the data does not",
    "both": "BOTH: data and architecture each change the fluctuation, neither dominates",
    "neither": f"NEITHER: no ratio beyond {NEUTRAL:g}x",
    "mixed": "MIXED: no factor meets the rule (a factor's two ratios disagree: an interaction)",
    "unknown": "UNKNOWN: a ratio is missing",
}


def headline(verdicts: dict[str, Verdict]) -> str:
    """One verdict when every scale-free metric agrees, else the split, metric by metric."""
    kinds = {v.verdict for v in verdicts.values()}
    if len(kinds) == 1:
        return f"{HEADLINES[kinds.pop()]} (on every scale-free metric: {', '.join(verdicts)})"
    return "SPLIT across the scale-free metrics: " + ", ".join(
        f"{m} -> {v.verdict}" for m, v in verdicts.items()
    )


# ---------------------------------------------------------------------------------- ratio table
def median_ratio(num: Series | None, den: Series | None, column: str) -> float:
    """Median over windows of num/den's per-window median ratio (NaN when a run is absent)."""
    if num is None or den is None:
        return float("nan")
    v = [r for r in window_ratios(num, column, den, column) if finite(r)]
    return float(np.median(v)) if v else float("nan")


def ratio_row(series: dict[str, Series | None], column: str) -> dict[str, float]:
    return {
        name: median_ratio(series[n], series[d], column)
        for pairs in PAIRS.values()
        for name, n, d in pairs
    }


def verdict_of(row: dict[str, float]) -> Verdict:
    data, arch = ([row[name] for name, _, _ in PAIRS[f]] for f in ("data", "architecture"))
    return factor_verdict((data[0], data[1]), (arch[0], arch[1]))


# ------------------------------------------------------------------------------------- loading
def check_runs(dirs: dict[str, Path], scale: str) -> None:
    """Every cell's run exists with probe rows, or one UserError naming each missing one."""
    missing = [
        f"{CELL[k].label}: no run at {d} (no probe/{PART_GLOB}); `{CELL[k].make_command(scale)}` makes it"
        for k, d in dirs.items()
        if not any((d / "probe").glob(PART_GLOB))
    ]
    if missing:
        raise UserError("; ".join(missing) + f" (`make fig2x2 SCALE={scale}` makes all four runs)")


def all_layers_series(first: Series) -> tuple[Series | None, int]:
    """Per step, the median over every probed BN layer of the run (same windows as `first`); None
    when the probe recorded one BN layer only. Also returns the number of BN layers probed."""
    rows = read_probe(first.run_dir).to_pandas()
    rows = rows[rows["kind"] == first.kind]
    layers = list(dict.fromkeys(rows.sort_values("layer_index")["layer"]))
    if len(layers) < 2:
        return None, len(layers)
    frames = []
    for _, one in rows.groupby("layer", sort=False):
        one = one.sort_values("step").drop_duplicates("step", keep="last")
        cols = {c: one[c].to_numpy(dtype=float) for c in PROBE_COLUMNS if c in one}
        add_derived(cols)  # each layer's *_rel over its own input scale, before the median
        frames.append(pd.DataFrame(cols, index=one["step"].to_numpy()))
    per_step = pd.concat(frames).groupby(level=0).median()
    step = per_step.index.to_numpy(dtype=int)
    d = sorted({int(x) for x in rows["d"]})
    span = f"d {d[0]}" if len(d) == 1 else f"d {d[0]}-{d[-1]}"
    return dataclasses.replace(
        first,
        layer=f"median of {len(layers)} BN layers ({span})",
        step=step,
        frac=trained_fraction(step, max(first.steps_trained, int(step.max()))),
        columns={c: per_step[c].to_numpy(dtype=float) for c in per_step},
    ), len(layers)


@dataclass
class Grid:
    first: dict[str, Series]
    all_layers: dict[str, Series | None]
    layer_counts: dict[str, int]
    scale: str


def load_grid(dirs: dict[str, Path], scale: str) -> Grid:
    check_runs(dirs, scale)
    first = {k: load_series(CELL[k].label, d) for k, d in dirs.items()}
    loaded = {k: all_layers_series(s) for k, s in first.items()}
    return Grid(
        first,
        {k: v[0] for k, v in loaded.items()},
        {k: v[1] for k, v in loaded.items()},
        scale,
    )


def run_dirs(
    runs: str | Path, scale: str, overrides: dict[str, str] | None = None
) -> dict[str, Path]:
    """Each cell's run directory: <runs>/<experiment>/<scale>/norm=bn unless overridden."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(CELL))
    if unknown:
        raise UserError(f"unknown cell {unknown[0]!r}; valid cells: {', '.join(CELL)}")
    return {c.key: Path(overrides.get(c.key) or c.run_dir(Path(runs), scale)) for c in CELLS}


def make_fig2x2(
    runs: str | Path, scale: str, out_dir: str | Path, overrides: dict[str, str] | None = None
) -> Path:
    """Load the four BN runs and write the 2×2 figures, table, summary and provenance to out_dir
    (all or nothing: a missing run raises UserError before anything is written)."""
    from normlab.analysis.fig2x2_report import write_outputs

    grid = load_grid(run_dirs(runs, scale, overrides), scale)
    return write_outputs(grid, Path(out_dir))
