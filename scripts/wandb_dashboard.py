#!/usr/bin/env python
"""wandb dashboard of a sweep group: the regenerated figures and box-statistics tables as one wandb
run of the group, and the panels that mirror Figures 2 and 3 (the probe's series of the first BN
layer against train/step, one line per norm; src/normlab/tracking/wandb_dashboard.py).

    python scripts/wandb_dashboard.py --group cifar10_resnet20 \\
        --results results/fig2/cpu --results results/fig3/cpu    # log figures + tables
    python scripts/wandb_dashboard.py --group cifar10_resnet20      # only the dashboard panels
    python scripts/wandb_dashboard.py --group cifar10_resnet20 --print-spec   # show them, no wandb
    python scripts/wandb_dashboard.py --group iwslt14_transformer --out dashboard.yaml

The first BN layer is read from the group's runs' probe rows (runs/<group>/<scale>/<job>/probe,
under $NORMLAB_RUNS, else the committed results/runs/); --layer names the layers instead.
Offline unless you are logged in (WANDB_API_KEY or `wandb login`), as for logger=wandb: the offline
run lands in $NORMLAB_RUNS/wandb_figures (default runs/), where `make wandb-sync` finds it. Logged in
and with `pip install wandb-workspaces`, the panels are saved as a workspace view of the project;
otherwise --print-spec / --out give their definition (also stored in the run's artifact).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from normlab.errors import UserError
from normlab.tracking.wandb_dashboard import make_dashboard


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--group", action="append", required=True, help="wandb group = experiment (repeatable)"
    )
    ap.add_argument(
        "--results", action="append", type=Path, default=[], help="a folder of figures and CSVs"
    )
    ap.add_argument(
        "--layer",
        action="append",
        help="probe layer to plot (repeatable; default: each group's first BN layer, from its runs)",
    )
    ap.add_argument("--project", default="normlab")
    ap.add_argument("--entity", default=None)
    ap.add_argument("--mode", choices=["online", "offline", "disabled"], default=None)
    ap.add_argument(
        "--wandb-dir",
        type=Path,
        default=Path(os.environ.get("NORMLAB_RUNS", "runs")) / "wandb_figures",
        help="where the local wandb run goes (default: $NORMLAB_RUNS/wandb_figures)",
    )
    ap.add_argument("--out", type=Path, help="also write the panel definition here (.json, .yaml)")
    ap.add_argument(
        "--print-spec", action="store_true", help="print the panel definition; log nothing"
    )
    args = ap.parse_args(argv)
    try:
        make_dashboard(**vars(args))
    except UserError as err:
        print(f"wandb_dashboard: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
