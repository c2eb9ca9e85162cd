#!/usr/bin/env python
"""Upload the offline wandb runs under a runs folder (what `logger=wandb` wrote while offline).

    python scripts/wandb_sync.py [RUNS_DIR]        # default: runs/ (or $NORMLAB_RUNS)
    python scripts/wandb_sync.py --dry-run

Without a wandb login (WANDB_API_KEY or `wandb login`) it lists what it would upload and stops.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from normlab.tracking.wandb_mirror import logged_in


def offline_runs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("offline-run-*") if p.is_dir() and p.parent.name == "wandb")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs_dir", nargs="?", default=os.environ.get("NORMLAB_RUNS", "runs"))
    ap.add_argument("--dry-run", action="store_true", help="only list the offline runs")
    args = ap.parse_args(argv)
    root = Path(args.runs_dir)
    if not root.is_dir():
        print(
            f"wandb_sync: error: {root} does not exist; pass the folder your runs are in",
            file=sys.stderr,
        )
        return 2
    runs = offline_runs(root)
    print(f"{len(runs)} offline wandb run(s) under {root}:")
    for r in runs:
        print(f"  {r}")
    if not runs or args.dry_run:
        return 0
    if not logged_in():
        print(
            "not logged in to wandb (no WANDB_API_KEY, no `wandb login`): nothing uploaded; "
            "log in and run this again"
        )
        return 0
    wandb_cli = Path(sys.executable).with_name("wandb")
    return subprocess.run([str(wandb_cli), "sync", *map(str, runs)]).returncode


if __name__ == "__main__":
    sys.exit(main())
