"""One layer's probe series of a run, ready for the figures: on the steps the run actually trained,
with scale-free ("_rel") columns, joined with the run's per-step metrics.csv columns
(loss_normalizer, the first norm's input-scale measure) and its provenance (commit, dirty tree).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normlab.analysis.windows import trained_fraction
from normlab.probe.store import read_probe

# The model's own measure of its first norm's input scale (Transformer: RMS of the shared
# embedding; ResNet-20: Frobenius norm of the stem conv weight), logged per step in metrics.csv.
INPUT_SCALE_COLUMNS = ("embed_rms", "stem_weight_norm")
METRICS_COLUMNS = ("loss_normalizer", *INPUT_SCALE_COLUMNS)

# The BN column and the PN column of each fig4 quantity ("stat_scale": the input's scale).
STAT_ALIASES = {
    "stat_dist": ("var_dist", "phi_dist"),
    "grad_stat": ("grad_var", "grad_phi"),
    "stat_rms_dist": ("var_rms_dist", "phi_rms_dist"),
    "tid_stat": ("tid_var", "tid_phi"),
    "stat_scale": ("batch_var_mean", "batch_phi_mean"),
}

# How each quantity moves when the layer's input is scaled by a (its variance v by a²): distances
# between means go as √v, between variances (or ψ²) as v, ∂L/∂μ_B as 1/√v and ∂L/∂σ²_B as 1/v (BN's
# output does not change). quantity / v**power is then blind to the input's scale: what is left is
# the fluctuation relative to it. That quotient is the "<column>_rel" column.
SCALE_POWER = {
    "mean_dist": 0.5,
    "mean_rms_dist": 0.5,
    "var_dist": 1.0,
    "var_rms_dist": 1.0,
    "grad_mean": -0.5,
    "grad_var": -1.0,
    "phi_dist": 1.0,
    "phi_rms_dist": 1.0,
    "grad_phi": -1.0,
    "stat_dist": 1.0,
    "stat_rms_dist": 1.0,
    "grad_stat": -1.0,
}
# Gradients logged for the per-token (per-image) mean loss; × loss_normalizer = the summed loss's.
SUMMED = ("grad_mean", "grad_var")


def scale_column(column: str) -> str:
    """The per-step input-scale column (mean over channels of the batch variance, or of ψ²_B)."""
    if column in STAT_ALIASES:
        return "stat_scale"
    return "batch_phi_mean" if "phi" in column else "batch_var_mean"


def relative_name(column: str) -> str:
    return f"{column}_rel"


@dataclass
class Series:
    label: str
    run_dir: Path
    layer: str
    d: int
    kind: str  # "bn" or "pn"
    step: np.ndarray
    frac: np.ndarray  # step / steps actually trained
    columns: dict[str, np.ndarray]
    summary: dict
    steps_trained: int
    steps_source: str  # where steps_trained comes from
    warmup_steps: int
    metrics: pd.DataFrame | None  # metrics.csv, one row per step (None: the run has none)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def input_scale_column(self) -> str | None:
        """embed_rms / stem_weight_norm when metrics.csv has it, else None."""
        if self.metrics is None:
            return None
        return next((c for c in INPUT_SCALE_COLUMNS if c in self.metrics), None)

    def has(self, column: str) -> bool:
        v = self.columns.get(column)
        return v is not None and bool(np.isfinite(v).any())


def read_metrics_table(run_dir: Path) -> pd.DataFrame | None:
    """metrics.csv as numbers, one row per step; a run still writing it loses its unfinished line."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return None
    text = path.read_text()
    text = text[: text.rfind("\n") + 1]  # the line being written may be cut short
    df = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
    df = df.apply(pd.to_numeric, errors="coerce").dropna(subset=["step"])
    df["step"] = df["step"].astype(int)
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def _config(run_dir: Path, summary: dict) -> dict:
    if summary.get("config"):
        return summary["config"]
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _git_segments(run_dir: Path, summary: dict) -> tuple[list[dict], str]:
    """Each segment's commit and dirty flag (a resumed run has one per start), and their source."""
    if summary:
        segs = summary.get("git_segments") or [
            {"git_commit": summary.get("git_commit"), "git_dirty": summary.get("git_dirty")}
        ]
        return segs, "summary.json"
    ckpt = run_dir / "checkpoints" / "last.pt"
    if ckpt.exists():  # a run still going has no summary yet; its checkpoint knows its segments
        from normlab.errors import UserError
        from normlab.train.checkpoint import load_checkpoint

        try:
            segs = load_checkpoint(ckpt)["progress"].get("git_segments") or []
        except (UserError, KeyError):
            segs = []
        return segs, "checkpoints/last.pt (run in progress)"
    return [], "none (run in progress, no checkpoint yet)"


