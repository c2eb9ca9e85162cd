#!/usr/bin/env python
"""Test finished BN runs with three sets of BN statistics: EMA running (ema), population over
training batches (precise, "PreciseBN"), each evaluation batch's own (batch).

    python scripts/inference_stats.py runs/cifar10_resnet20/cpu/norm=bn \
        runs/iwslt14_transformer/cpu/norm=bn --out results/inference_stats/cpu

Each run's summary.json gains `inference_stats`; --out gets table.md, table.csv, provenance.json.
Every run is checked before anything is computed or written. Runs without BN running statistics
(LN, GN, PowerNorm, ...) are skipped with one line. See normlab.train.inference_stats.
"""

from __future__ import annotations

import argparse
import sys
import time

from normlab.analysis.inference_stats_table import to_markdown, write_results
from normlab.errors import UserError
from normlab.train.inference_stats import (
    MIN_VALUES,
    MODES,
    check_options,
    check_run,
    evaluate_inference_modes,
    record_in_summary,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    ap.add_argument("--out", required=True, help="folder for table.md, table.csv, provenance.json")
    ap.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}"
    )
    ap.add_argument(
        "--batches",
        type=int,
        default=None,
        help="training batches for precise (default: enough for --min-values, at most one epoch)",
    )
    ap.add_argument("--min-values", type=int, default=MIN_VALUES, help="values per feature")
    ap.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda[:N]")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args(argv)
    argv_used = sys.argv if argv is None else ["scripts/inference_stats.py", *argv]
    t0 = time.perf_counter()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        check_options(modes, args.batches)
        for run_dir in args.run_dirs:  # all checked first: a bad one leaves nothing half-written
            check_run(run_dir)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        results = []
        for run_dir in args.run_dirs:
            print(f"{run_dir}: evaluating {', '.join(modes)} ...", flush=True)
            results.append(
                evaluate_inference_modes(
                    run_dir, modes, args.batches, min_values=args.min_values, device=args.device
                )
            )
    except UserError as err:
        print(f"inference_stats: error: {err}", file=sys.stderr)
        return 2
    for result in results:
        if "skipped" in result:
            print(f"{result['run_dir']}: {result['skipped']}")
        else:
            record_in_summary(result)
    out = write_results(results, args.out, time.perf_counter() - t0, argv_used)
    print(to_markdown(results))
    print(f"wrote {out}/table.md, table.csv, provenance.json and each run's summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
