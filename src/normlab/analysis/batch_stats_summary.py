"""<fig>_summary.txt: provenance, medians per window (or their ratio between the two runs), the
split of each ratio into input scale and relative fluctuation, outliers, trends and the verdicts on
the paper's claims."""

from __future__ import annotations

from typing import Any

import numpy as np

from normlab.analysis.comparisons import (
    Comparison,
    boxes,
    growth_text,
    medians,
    split_text,
    window_ratios,
)
from normlab.analysis.series import SCALE_POWER, Series
from normlab.analysis.verdicts import (
    DOMINANT,
    NEUTRAL,
    compare_claim,
    finite,
    outlier_claim,
    ratio,
    trend_claim,
)
from normlab.analysis.windows import window_label

# Per run, not as ratios: the unnormalized ‖σ²_B − σ²‖₂ (next to the 1/d and 1/√d columns, so a
# reader sees which normalization, if any, brings a number to the paper's 0.05 → 1.37), and how
# concentrated the batch variance is over features (participation ratio d..1, largest share), and,
# for bn_official, the real-token fraction its statistics are shrunk by.
PER_RUN = ("var_dist_l2", "participation_ratio", "max_var_share", "real_fraction")
CLAIMS = {"fig2": "farther from running stats", "fig3": "larger gradients"}
PAPER_GROWTH = "(paper's variance distance: 1.37/0.0505 = 27)"
SPLIT_RULE = (
    "a ratio is split into [1/d normalization ×] input scale^power [× loss normalizer] × relative "
    "(the scale-free <metric>_rel), each the median over windows of its own ratio; a factor "
    f"explains the ratio when its |log| is >= {DOMINANT:g}x every other's; within {NEUTRAL:g}x of 1 "
    "it is no difference"
)


def _dirty(flag: bool | None) -> str:
    return {True: "YES (uncommitted changes)", False: "no", None: "unknown"}[flag]


def provenance_lines(all_series: list[Series], made_with: dict[str, Any]) -> list[str]:
    lines = [
        f"provenance: figure made at commit {made_with.get('git_commit')}, tree dirty: "
        f"{_dirty(made_with.get('git_dirty'))}"
    ]
    for s in all_series:
        p = s.provenance
        lines.append(
            f"  run {s.label}: commit {', '.join(str(c) for c in p['git_commits']) or 'unknown'}, "
            f"tree dirty: {_dirty(p['git_dirty'])} (from {p['provenance_from']}, "
            f"{len(p['git_dirty_segments'])} segment(s)), status {p['status']}"
        )
    if made_with.get("git_dirty") or any(s.provenance["git_dirty"] for s in all_series):
        lines.append(
            "  WARNING: made from a dirty tree: the commit alone does not reproduce these numbers"
        )
    return lines


def convention_lines(all_series: list[Series], summed: bool) -> list[str]:
    """Figure 3: which gradient conventions the summary reports, and why."""
    if not summed:
        missing = [s.label for s in all_series if not s.has("loss_normalizer")]
        return [
            "gradient convention: mean loss only (grad_mean, grad_var as logged): "
            f"{', '.join(missing)} has no loss_normalizer in metrics.csv (made before it was "
            "logged), so the summed-loss gradients cannot be formed"
        ]
    norm = ", ".join(
        f"{s.label} {np.nanmedian(s.columns['loss_normalizer']):.4g}" for s in all_series
    )
    return [
        "gradient conventions: grad_mean/grad_var as logged = the per-token (per-image) mean loss; "
        "*_summed = × loss_normalizer = the summed loss that fairseq backpropagates (median "
        f"loss_normalizer: {norm}; see experiments/fig3/README.md for which one the paper used)"
    ]


def _claims(
    o: Series, b: Series, comps: list[tuple[str, Comparison]], claim: str, trend: bool = True
) -> list[str]:
    lines = []
    for name, c in comps:
        ratios = window_ratios(o, c.other_col, b, c.base_col)
        lines.append(
            f"  (1) {claim}, {name}: {compare_claim(ratios)}; ratios "
            + ", ".join(f"{r:.3g}" for r in ratios)
        )
        lines.append(f"      split: {split_text(o, b, c)}")
        lines.append(
            f"  (2) extreme outliers, {name}: "
            + outlier_claim(boxes(o, c.other_col), boxes(b, c.base_col))
        )
        if not trend:
            continue
        m = medians(o, c.other_col)
        growth = ratio(m[-1], m[0])
        lines.append(
            f"  (3) grows during training, {name} ({o.label}): {trend_claim(growth)}; last/first "
            f"window median {growth:.3g} {PAPER_GROWTH}"
        )
        lines.append(f"      split: {growth_text(o, c)}")
    return lines


def _fig3_groups(paper: list[str], summed: bool) -> list[tuple[str, list, bool]]:
    """(title, [(name, comparison)], whether (3) applies): (3) is one run's own trend, the same in
    the paper's pairing as in the summed-loss convention."""
    groups = [("mean-loss convention (as logged)", [(c, Comparison.same(c)) for c in paper], True)]
    if not summed:
        return groups
    norm = ("loss normalizer", "loss_normalizer", "loss_normalizer", 1.0)
    groups.append(
        (
            "summed-loss convention (both runs × their loss_normalizer)",
            [(f"{c}_summed", Comparison.same(f"{c}_summed", (norm,))) for c in paper],
            True,
        )
    )
    pairing = []
    for c in paper:
        cmp = Comparison.same(c, (("loss normalizer", "loss_normalizer", None, 1.0),))
        cmp.other_col = f"{c}_summed"
        pairing.append((f"{c}, summed (Transformer) vs mean (vision)", cmp))
    title = "the paper's most likely pairing (fairseq's summed loss vs a mean loss; (3) as above)"
    groups.append((title, pairing, False))
    return groups


