"""Table 1's comparisons with LN: is each norm's BLEU different from LN's by more than chance?

For each norm and each seed it shares with LN, the paired bootstrap test on the test set
(`eval.significance`) of that norm's translations against LN's of the same seed; and one pooled
test over the seeds' outputs concatenated (3 x 1,000 sentences for 3 seeds), which asks whether
the norm differs from LN across seeds rather than for one lucky or unlucky initialization. The
verdicts on the paper's ordering are read from the pooled test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normlab.eval.significance import paired_bootstrap, read_generate

ALPHA = 0.05
BASELINE = "ln"
# The paper's Table 1 claims, as (norm, relation to LN, the paper's BLEU pair).
PAPER_CLAIMS = (
    ("bn", "below", "BN below LN (paper: 34.4 vs 35.5)"),
    ("pn", "at least", "PN at least as good as LN (paper: 35.9 vs 35.5)"),
    ("pnv", "equal", "PN-V as good as LN (paper: 35.5 vs 35.5)"),
)


@dataclass
class Comparison:
    norm: str
    seeds: list[Any]
    per_seed_p: dict[Any, float]
    delta: float  # pooled BLEU of the norm minus LN's, on the concatenated outputs
    pooled_p: float

    @property
    def relation(self) -> str:
        if self.pooled_p >= ALPHA:
            return "equal"
        return "above" if self.delta > 0 else "below"


def _by_seed(runs: list[dict[str, Any]]) -> dict[Any, Path]:
    return {r["config"].get("seed"): Path(r["run_dir"]) / "generate-test.txt" for r in runs}


def compare_with_ln(
    groups: dict[str, list[dict[str, Any]]], samples: int = 1000
) -> list[Comparison]:
    """One Comparison per norm other than LN that shares at least one seed with LN."""
    if BASELINE not in groups:
        return []
    base = _by_seed(groups[BASELINE])
    out = []
    for norm, runs in groups.items():
        if norm == BASELINE:
            continue
        mine = _by_seed(runs)
        seeds = sorted(set(base) & set(mine), key=str)
        seeds = [s for s in seeds if base[s].exists() and mine[s].exists()]
        if not seeds:
            continue
        pooled_ref: list[str] = []
        pooled_base: list[str] = []
        pooled_sys: list[str] = []
        per_seed = {}
        for seed in seeds:
            refs, ln_hyps = read_generate(base[seed])
            refs_n, hyps = read_generate(mine[seed])
            if refs != refs_n:
                raise ValueError(
                    f"{base[seed]} and {mine[seed]} translate different test sets; "
                    "compare runs of the same data and test split"
                )
            per_seed[seed] = paired_bootstrap(ln_hyps, hyps, refs, samples).p_value
            pooled_ref += refs
            pooled_base += ln_hyps
            pooled_sys += hyps
        pooled = paired_bootstrap(pooled_base, pooled_sys, pooled_ref, samples)
        delta = pooled.system_bleu - pooled.baseline_bleu
        out.append(Comparison(norm, seeds, per_seed, delta, pooled.p_value))
    return out


def markdown(comparisons: list[Comparison]) -> str:
    if not comparisons:
        return ""
    lines = [
        "| norm | BLEU − LN (pooled) | p, pooled over seeds | p per seed | vs LN at 5% |",
        "|---|---|---|---|---|",
    ]
    for c in comparisons:
        per = ", ".join(f"seed {s}: {p:.3f}" for s, p in c.per_seed_p.items())
        lines.append(
            f"| {c.norm} | {c.delta:+.2f} | {c.pooled_p:.3f} | {per} | "
            f"{'not different' if c.relation == 'equal' else c.relation} |"
        )
    return "\n".join(lines) + "\n"


def verdicts(comparisons: list[Comparison]) -> list[str]:
    """The paper's ordering, claim by claim, from the pooled tests."""
    found = {c.norm: c for c in comparisons}
    out = []
    for norm, claim, text in PAPER_CLAIMS:
        c = found.get(norm)
        if c is None:
            out.append(f"- {text}: NOT MEASURED (no {norm} runs sharing a seed with LN)")
            continue
        rel = c.relation
        holds = {
            "below": rel == "below",
            "at least": rel in ("equal", "above"),
            "equal": rel == "equal",
        }[claim]
        measured = "no significant difference" if rel == "equal" else f"significantly {rel} LN"
        out.append(
            f"- {text}: {'HOLDS' if holds else 'DOES NOT HOLD'} — {norm} − LN = "
            f"{c.delta:+.2f} BLEU, {measured} (pooled paired bootstrap, p = {c.pooled_p:.3f})"
        )
    return out
