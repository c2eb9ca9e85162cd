#!/usr/bin/env python
"""Cost of the batch-statistics probe on a ResNet-20 training step, measured side by side.

Runs blocks of training steps with the probe off, on the first BN layer, and on all 19 BN layers,
alternating the three in every round (so drifting machine load hits them alike), and prints the
median step time of each and the ratios to probe-off. Not a test: timings belong in benchmarks.

    python scripts/bench_probe.py [--rounds 5] [--steps 20] [--batch 128] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from normlab.bench.steps import sgd_step
from normlab.models import build_model
from normlab.norms import norm_factory
from normlab.probe.batch_stats import BatchStatsProbe


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model({"name": "resnet20"}, norm_factory({"name": "bn"}, "image"))
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    def block(probe: BatchStatsProbe | None) -> float:
        t0 = time.perf_counter()
        for step in range(1, args.steps + 1):
            sgd_step(model, opt, x, y, probe, step)
        return (time.perf_counter() - t0) / args.steps

    configs = {"off": None, "first": "first", "all": "all"}
    times: dict[str, list[float]] = {k: [] for k in configs}
    block(None)  # warm-up
    for _ in range(args.rounds):
        for name, layers in configs.items():
            probe = BatchStatsProbe(model, layers=layers) if layers else None
            times[name].append(block(probe))
            if probe is not None:
                probe.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "median_step_s": med,
        "overhead_first_layer": med["first"] / med["off"] - 1,
        "overhead_all_layers": med["all"] / med["off"] - 1,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "steps_per_block": args.steps,
        "torch": torch.__version__,
    }
    print(
        f"step time: off {med['off'] * 1e3:.1f} ms, first layer {med['first'] * 1e3:.1f} ms, "
        f"all 19 layers {med['all'] * 1e3:.1f} ms"
    )
    print(
        f"probe overhead: first layer {100 * result['overhead_first_layer']:+.1f}%, "
        f"all layers {100 * result['overhead_all_layers']:+.1f}%"
    )
    if args.json:
        from normlab.io_utils import atomic_write_json
        from normlab.tracking.provenance import cpu_model, git_info

        atomic_write_json(args.json, result | {"cpu": cpu_model()} | git_info())


if __name__ == "__main__":
    main()
