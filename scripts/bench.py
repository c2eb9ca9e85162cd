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
SCALING_BATCHES = (32, 64, 128, 256)  # ResNet-20 model step
SCALING_D_MODELS = (128, 256, 512)  # LN Transformer, ffn = 4 * d_model, same token batch
BF16 = "@bf16"  # suffix of a case measured under bf16 autocast when --amp both
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
    "vit_ln",
    "vit_bn",
    "vit_pn",
    "vit_probe_all",
]
# The ViT's cpu preset (configs/preset/cifar10_vit/cpu.yaml) over configs/model/vit.yaml's defaults.
VIT_CPU = {"name": "vit", "d_model": 128, "layers": 4, "heads": 4, "mlp_dim": 256}


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


def _autocast(device, amp: str):
    """The autocast context of `--amp` (a no-op context for none)."""
    import contextlib

    import torch

    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16}[amp])


def _with_amp(model, device, amp: str):
    """`model` with its forward pass under autocast and float32 outputs; the loss, the backward
    and the optimizer step stay outside autocast (as the training loop does it)."""
    if amp == "none":
        return model
    import torch

    class Autocast(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            with _autocast(device, amp):
                out = self.inner(*args)
            return out.float()

    return Autocast(model)


def _vit(device, norm: str):
    import torch

    from normlab.models import build_model
    from normlab.norms import norm_factory

    torch.manual_seed(0)
    model = build_model(VIT_CPU, norm_factory({"name": norm}, "sequence")).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    return model, opt


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
    cuda = device.type == "cuda"
    if cuda and device.index is not None:
        torch.cuda.set_device(device)  # synchronize() and the memory counters follow it
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)

    def prepare(model):  # the same for normlab's cases and the references
        model = _with_amp(model, device, args.amp)
        return torch.compile(model) if args.compile else model

    batch = args.batch
    if case.startswith(("resnet", "probe", "vit")):
        if case.startswith("vit"):
            norm = {"vit_ln": "ln", "vit_pn": "pn"}.get(case, "bn")
            model, opt = _vit(device, norm)
        else:
            model, opt = _resnet(device, channels_last=case != "resnet_reference")
        params = sum(p.numel() for p in model.parameters())
        probe = None
        if "probe" in case:  # on the plain model's layers, before any wrapping
            from normlab.probe.batch_stats import BatchStatsProbe

            probe = BatchStatsProbe(model, layers="first" if case == "probe_first" else "all")
        model = prepare(model)
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
                ds,
                batch_size=batch,
                shuffle=True,
                num_workers=args.workers,
                drop_last=True,
                pin_memory=cuda,
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
            x = torch.randn(batch, 3, 32, 32, device=device)
            if not case.startswith("vit"):
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (batch,), device=device)

            def step():
                _sgd_step(model, opt, x, y, probe)

        sec = _timed(step, args.steps, args.warmup, sync)
        items = batch
    else:
        d, ffn, heads, layers = SIZES[args.size]
        if args.d_model:  # --scaling: the size's depth and heads, this width, ffn = 4 * width
            d, ffn = args.d_model, 4 * args.d_model
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
        params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=1e-4)
        model = prepare(model)

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

    out = {
        "case": case,
        "items_per_step": items,
        "params": params,
        "step_s": sec,
        "items_per_s": items / sec,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.d_model:
        out["d_model"] = args.d_model
    if cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


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

    from normlab.tracking.provenance import cpu_bf16_capability, cpu_model, git_info
    from normlab.train.precision import native_bf16

    out = {
        "cpu": cpu_model(),
        "cpu_bf16": cpu_bf16_capability(),
        "auto_precision": "bf16" if native_bf16(torch.device("cpu")) else "float32",
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    } | git_info()
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
        out["cuda"] = torch.version.cuda
    return out


def _header(info: dict, args) -> str:
    bf16 = info.get("cpu_bf16", {})
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}"
        + f" (CPU bf16: AMX {'yes' if bf16.get('amx_bf16') else 'no'}, "
        + f"AVX512-BF16 {'yes' if bf16.get('avx512_bf16') else 'no'}; "
        + f"trainer.amp=auto picks {info.get('auto_precision', '?')})"
        + (f", {info['gpu']}" if "gpu" in info else "")
        + f"; device {args.device}, amp {args.amp}, compile {args.compile}"
        + f"; commit {str(info.get('git_commit'))[:10]}"
    )