def summary_text(
    all_series: list[Series],
    fig: str,
    table: list[str],
    boxed: list[str],
    made_with: dict[str, Any],
    summed: bool = False,
    growth_lines: list[str] | None = None,
) -> str:
    """table: every column with medians; boxed: the figure's own columns (outliers listed)."""
    base, other = all_series[0], all_series[-1]
    single = len(all_series) == 1  # e.g. bench-gpu's paper-scale ResNet-20 half of Figure 2
    header = f"{fig}: {base.label} ({base.layer}, d={base.d})"
    if not single:
        header = f"{fig}: {other.label} ({other.layer}, d={other.d}) vs {base.label} ({base.layer}, d={base.d})"
    lines = [header, ""]
    for s in all_series:
        lines.append(
            f"  {s.label}: {len(s.step)} probed steps up to step {int(s.step.max())}, windows on "
            f"{s.steps_trained} steps trained ({s.steps_source}), "
            f"{s.summary.get('data_source', 'data source in summary.json (none yet)')}, scale "
            f"{s.summary.get('scale') or (s.config.get('scale') or {}).get('name', '?')}"
        )
    lines += ["", *provenance_lines(all_series, made_with)]
    if fig == "fig3":
        lines += ["", *convention_lines(all_series, summed)]
    lines.append("")
    lines.append(
        f"median per window of {base.label}:"
        if single
        else f"median ratio {other.label} / {base.label} per window:"
    )
    for column in table:
        values = medians(base, column) if single else window_ratios(other, column, base, column)
        lines.append(
            f"  {column:18s} "
            + "  ".join(f"{window_label(w)}: {r:9.3g}" for w, r in enumerate(values))
        )
    lines.append(
        "  (*_rel: the metric over the input scale, batch_var_mean (PN: batch_phi_mean) to the "
        "power its units have: 1 for variance distances, 1/2 for mean distances, -1 and -1/2 for "
        "the gradients; blind to how large the layer's input is)"
    )
    per_run = [(s, c) for s in all_series for c in PER_RUN if s.has(c)]
    if fig == "fig2" and per_run:
        lines += [
            "",
            "median per window, each run (runs made before these probe columns have none):",
        ]
        for s, column in per_run:
            lines.append(
                f"  {s.label:28s} {column:20s} "
                + "  ".join(
                    f"{window_label(w)}: {m:9.4g}" for w, m in enumerate(medians(s, column))
                )
            )
    if not single:
        lines += ["", f"split of each ratio ({SPLIT_RULE}):"]
        for column in table:
            root = column.removesuffix("_summed")
            if root in SCALE_POWER and not column.endswith("_rel"):
                extra = (("loss normalizer", "loss_normalizer", "loss_normalizer", 1.0),)
                c = Comparison.same(column, extra if column.endswith("_summed") else ())
                lines.append(f"  {column:18s} {split_text(other, base, c)}")
    lines += ["", "outliers (Tukey 1.5·IQR) per window, and max/median:"]
    for s in all_series:
        for column in boxed:
            bx = boxes(s, column)
            lines.append(
                f"  {s.label:28s} {column:18s} outliers "
                + " ".join(f"{b.outliers:4d}" for b in bx)
                + "   max/median "
                + " ".join(f"{ratio(b.max, b.median):7.3g}" for b in bx)
            )
    lines += ["", "trend (median of last window / first window):"]
    for s in all_series:
        for column in table:
            m = medians(s, column)
            lines.append(f"  {s.label:28s} {column:18s} {ratio(m[-1], m[0]):9.3g}")
    if not single and fig in CLAIMS:
        lines += ["", "verdicts on the paper's claims (first run = vision baseline, last run = "]
        lines[-1] += f"Transformer; {SPLIT_RULE}):"
        paper = boxed[:2]
        if fig == "fig2":
            lines += _claims(other, base, [(c, Comparison.same(c)) for c in paper], CLAIMS[fig])
        else:
            for title, comps, trend in _fig3_groups(paper, summed):
                lines += [f" {title}:", *_claims(other, base, comps, CLAIMS[fig], trend)]
    elif not single and fig == "fig4":
        smaller = [ratio(1.0, r) for r in window_ratios(other, "stat_dist", base, "stat_dist")]
        if not all(finite(x) for x in smaller):
            verdict = "UNKNOWN (a window has no data in one of the runs)"
        elif all(x >= 5 for x in smaller):
            verdict = "HOLDS"
        else:
            verdict = "PARTLY" if all(x > 1 for x in smaller) else "DOES NOT HOLD"
        lines += [
            "",
            f"claim (official figure): {other.label}'s statistic distance is 5-21x smaller than "
            f"{base.label}'s: {verdict}; {base.label}/{other.label} median per window "
            + ", ".join(f"{x:.3g}" for x in smaller),
            f"  split of {other.label}/{base.label}: {split_text(other, base, Comparison.same('stat_dist'))}",
        ]
    if growth_lines:
        lines += ["", *growth_lines]
    return "\n".join(lines) + "\n"
