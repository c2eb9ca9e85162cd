#!/usr/bin/env python
"""Copy finished runs' small outputs (summary, config, metrics, evaluations, test translations,
probe rows in one Parquet file; no checkpoints) under a folder that is committed.

    python scripts/export_run.py runs/iwslt14_transformer/long/norm=bn --out results/runs
        -> results/runs/iwslt14_transformer/long/norm=bn/

The copy is a run directory for the figure and table scripts (`--run LABEL=results/runs/...`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normlab.errors import UserError
from normlab.tracking.run_export import export_run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs", nargs="+", help="run directories: <root>/<experiment>/<scale>/<name>")
    ap.add_argument(
        "--out", default="results/runs", help="folder that receives <experiment>/<scale>/<name>"
    )
    args = ap.parse_args(argv)
    for run in map(Path, args.runs):
        try:
            dest = export_run(run, Path(args.out) / Path(*run.parts[-3:]))
        except UserError as err:
            print(f"export_run: error: {err}", file=sys.stderr)
            return 2
        print(f"exported {run} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
