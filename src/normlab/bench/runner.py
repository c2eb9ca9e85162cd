"""The rounds of a benchmark: each case in a fresh process (so its peak memory is its own), the
cases alternated over rounds (so drifting machine load hits them alike), then the medians, the
tables printed and the files written."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from normlab.bench.catalog import BF16, SCALING_BATCHES, SCALING_D_MODELS
from normlab.bench.report import markdown, memory, ratios, scaling_markdown, scaling_results


def run_subprocess(case: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any] | None:
    """One case in a fresh process; its JSON line, or None (and the error printed) if it failed."""
    opts = {
        "steps": args.steps,
        "warmup": args.warmup,
        "batch": args.batch,
        "sentences": args.sentences,
        "size": args.size,
        "device": args.device,
        "workers": args.workers,
        "cifar": args.cifar,
        "amp": args.amp,
    } | extra
    cmd = [sys.executable, "-m", "normlab.bench", "--case", case]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    if args.compile:
        cmd.append("--compile")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        print(f"bench: case {case} {extra or ''} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options that shape the numbers, as the JSON records them."""
    keys = (
        "rounds",
        "steps",
        "warmup",
        "batch",
        "sentences",
        "size",
        "device",
        "workers",
        "amp",
        "compile",
    )
    return {k: getattr(args, k) for k in keys}


def write(args: argparse.Namespace, default_name: str, results: dict[str, Any], md: str) -> None:
    """The JSON at --json (else --out/<default_name>.json) and the table beside it as .md."""
    from normlab.io_utils import atomic_write_json, atomic_write_text

    path = Path(args.json) if args.json else Path(args.out) / f"{default_name}.json"
    atomic_write_json(path, results)
    atomic_write_text(path.with_suffix(".md"), md)
    print(f"wrote {path} and {path.with_suffix('.md')}")


def run_scaling(args: argparse.Namespace) -> int:
    """--scaling: the ResNet-20 step by batch and the LN Transformer by width; exit status."""
    from normlab.bench.machine import machine

    points = [("resnet_model", b) for b in SCALING_BATCHES]
    points += [("tf_ln", d) for d in SCALING_D_MODELS]
    runs: dict[tuple[str, int], list[dict]] = {p: [] for p in points}
    for r in range(args.rounds):
        for case, value in points:
            extra = {"batch": value} if case == "resnet_model" else {"d_model": value}
            res = run_subprocess(case, args, **extra)
            if res is None:
                return 1
            runs[(case, value)].append(res)
            name = f"{case} {'batch' if case == 'resnet_model' else 'd_model'} {value}"
            print(
                f"round {r + 1}/{args.rounds} {name:22s} {1e3 * res['step_s']:9.1f} ms/step "
                f"{res['items_per_s']:10,.0f} items/s  {memory(res)}",
                flush=True,
            )
    sc = scaling_results(runs)
    info = machine()
    md = scaling_markdown(sc, info, args)
    print("\n" + md)
    if not args.dry_run:
        raw = {f"{c}:{v}": x for (c, v), x in runs.items()}
        results = {"scaling": sc, "settings": settings(args), "runs": raw, "machine": info}
        write(args, f"scaling_{args.device.split(':')[0]}", results, md)
    return 0


def run_cases(args: argparse.Namespace, cases: list[str], cuda: bool) -> int:
    """`cases` over the rounds (with --amp both, each in float32 and bf16); exit status."""
    from normlab.bench.machine import machine

    # (name, amp) pairs; with --amp both each case runs in float32 and bf16 back to back, so
    # drifting machine load hits the two precisions alike.
    amps = ["none", "bf16"] if args.amp == "both" else [args.amp]
    jobs = [
        (c + (BF16 if amp == "bf16" and len(amps) == 2 else ""), c, amp)
        for c in cases
        for amp in amps
    ]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in jobs}
    for r in range(args.rounds):
        for name, case, amp in jobs:
            res = run_subprocess(case, args, amp=amp)
            if res is None:
                return 1
            runs[name].append(res)
            print(
                f"round {r + 1}/{args.rounds} {name:22s} {res['items_per_s']:10,.0f} items/s  "
                f"{memory(res)}",
                flush=True,
            )
    med = {c: statistics.median(x["items_per_s"] for x in v) for c, v in runs.items()}
    results = {
        "median_items_per_s": med,
        "median_peak_rss_mb": {
            c: statistics.median(x["peak_rss_mb"] for x in v) for c, v in runs.items()
        },
        "ratios": ratios(med),
        "settings": settings(args),
        "runs": runs,
    }
    if cuda:
        results["median_peak_gpu_mb"] = {
            c: statistics.median(x["peak_gpu_mb"] for x in v) for c, v in runs.items()
        }
    info = machine()
    md = markdown(results, info, args)
    print("\n" + md)
    if not args.dry_run:
        write(args, f"bench_{args.device.split(':')[0]}", results | {"machine": info}, md)
    return 0
