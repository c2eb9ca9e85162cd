#!/usr/bin/env python
"""Which of the official Transformer_BN's differences from masked BN (LayerScaling, mean-filled
pads, momentum 0.05) moves the Figure 2 distances: the first BN layer's window medians of every
variant against the base run, judged against the base's seed twin, and every run's final metrics
(variants.md, variants.json; logic in normlab.analysis.bn_variants). `make fig2-bn-variants`
trains the runs and calls this:

    python scripts/compare_bn_variants.py --base bn=DIR --twin "bn seed 1=DIR" \\
        --variant LayerScaling=DIR --variant "momentum 0.05=DIR" ... \\
        --effect "pads=bn_official/LayerScaling+momentum" --out results/fig2/cpu_bn_variants

--effect NAME=A/B adds the window ratio of run A to run B (labels) to the decomposition.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normlab.analysis.bn_variants import compare, markdown, parse_effect, parse_run
from normlab.errors import UserError
from normlab.io_utils import atomic_write_json, atomic_write_text
from normlab.tracking.provenance import environment, git_info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--base", required=True, metavar="LABEL=RUN_DIR")
    ap.add_argument("--twin", required=True, metavar="LABEL=RUN_DIR", help="the base, another seed")
    ap.add_argument("--variant", action="append", required=True, metavar="LABEL=RUN_DIR")
    ap.add_argument("--effect", action="append", default=[], metavar="NAME=LABEL/LABEL")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        result = compare(
            parse_run(args.base, "--base"),
            parse_run(args.twin, "--twin"),
            [parse_run(v, "--variant") for v in args.variant],
            [parse_effect(e) for e in args.effect],
        )
    except (UserError, ValueError, FileNotFoundError) as err:  # a run without (BN) probe rows
        print(f"compare_bn_variants: error: {err}", file=sys.stderr)
        return 2
    result["made_with"] = git_info() | {"plot_env": environment("cpu")}  # as the figures'
    md = markdown(result)
    out = Path(args.out)
    atomic_write_text(out / "variants.md", md)
    atomic_write_json(out / "variants.json", result)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
