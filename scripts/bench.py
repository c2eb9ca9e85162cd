#!/usr/bin/env python
"""`make bench`: normlab's training throughput next to plain reference loops, side by side.

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

    python scripts/bench.py [--rounds 3] [--steps 20] [--size cpu|paper] [--device cpu|cuda]
    python scripts/bench.py --dry-run        # every code path, a couple of steps, no files written
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {  # d_model, ffn, heads, layers (enc = dec); batch ~ tokens per side
    "smoke": (32, 64, 2, 1),
    "cpu": (256, 1024, 4, 3),
    "paper": (512, 1024, 4, 6),
}
CASES = [
    "resnet_pipeline",
    "resnet_reference",
    "resnet_model",
    "probe_first",
    "probe_all",
    "tf_ln",
    "tf_bn",
    "tf_pn",
    "tf_reference",
]


# ------------------------------------------------------------------------------ one case
def _timed(step, steps: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t) / steps


def _resnet(device, channels_last=True):
    import torch

    from normlab.models import build_model
    from normlab.norms import norm_factory

    torch.manual_seed(0)
    model = build_model({"name": "resnet20"}, norm_factory({"name": "bn"}, "image")).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    return model, opt


def run_case(case: str, args) -> dict:
    import torch

    from bench_probe import sgd_step  # scripts/ is on sys.path when this runs as a script

    steps_done = [0]

    def _sgd_step(model, opt, x, y, probe=None):
        steps_done[0] += 1
        sgd_step(model, opt, x, y, probe, steps_done[0])

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batch = args.batch
    if case.startswith(("resnet", "probe")):
        model, opt = _resnet(device, channels_last=case != "resnet_reference")
        if case == "resnet_reference":
            import torchvision.transforms as T
            from torchvision.datasets import ImageFolder

            tf = T.Compose(
                [
                    T.RandomCrop(32, padding=4),
                    T.RandomHorizontalFlip(),
                    T.ToTensor(),
                    T.Normalize((0.491, 0.482, 0.447), (0.247, 0.243, 0.261)),
                ]
            )
            ds = ImageFolder(str(Path(args.cifar) / "train"), transform=tf)
            loader = torch.utils.data.DataLoader(
                ds, batch_size=batch, shuffle=True, num_workers=args.workers, drop_last=True
            )
            it = iter(loader)

            def step():
                nonlocal it
                try:
                    x, y = next(it)
                except StopIteration:
                    it = iter(loader)
                    x, y = next(it)
                _sgd_step(
                    model, opt, x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                )
        elif case == "resnet_pipeline":
            from normlab.data import load_dataset
            from normlab.data.image_batches import ImageBatches

            data = load_dataset({"name": "cifar10", "root": args.cifar, "source": "imagefolder"})
            batches = ImageBatches(
                data.train_x,
                data.train_y,
                data.mean,
                data.std,
                batch,
                seed=0,
                device=device,
                channels_last=True,
            )
            state = {"epoch": 0, "it": batches.epoch(0)}

            def step():
                try:
                    x, y = next(state["it"])
                except StopIteration:
                    state["epoch"] += 1
                    state["it"] = batches.epoch(state["epoch"])
                    x, y = next(state["it"])
                _sgd_step(model, opt, x, y)
        else:
            from normlab.probe.batch_stats import BatchStatsProbe

            x = torch.randn(batch, 3, 32, 32, device=device).contiguous(
                memory_format=torch.channels_last
            )
            y = torch.randint(0, 10, (batch,), device=device)
            probe = None
            if case.startswith("probe"):
                probe = BatchStatsProbe(model, layers="first" if case == "probe_first" else "all")

            def step():
                _sgd_step(model, opt, x, y, probe)

        sec = _timed(step, args.steps, args.warmup, sync)
        items = batch
    else:
        d, ffn, heads, layers = SIZES[args.size]
        g = torch.Generator().manual_seed(0)
        vocab, pad, eos = 10_000, 1, 2
        # A fixed batch shaped like IWSLT14 at 4,096 tokens: 128 sentence pairs of 10-32 tokens.
        lengths = torch.randint(10, 33, (args.sentences,), generator=g)
        width = int(lengths.max())
        src = torch.randint(4, vocab, (len(lengths), width), generator=g)
        src[torch.arange(width)[None, :] >= lengths[:, None]] = pad
        tgt = src.roll(1, dims=1).clamp_min(4)
        tgt[src == pad] = pad
        prev = torch.cat([torch.full((len(lengths), 1), eos), tgt[:, :-1]], 1)
        src, tgt, prev = src.to(device), tgt.to(device), prev.to(device)
        ntok = int((tgt != pad).sum())
        torch.manual_seed(0)
        if case == "tf_reference":
            model = _reference_transformer(vocab, pad, d, ffn, heads, layers).to(device)
        else:
            from normlab.models import build_model
            from normlab.norms import norm_factory

            norm = {"tf_ln": "ln", "tf_bn": "bn", "tf_pn": "pn"}[case]
            model = build_model(
                {
                    "name": "transformer",
                    "d_model": d,
                    "ffn_dim": ffn,
                    "heads": heads,
                    "encoder_layers": layers,
                    "decoder_layers": layers,
                },
                norm_factory({"name": norm}, "sequence"),
                vocab_size=vocab,
                pad_idx=pad,
                norm_for=lambda c: norm_factory(c, "sequence"),
            ).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=1e-4)

        def step():
            logits = model(src, prev)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(),
                tgt.reshape(-1),
                ignore_index=pad,
                label_smoothing=0.1,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        sec = _timed(step, args.steps, args.warmup, sync)
        items = ntok
    import resource

    return {
        "case": case,
        "step_s": sec,
        "items_per_s": items / sec,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _reference_transformer(vocab: int, pad: int, d: int, ffn: int, heads: int, layers: int):
    """torch.nn.Transformer with the same sizes, shared embeddings and sinusoidal positions."""
    import math

    import torch
    from torch import nn

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, d, padding_idx=pad)
            self.core = nn.Transformer(
                d, heads, layers, layers, ffn, dropout=0.3, batch_first=True, norm_first=True
            )
            pos = torch.arange(1024)[:, None] * torch.exp(
                torch.arange(0, d, 2) * (-math.log(10000.0) / d)
            )
            self.register_buffer("pos", torch.cat([pos.sin(), pos.cos()], 1))

        def forward(self, src, prev):
            def emb(t):
                return self.embed(t) * math.sqrt(d) + self.pos[: t.size(1)]

            mask = self.core.generate_square_subsequent_mask(prev.size(1), device=prev.device)
            h = self.core(
                emb(src),
                emb(prev),
                tgt_mask=mask,
                src_key_padding_mask=src == pad,
                tgt_key_padding_mask=prev == pad,
                memory_key_padding_mask=src == pad,
            )
            return h @ self.embed.weight.t()

    return Reference()


# ------------------------------------------------------------------------------ orchestration
def machine() -> dict:
    import torch

    from normlab.tracking.provenance import cpu_model, git_info

    out = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    } | git_info()
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def markdown(results: dict, info: dict) -> str:
    med = results["median_items_per_s"]
    rss = results["median_peak_rss_mb"]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}"
        + (f", {info['gpu']}" if "gpu" in info else "")
        + f"; commit {str(info.get('git_commit'))[:10]}",
        "",
        "| case | items/s | peak RSS (MB) |",
        "|---|---|---|",
    ]
    for case, v in med.items():
        unit = "img/s" if case.startswith(("resnet", "probe")) else "tok/s"
        lines.append(f"| {case} | {v:,.0f} {unit} | {rss[case]:,.0f} |")
    lines += ["", "| ratio | value | target |", "|---|---|---|"]
    for name, (value, target) in results["ratios"].items():
        lines.append(f"| {name} | {value:.3f} | {target} |")
    return "\n".join(lines) + "\n"


def ratios(med: dict) -> dict:
    r = {}

    def add(name, a, b, target):
        if a in med and b in med:
            r[name] = (med[a] / med[b], target)

    add("resnet pipeline / reference loop", "resnet_pipeline", "resnet_reference", ">= 1.3")
    add("resnet pipeline / model-only step", "resnet_pipeline", "resnet_model", ">= 0.9")
    if "probe_first" in med:
        r["probe overhead, first layer"] = (med["resnet_model"] / med["probe_first"] - 1, "<= 0.03")
        r["probe overhead, all layers"] = (med["resnet_model"] / med["probe_all"] - 1, "<= 0.10")
    if "tf_ln" in med:
        for n in ("tf_bn", "tf_pn"):
            if n in med:
                r[f"{n} step time / tf_ln"] = (med["tf_ln"] / med[n], "<= 1.15")
        add("tf_ln / nn.Transformer reference", "tf_ln", "tf_reference", ">= 1.0")
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--case", help=argparse.SUPPRESS)  # run one case in this process
    ap.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument(
        "--sentences", type=int, default=128, help="sentence pairs per Transformer batch"
    )
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers of the reference loop"
    )
    ap.add_argument("--cifar", default=str(REPO.parent / "shared" / "data" / "cifar10-jpeg"))
    ap.add_argument("--out", default=str(REPO / "results" / "bench"))
    ap.add_argument(
        "--dry-run", action="store_true", help="2 steps per case, 1 round, nothing written"
    )
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return 0
    if args.dry_run:
        args.rounds, args.steps, args.warmup, args.size, args.sentences = 1, 2, 1, "smoke", 8
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
    runs: dict[str, list[dict]] = {c: [] for c in cases}
    for r in range(args.rounds):
        for case in cases:
            cmd = [sys.executable, __file__, "--case", case] + [
                f"--{k}={v}"
                for k, v in (
                    ("steps", args.steps),
                    ("warmup", args.warmup),
                    ("batch", args.batch),
                    ("sentences", args.sentences),
                    ("size", args.size),
                    ("device", args.device),
                    ("workers", args.workers),
                    ("cifar", args.cifar),
                )
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(f"bench: case {case} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[case].append(res)
            print(
                f"round {r + 1}/{args.rounds} {case:17s} {res['items_per_s']:10,.0f} items/s  "
                f"peak RSS {res['peak_rss_mb']:,.0f} MB",
                flush=True,
            )
    med = {c: statistics.median(x["items_per_s"] for x in v) for c, v in runs.items()}
    results = {
        "median_items_per_s": med,
        "median_peak_rss_mb": {
            c: statistics.median(x["peak_rss_mb"] for x in v) for c, v in runs.items()
        },
        "ratios": ratios(med),
        "settings": {
            k: getattr(args, k)
            for k in (
                "rounds",
                "steps",
                "warmup",
                "batch",
                "sentences",
                "size",
                "device",
                "workers",
            )
        },
        "runs": runs,
    }
    info = machine()
    md = markdown(results, info)
    print("\n" + md)
    if not args.dry_run:
        from normlab.io_utils import atomic_write_json, atomic_write_text

        atomic_write_json(
            Path(args.out) / f"bench_{args.device.split(':')[0]}.json", results | {"machine": info}
        )
        atomic_write_text(Path(args.out) / f"bench_{args.device.split(':')[0]}.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
