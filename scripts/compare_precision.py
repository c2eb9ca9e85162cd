#!/usr/bin/env python
"""float32 vs bfloat16 autocast, run pair by run pair: final metrics against the seed-to-seed
spread, and the first BN layer's Figure 2 medians per 20% window (results/precision/).

    python scripts/compare_precision.py \
        --pair "ResNet-20 BN" runs/cifar10_resnet20/cpu/norm=bn "runs/cifar10_resnet20/cpu/norm=bn,trainer.amp=bf16" \
        --spread "bleu=0.04:Table 1 cpu, BN, 3 seeds" --out results/precision

--twin LABEL RUN names the pair's float32 run with another seed: the spread of its final metrics
(where --spread gives none) and the seed-to-seed ratio of its Figure 2 window medians come from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normlab.analysis.precision_pair import Pair, compare, markdown
from normlab.io_utils import atomic_write_json, atomic_write_text


def _spread(text: str) -> tuple[str, float, str]:
    metric, sep, rest = text.partition("=")
    value, _, source = rest.partition(":")
    try:
        return metric, float(value), source
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--spread {text!r} is not METRIC=STD:SOURCE, e.g. bleu=0.04:Table 1 cpu seeds"
        ) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--pair", nargs=3, action="append", required=True, metavar=("LABEL", "FP32_RUN", "BF16_RUN")
    )
    ap.add_argument("--spread", type=_spread, action="append", default=[])
    ap.add_argument(
        "--twin", nargs=2, action="append", default=[], metavar=("LABEL", "FP32_OTHER_SEED_RUN")
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    twins = dict(args.twin)
    unknown = sorted(set(twins) - {label for label, _, _ in args.pair})
    if unknown:
        print(
            f"compare_precision: error: --twin {unknown[0]!r} names no --pair label",
            file=sys.stderr,
        )
        return 2
    pairs = [
        Pair(label, Path(a), Path(b), Path(twins[label]) if label in twins else None)
        for label, a, b in args.pair
    ]
    for p in pairs:
        for d in (p.fp32, p.bf16, *([p.twin] if p.twin else [])):
            if not (d / "summary.json").exists():
                print(
                    f"compare_precision: error: {d} has no summary.json; finish the run first",
                    file=sys.stderr,
                )
                return 2
    spread = {m: (v, s) for m, v, s in args.spread}
    results = [compare(p, spread) for p in pairs]
    md = "# float32 vs bfloat16 autocast: same config, same seed\n\n" + markdown(results)
    out = Path(args.out)
    atomic_write_text(out / "precision.md", md)
    atomic_write_json(out / "precision.json", {"pairs": results})
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
