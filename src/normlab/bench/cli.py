"""The benchmark's command line (scripts/bench.py, `python -m normlab.bench`): its options, their
defaults on the device, the checks made before any case runs, and which set of cases runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from normlab.bench.catalog import CASES, SIZES


def _checkout() -> Path:
    """The checkout holding this package (an editable install), else the working directory."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


REPO = _checkout()
# What --help prints: the set of cases and how they are measured.
DESCRIPTION = """`make bench`: normlab's training throughput next to plain reference loops, side by side.

Each case runs in its own subprocess (so its peak resident memory is its own) for a fixed number of
steps after a warm-up; the cases are alternated over several rounds so drifting machine load hits
them alike, and the medians and their ratios are reported:

  resnet_pipeline   normlab: uint8 cache + batched augmentation + ResNet-20 (channels_last) + SGD
  resnet_reference  the usual public CIFAR loop: torchvision ImageFolder + per-image PIL transforms
                    through a DataLoader, the same ResNet-20 with nn.BatchNorm2d, same SGD
  resnet_model      the model step alone on one fixed batch (the ceiling for the pipeline)
  probe_first/all   resnet_model with the batch-statistics probe on the first / all 19 BN layers
  tf_ln/bn/pn       normlab's Transformer (cpu or paper size) with LN, masked BN, PowerNorm
  tf_reference      torch.nn.Transformer with the same sizes, batch, embeddings and optimizer
  vit_ln/bn/pn      the ViT of `experiment=cifar10_vit scale=cpu` (d 128, 4 layers) model step on
                    one fixed image batch with LN, BN over batch x tokens, PowerNorm
  vit_probe_all     vit_bn with the probe on all its BN layers

--amp bf16 (autocast of the forward pass) and --compile (torch.compile) apply to every case alike,
normlab's and the references, so the ratios stay like for like. --amp both (what `--amp auto`, the
default, picks where the device has bf16 instructions: AMX or AVX512-BF16 on a CPU, bf16 on a GPU)
runs every case in float32 and in bf16 alternately and adds a precision table with the speed-ups;
the ratios above stay float32's. Without bf16 instructions `auto` says so and measures float32. On a GPU the timings synchronize
the device, the data of resnet_pipeline stays on it (augmentation included), and the peak GPU
memory (torch.cuda.max_memory_allocated) is reported next to the peak RSS.

--scaling runs another set instead (not part of `make bench`): the ResNet-20 model step at batch
32/64/128/256 and normlab's LN Transformer at d_model 128/256/512 (ffn 4*d_model, the same token
batch), as a table, with a straight-line fit step = a + b*batch, and under "scaling" in the JSON.

    python scripts/bench.py [--rounds 3] [--steps 20] [--size cpu|paper] [--device cpu|cuda]
                            [--amp none|bf16] [--compile] [--json PATH]
    python scripts/bench.py --scaling [--device cpu|cuda]      # results/bench/scaling_<device>.*
    python scripts/bench.py --dry-run [--scaling]   # every code path, a couple of steps, no files
"""


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The options of scripts/bench.py (`--case` and `--d-model`: one case in this process)."""
    ap = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--case", help=argparse.SUPPRESS)  # run one case in this process
    ap.add_argument("--d-model", type=int, default=None, help=argparse.SUPPRESS)  # --scaling
    ap.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    ap.add_argument("--scaling", action="store_true", help="step time vs batch and model size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (20 on cpu, 100 on cuda)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (3 on cpu, 10 on cuda)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument(
        "--sentences", type=int, default=128, help="sentence pairs per Transformer batch"
    )
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument(
        "--amp",
        choices=("auto", "none", "bf16", "both"),
        default="auto",
        help="autocast the forward pass; both: float32 and bf16 side by side; auto: both where "
        "the device has bf16 instructions, else none",
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile every model")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers of the reference loop (0 on cpu, up to 8 on cuda)",
    )
    ap.add_argument("--cifar", default=str(REPO.parent / "shared" / "data" / "cifar10-jpeg"))
    ap.add_argument("--out", default=str(REPO / "results" / "bench"))
    ap.add_argument(
        "--json", default=None, help="write the results here (and the table next to it as .md)"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="2 steps per case, 1 round, nothing written"
    )
    return ap


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse, check and run; the exit status (2: a refused command line, 1: a case failed)."""
    args = parser(prog).parse_args(argv)
    if args.case:
        from normlab.bench.cases import run_case

        print(json.dumps(run_case(args.case, args)))
        return 0
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(
            f"bench: --device {args.device!r} is not a device (cpu, cuda, cuda:N)", file=sys.stderr
        )
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"bench: --device {args.device} needs a CUDA GPU, but torch sees none on this machine;"
            " use --device cpu (add --dry-run to check the code path).",
            file=sys.stderr,
        )
        return 2
    cuda = device.type == "cuda"
    if args.scaling and args.amp == "both":
        print(
            "bench: --scaling measures one precision; use --amp none or --amp bf16", file=sys.stderr
        )
        return 2
    if args.amp == "auto":
        from normlab.bench.machine import auto_amp

        args.amp = "none" if args.scaling else auto_amp(device)
    args.steps = args.steps if args.steps is not None else (100 if cuda else 20)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 3)
    if args.workers is None:
        args.workers = min(8, os.cpu_count() or 1) if cuda else 0
    if args.dry_run:
        args.rounds, args.steps, args.warmup, args.size, args.sentences = 1, 2, 1, "smoke", 8
    from normlab.bench.runner import run_cases, run_scaling

    if args.scaling:
        return run_scaling(args)
    cases = [
        c
        for c in args.cases
        if not c.startswith("resnet") or c == "resnet_model" or Path(args.cifar).is_dir()
    ]
    skipped = sorted(set(args.cases) - set(cases))
    if skipped:
        print(
            f"skipping {', '.join(skipped)}: no CIFAR-10 image folder at {args.cifar} (--cifar DIR)"
        )
    return run_cases(args, cases, cuda)
