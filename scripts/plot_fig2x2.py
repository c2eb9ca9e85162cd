#!/usr/bin/env python
"""Architecture or data? Figure 2's statistics for the four BN runs of {CNN, Transformer} x
{images, text}: the 2x2 figures, the two-way table of median ratios and the verdict on which factor
carries the fluctuation difference (src/normlab/analysis/fig2x2.py).

    python scripts/plot_fig2x2.py --runs runs --scale cpu --out results/fig2x2/cpu

Each cell's run is <runs>/<experiment>/<scale>/norm=bn (`make fig2x2 SCALE=...` trains them);
--run CELL=RUN_DIR points one cell (resnet, vit, conv, transformer) elsewhere.
"""

from __future__ import annotations

import argparse
import sys

from normlab.analysis.fig2x2 import CELL, make_fig2x2
from normlab.errors import UserError


def parse_run(text: str) -> tuple[str, str]:
    cell, sep, run = text.partition("=")
    if not sep or not run:
        raise argparse.ArgumentTypeError(f"--run {text!r} is not CELL=RUN_DIR ({', '.join(CELL)})")
    return cell, run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", default="runs", help="the run tree (NORMLAB_RUNS); default runs")
    ap.add_argument("--scale", required=True, help="smoke, cpu, paper, ...")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--run", action="append", type=parse_run, default=[], help="CELL=RUN_DIR")
    args = ap.parse_args(argv)
    try:
        out = make_fig2x2(args.runs, args.scale, args.out, dict(args.run))
    except (UserError, FileNotFoundError, ValueError) as err:
        print(f"plot_fig2x2: error: {err}", file=sys.stderr)
        return 2
    print((out / "fig2x2_summary.txt").read_text())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
