#!/usr/bin/env python
"""Figure 2, 3 or 4 of the paper from run directories (box plots per 20% window of the steps each
run trained + CSV + summary with verdicts; fig2 adds the growth analysis fig2_growth.png/.svg/.json
for runs that log their input scale, fig3 both gradient conventions for runs that log
loss_normalizer).

    python scripts/plot_batch_stats.py fig2 --run "ResNet-20 / CIFAR-10=runs/.../norm=bn" \
        --run "Transformer_BN / IWSLT14=runs/...:encoder_layers.0.self_attn_norm" --out results/fig2/cpu

A run is LABEL=RUN_DIR, optionally followed by :LAYER (default: the run's first BN layer).
"""

from __future__ import annotations

import argparse
import sys

from normlab.analysis.batch_stats_figure import FIGURES, make_figure


def parse_run(text: str) -> tuple[str, str, str | None]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--run {text!r} is not LABEL=RUN_DIR[:LAYER]")
    label, rest = text.split("=", 1)
    run, _, layer = rest.partition(":")
    return label, run, layer or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("figure", choices=sorted(FIGURES))
    ap.add_argument(
        "--run", action="append", type=parse_run, required=True, help="LABEL=RUN_DIR[:LAYER]"
    )
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    try:
        out = make_figure(args.run, args.figure, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"plot_batch_stats: error: {err}", file=sys.stderr)
        return 2
    print((out / f"{args.figure}_summary.txt").read_text())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