def run_provenance(run_dir: Path, summary: dict) -> dict[str, Any]:
    """Commit and dirty flag of a run over all its segments. summary.json's top-level git_dirty is
    the first segment's only: a run resumed from a dirty tree would read as clean from it."""
    segs, source = _git_segments(run_dir, summary)
    flags = [s.get("git_dirty") for s in segs]
    if any(f is True for f in flags):
        dirty: bool | None = True
    elif flags and all(f is False for f in flags):
        dirty = False
    else:
        dirty = None  # git could not tell, or nothing recorded: unknown, not clean
    commits = list(dict.fromkeys(s.get("git_commit") for s in segs))
    return {
        "git_commit": commits[0] if commits else None,
        "git_commits": commits,
        "git_dirty": dirty,
        "git_dirty_segments": flags,
        "status": summary.get("status", "in progress"),
        "provenance_from": source,
    }


def _steps_trained(summary: dict, step: np.ndarray) -> tuple[int, str]:
    last_probed = int(step.max())
    steps = summary.get("steps")
    if isinstance(steps, int) and steps >= last_probed:
        return steps, "summary.json steps"
    return last_probed, "last probed step"


def load_series(label: str, run_dir: str | Path, layer: str | None = None) -> Series:
    """The probe rows of one layer of a run (default: its first BN or PN layer)."""
    run_dir = Path(run_dir)
    df = read_probe(run_dir).to_pandas()
    bn = df[df["kind"].isin(["bn", "pn"])]
    if bn.empty:
        raise ValueError(f"{run_dir} has no BN or PN layer in its probe data")
    if layer is None:
        layer = str(bn.loc[bn["layer_index"].idxmin(), "layer"])
    rows = bn[bn["layer"] == layer].sort_values("step").drop_duplicates("step", keep="last")
    if rows.empty:
        raise ValueError(
            f"{run_dir} has no probe rows for layer {layer!r}; its layers: {sorted(bn['layer'].unique())}"
        )
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    step = rows["step"].to_numpy(dtype=int)
    cols = {c: rows[c].to_numpy(dtype=float) for c in rows.columns if rows[c].dtype.kind == "f"}
    kind = str(rows["kind"].iloc[0])
    for alias, (bn_col, pn_col) in STAT_ALIASES.items():
        col = pn_col if kind == "pn" else bn_col
        if col in cols:
            cols[alias] = cols[col]
    metrics = read_metrics_table(run_dir)
    if metrics is not None:
        by_step = metrics.set_index("step")
        for c in METRICS_COLUMNS:
            if c in by_step:
                cols[c] = by_step[c].reindex(step).to_numpy(dtype=float)
    add_derived(cols)
    steps_trained, source = _steps_trained(summary, step)
    config = _config(run_dir, summary)
    schedule = (config.get("optim") or {}).get("schedule") or {}
    return Series(
        label=label,
        run_dir=run_dir,
        layer=layer,
        d=int(rows["d"].iloc[0]),
        kind=kind,
        step=step,
        frac=trained_fraction(step, steps_trained),
        columns=cols,
        summary=summary,
        steps_trained=steps_trained,
        steps_source=source,
        warmup_steps=int(schedule.get("warmup_steps") or 0),
        metrics=metrics,
        config=config,
        provenance=run_provenance(run_dir, summary),
    )


def add_derived(cols: dict[str, np.ndarray]) -> None:
    """The scale-free "_rel" columns, and the gradients in the summed-loss convention."""
    with np.errstate(divide="ignore", invalid="ignore"):
        for column, power in SCALE_POWER.items():
            scale = cols.get(scale_column(column))
            if column in cols and scale is not None:
                cols[relative_name(column)] = cols[column] / scale**power
        if "loss_normalizer" in cols:
            for column in SUMMED:
                if column in cols:
                    cols[f"{column}_summed"] = cols[column] * cols["loss_normalizer"]
