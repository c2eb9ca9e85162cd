#!/usr/bin/env python
"""The paper's Table 1 from a Table 1 sweep's run folders: BLEU (both kinds) per norm, mean ± std
over seeds, next to the paper's column, with scale, data and hardware stated; each norm against LN
by the paired bootstrap test, and the verdict on the paper's ordering.

    python scripts/make_table1.py runs/table1/cpu --out results/table1/cpu
    python scripts/make_table1.py results/runs/multi30k_transformer/cpu --data multi30k \
        --out results/table1/multi30k_cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normlab.analysis.aggregate import (
    aggregate,
    csv_text,
    incomplete_lines,
    to_csv_rows,
    to_markdown,
)
from normlab.analysis.table1_significance import compare_with_ln, markdown, verdicts
from normlab.io_utils import atomic_write_json, atomic_write_text

PAPER_BLEU = {"ln": 35.5, "bn": 34.4, "pnv": 35.5, "pn": 35.9}  # Shen et al. 2020, Table 1, IWSLT14
ORDER = ["ln", "bn", "pnv", "pn"]
METRICS = ["bleu", "sacrebleu", "valid_loss"]
TITLES = {"iwslt14": "IWSLT14 de-en", "multi30k": "Multi30K de-en (test2016 by default)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("sweep_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", choices=sorted(TITLES), default="iwslt14", help="names the table")
    ap.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    args = ap.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        print(
            f"make_table1: error: {args.sweep_dir} does not exist; run the sweep first (make table1)",
            file=sys.stderr,
        )
        return 2
    groups, incomplete = aggregate(args.sweep_dir, ["norm.name"])
    groups.sort(key=lambda g: ORDER.index(g.key[0]) if g.key[0] in ORDER else len(ORDER))
    paper = {(k,): v for k, v in PAPER_BLEU.items()}
    paper_title = "paper BLEU" if args.data == "iwslt14" else "paper BLEU (IWSLT14)"
    comparisons = compare_with_ln({g.key[0]: g.runs for g in groups}, args.samples)
    runs = [r for g in groups for r in g.runs]
    first = runs[0] if runs else {}
    facts = {
        "scale": sorted({r.get("scale") for r in runs}),
        "data": sorted({r.get("data_source") for r in runs}),
        "data_detail": sorted({r.get("data_detail") for r in runs}),
        "hardware": sorted(
            {f"{r.get('cpu')} ({r.get('cpu_count')} cores), {r.get('device')}" for r in runs}
        ),
        "torch": sorted({r.get("torch") for r in runs}),
        "git_commits": sorted({str(r.get("git_commit")) for r in runs}),
        "wall_s_per_run": [r.get("wall_s") for r in runs],
        "test_sentences": sorted({r.get("test_sentences") for r in runs}),
    }
    md = f"# Table 1: {TITLES[args.data]} BLEU per norm\n\n"
    md += to_markdown(groups, ["norm"], METRICS, {paper_title: paper})
    md += (
        "\n`bleu`: tokenized, lowercased, BPE removed (fairseq-generate's, the paper's kind); "
        "`sacrebleu`: detokenized, signature " + str(first.get("sacrebleu_signature", "?")) + "; "
        "`valid_loss`: label-smoothed loss per target token (nats) on the validation set.\n\n"
    )
    if comparisons:
        md += (
            "\n## Each norm against LN\n\nPaired bootstrap resampling of the test set "
            f"({args.samples} resamples, sacreBLEU's implementation, the paper's tokenized BLEU), "
            "per seed and pooled over the seeds' outputs concatenated.\n\n"
        )
        md += markdown(comparisons)
        md += "\n## The paper's ordering\n\n" + "\n".join(verdicts(comparisons)) + "\n\n"
    md += "\n".join(f"- {k}: {v}" for k, v in facts.items()) + "\n"
    if incomplete:
        md += (
            "\nIncomplete runs (not in the table):\n"
            + "\n".join(incomplete_lines(incomplete))
            + "\n"
        )
    out = Path(args.out)
    rows = to_csv_rows(groups, ["norm"], METRICS)
    for row in rows:
        row["paper_bleu"] = PAPER_BLEU.get(row["norm"])
    atomic_write_text(out / "table1.csv", csv_text(rows))
    atomic_write_text(out / "table1.md", md)
    significance = [vars(c) | {"relation": c.relation} for c in comparisons]
    atomic_write_json(
        out / "provenance.json",
        facts | {"runs": [r["run_dir"] for r in runs], "vs_ln": significance},
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