def markdown(results: dict, info: dict, args) -> str:
    med = results["median_items_per_s"]
    rss = results["median_peak_rss_mb"]
    gpu = results.get("median_peak_gpu_mb", {})
    lines = [
        _header(info, args),
        "",
        "| case | items/s | peak RSS (MB) |" + (" peak GPU (MB) |" if gpu else ""),
        "|---|---|---|" + ("---|" if gpu else ""),
    ]
    for case, v in med.items():
        unit = "img/s" if case.startswith(("resnet", "probe", "vit")) else "tok/s"
        lines.append(
            f"| {case} | {v:,.0f} {unit} | {rss[case]:,.0f} |"
            + (f" {gpu[case]:,.0f} |" if gpu else "")
        )
    lines += ["", "| ratio (float32) | value | target |", "|---|---|---|"]
    for name, (value, target) in results["ratios"].items():
        lines.append(f"| {name} | {value:.3f} | {target} |")
    speedups = precision_speedups(med)
    if speedups:
        lines += [
            "",
            "| case | float32 items/s | bf16 items/s | bf16 speed-up |",
            "|---|---|---|---|",
        ]
        for case, (fp32, bf16, ratio) in speedups.items():
            lines.append(f"| {case} | {fp32:,.0f} | {bf16:,.0f} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def precision_speedups(med: dict) -> dict:
    """case -> (float32 items/s, bf16 items/s, bf16 / float32) for cases measured both ways."""
    return {
        case: (med[case], med[f"{case}{BF16}"], med[f"{case}{BF16}"] / med[case])
        for case in med
        if f"{case}{BF16}" in med
    }


def ratios(med: dict) -> dict:
    r = {}

    def add(name, a, b, target):
        if a in med and b in med:
            r[name] = (med[a] / med[b], target)

    add("resnet pipeline / reference loop", "resnet_pipeline", "resnet_reference", ">= 1.3")
    add("resnet pipeline / model-only step", "resnet_pipeline", "resnet_model", ">= 0.9")
    for probe, name, target in (
        ("probe_first", "first layer", "<= 0.03"),
        ("probe_all", "all layers", "<= 0.10"),
    ):
        if probe in med and "resnet_model" in med:
            r[f"probe overhead, {name}"] = (med["resnet_model"] / med[probe] - 1, target)
    if "tf_ln" in med:
        for n in ("tf_bn", "tf_pn"):
            if n in med:
                r[f"{n} step time / tf_ln"] = (med["tf_ln"] / med[n], "<= 1.15")
        add("tf_ln / nn.Transformer reference", "tf_ln", "tf_reference", ">= 1.0")
    if "vit_ln" in med:
        for n in ("vit_bn", "vit_pn"):
            if n in med:
                r[f"{n} step time / vit_ln"] = (med["vit_ln"] / med[n], "<= 1.15")
    if "vit_bn" in med and "vit_probe_all" in med:
        r["probe overhead, ViT all layers"] = (med["vit_bn"] / med["vit_probe_all"] - 1, "<= 0.10")
    return r


# ------------------------------------------------------------------------------ scaling
def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares a, b of y = a + b*x."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def scaling_results(runs: dict[tuple[str, int], list[dict]]) -> dict:
    """Median step time per point, and the fits the cpu scale's budget can be read from."""
    import math

    def point(key, name):
        v = runs[key]
        step = statistics.median(x["step_s"] for x in v)
        out = {
            name: key[1],
            "params": v[0]["params"],
            "items_per_step": v[0]["items_per_step"],
            "step_s": step,
            "items_per_s": v[0]["items_per_step"] / step,
            "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in v),
        }
        if "peak_gpu_mb" in v[0]:
            out["peak_gpu_mb"] = statistics.median(x["peak_gpu_mb"] for x in v)
        return out

    resnet = [point(k, "batch") for k in runs if k[0] == "resnet_model"]
    tf = [point(k, "d_model") for k in runs if k[0] == "tf_ln"]
    fit: dict = {}
    if len(resnet) > 1:
        a, b = _fit_line([p["batch"] for p in resnet], [p["step_s"] for p in resnet])
        fit["resnet20_step_s"] = {"a_s": a, "b_s_per_image": b, "form": "step_s = a + b * batch"}
    if len(tf) > 1:
        # step time ~ c * params^k: k from the log-log slope over the widths measured
        _, k = _fit_line([math.log(p["params"]) for p in tf], [math.log(p["step_s"]) for p in tf])
        fit["transformer_step_s"] = {"k": k, "form": "step_s ~ params^k (same token batch)"}
    return {"resnet20_batch": resnet, "transformer_d_model": tf, "fit": fit}


def scaling_markdown(sc: dict, info: dict, args) -> str:
    lines = [
        _header(info, args),
        "",
        "| ResNet-20 batch | step (ms) | img/s | ms per image |",
        "|---|---|---|---|",
    ]
    for p in sc["resnet20_batch"]:
        lines.append(
            f"| {p['batch']} | {1e3 * p['step_s']:,.1f} | {p['items_per_s']:,.0f} | "
            f"{1e3 * p['step_s'] / p['batch']:.3f} |"
        )
    tokens = sc["transformer_d_model"][0]["items_per_step"] if sc["transformer_d_model"] else 0
    lines += [
        "",
        f"| Transformer (LN) d_model, {tokens:,} target tokens | params (M) | step (ms) | tok/s |",
        "|---|---|---|---|",
    ]
    for p in sc["transformer_d_model"]:
        lines.append(
            f"| {p['d_model']} | {p['params'] / 1e6:.2f} | {1e3 * p['step_s']:,.1f} | "
            f"{p['items_per_s']:,.0f} |"
        )
    fit = sc["fit"]
    lines.append("")
    if "resnet20_step_s" in fit:
        f = fit["resnet20_step_s"]
        lines.append(
            f"ResNet-20 fit: step = {1e3 * f['a_s']:.1f} ms + {1e3 * f['b_s_per_image']:.3f} ms"
            " x batch"
        )
    if "transformer_step_s" in fit:
        lines.append(f"Transformer fit: step ~ params^{fit['transformer_step_s']['k']:.2f}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main
def _run_subprocess(case: str, args, **extra) -> dict | None:
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
    cmd = [sys.executable, __file__, "--case", case]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    if args.compile:
        cmd.append("--compile")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        print(f"bench: case {case} {extra or ''} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory(res: dict) -> str:
    out = f"peak RSS {res['peak_rss_mb']:,.0f} MB"
    if "peak_gpu_mb" in res:
        out += f", peak GPU {res['peak_gpu_mb']:,.0f} MB"
    return out


def _settings(args) -> dict:
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


def _write(args, default_name: str, results: dict, md: str) -> None:
    from normlab.io_utils import atomic_write_json, atomic_write_text

    path = Path(args.json) if args.json else Path(args.out) / f"{default_name}.json"
    atomic_write_json(path, results)
    atomic_write_text(path.with_suffix(".md"), md)
    print(f"wrote {path} and {path.with_suffix('.md')}")


def main_scaling(args) -> int:
    points = [("resnet_model", b) for b in SCALING_BATCHES]
    points += [("tf_ln", d) for d in SCALING_D_MODELS]
    runs: dict[tuple[str, int], list[dict]] = {p: [] for p in points}
    for r in range(args.rounds):
        for case, value in points:
            extra = {"batch": value} if case == "resnet_model" else {"d_model": value}
            res = _run_subprocess(case, args, **extra)
            if res is None:
                return 1
            runs[(case, value)].append(res)
            name = f"{case} {'batch' if case == 'resnet_model' else 'd_model'} {value}"
            print(
                f"round {r + 1}/{args.rounds} {name:22s} {1e3 * res['step_s']:9.1f} ms/step "
                f"{res['items_per_s']:10,.0f} items/s  {_memory(res)}",
                flush=True,
            )
    sc = scaling_results(runs)
    info = machine()
    md = scaling_markdown(sc, info, args)
    print("\n" + md)
    if not args.dry_run:
        raw = {f"{c}:{v}": x for (c, v), x in runs.items()}
        results = {"scaling": sc, "settings": _settings(args), "runs": raw, "machine": info}
        _write(args, f"scaling_{args.device.split(':')[0]}", results, md)
    return 0


def _auto_amp(device) -> str:
    """--amp auto: measure bf16 next to float32 wherever the device has bf16 instructions (even
    where trainer.amp=auto would not pick it: the table shows why), else float32 alone."""
    import torch

    from normlab.tracking.provenance import cpu_bf16_capability

    if device.type == "cuda":
        has = torch.cuda.is_bf16_supported()
    else:
        has = any(cpu_bf16_capability().values())
    if not has:
        print(f"bench: {device.type} has no bfloat16 instructions (AMX, AVX512-BF16): float32 only")
    return "both" if has else "none"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    args = ap.parse_args(argv)
    if args.case:
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
        args.amp = "none" if args.scaling else _auto_amp(device)
    args.steps = args.steps if args.steps is not None else (100 if cuda else 20)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 3)
    if args.workers is None:
        args.workers = min(8, os.cpu_count() or 1) if cuda else 0
    if args.dry_run:
        args.rounds, args.steps, args.warmup, args.size, args.sentences = 1, 2, 1, "smoke", 8
    if args.scaling:
        return main_scaling(args)
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
            res = _run_subprocess(case, args, amp=amp)
            if res is None:
                return 1
            runs[name].append(res)
            print(
                f"round {r + 1}/{args.rounds} {name:22s} {res['items_per_s']:10,.0f} items/s  "
                f"{_memory(res)}",
                flush=True,
            )
    med = {c: statistics.median(x["items_per_s"] for x in v) for c, v in runs.items()}
    results = {
        "median_items_per_s": med,
        "median_peak_rss_mb": {
            c: statistics.median(x["peak_rss_mb"] for x in v) for c, v in runs.items()
        },
        "ratios": ratios(med),
        "settings": _settings(args),
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
        _write(args, f"bench_{args.device.split(':')[0]}", results | {"machine": info}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
