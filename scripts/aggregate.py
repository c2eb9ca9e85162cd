#!/usr/bin/env python
"""One table from the runs of a sweep: mean ± std over seeds per configuration, plus incomplete runs.

    python scripts/aggregate.py runs/cnn_norms/cpu --by norm.name --metrics test_acc test_loss
    python scripts/aggregate.py runs/table1/cpu --by norm.name --metrics bleu sacrebleu --out results/x

Writes <out>/aggregate.csv and <out>/aggregate.md when --out is given; prints the Markdown table.
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
from normlab.io_utils import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("sweep_dir")
    ap.add_argument(
        "--by", nargs="+", default=["norm.name"], help="config keys that define a group"
    )
    ap.add_argument(
        "--metrics", nargs="+", default=["test_acc"], help="summary.json keys to average"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        print(
            f"aggregate: error: {args.sweep_dir} is not a directory; pass a sweep's run folder",
            file=sys.stderr,
        )
        return 2
    groups, incomplete = aggregate(args.sweep_dir, args.by)
    md = to_markdown(groups, args.by, args.metrics)
    if incomplete:
        md += "\nIncomplete runs:\n" + "\n".join(incomplete_lines(incomplete)) + "\n"
    print(md)
    if args.out:
        rows = to_csv_rows(groups, args.by, args.metrics)
        atomic_write_text(Path(args.out) / "aggregate.csv", csv_text(rows))
        atomic_write_text(Path(args.out) / "aggregate.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
