"""One benchmark case in this process: its model, data and training step, timed; its result row.

The image cases (ResNet-20, the probe, the ViT) take SGD steps on images: normlab's pipeline, the
usual torchvision DataLoader loop, or one fixed batch (the model step alone). The Transformer cases
take AdamW steps on one fixed batch of token pairs shaped like IWSLT14's.
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from normlab.bench import models
from normlab.bench.catalog import SIZES, is_image_case
from normlab.bench.steps import sgd_step
from normlab.bench.timing import timed, with_amp

Step = Callable[[], None]
Prepare = Callable[[torch.nn.Module], torch.nn.Module]
TrainOn = Callable[[torch.Tensor, torch.Tensor], None]  # one SGD step on a batch


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time `args.steps` steps of `case` after `args.warmup`; items/s, parameters, peak memory."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and device.index is not None:
        torch.cuda.set_device(device)  # synchronize() and the memory counters follow it
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)

    def prepare(model: torch.nn.Module) -> torch.nn.Module:  # normlab's cases and references alike
        model = with_amp(model, device, args.amp)
        return torch.compile(model) if args.compile else model

    build = _image_case if is_image_case(case) else _transformer_case
    step, params, items = build(case, args, device, prepare)
    sec = timed(step, args.steps, args.warmup, sync)
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


def _image_case(
    case: str, args: argparse.Namespace, device: torch.device, prepare: Prepare
) -> tuple[Step, int, int]:
    """The step of an image case, the model's parameter count, and the images per step."""
    if case.startswith("vit"):
        model, opt = models.vit(device, {"vit_ln": "ln", "vit_pn": "pn"}.get(case, "bn"))
    else:
        model, opt = models.resnet(device, channels_last=case != "resnet_reference")
    params = sum(p.numel() for p in model.parameters())
    probe = None
    if "probe" in case:  # on the plain model's layers, before any wrapping
        from normlab.probe.batch_stats import BatchStatsProbe

        probe = BatchStatsProbe(model, layers="first" if case == "probe_first" else "all")
    model = prepare(model)
    steps_done = 0

    def train_on(x: torch.Tensor, y: torch.Tensor) -> None:
        nonlocal steps_done
        steps_done += 1
        sgd_step(model, opt, x, y, probe, steps_done)

    if case == "resnet_reference":
        step = _reference_loop(args, device, train_on)
    elif case == "resnet_pipeline":
        step = _pipeline(args, device, train_on)
    else:
        x = torch.randn(args.batch, 3, 32, 32, device=device)
        if not case.startswith("vit"):
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (args.batch,), device=device)

        def step() -> None:
            train_on(x, y)

    return step, params, args.batch


def _reference_loop(args: argparse.Namespace, device: torch.device, train_on: TrainOn) -> Step:
    """The usual public CIFAR loop: ImageFolder + per-image PIL transforms through a DataLoader."""
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
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    it = iter(loader)

    def step() -> None:
        nonlocal it
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        train_on(x.to(device, non_blocking=True), y.to(device, non_blocking=True))

    return step


def _pipeline(args: argparse.Namespace, device: torch.device, train_on: TrainOn) -> Step:
    """normlab's pipeline: the uint8 cache and batched augmentation (on the device)."""
    from normlab.data import load_dataset
    from normlab.data.image_batches import ImageBatches

    data = load_dataset({"name": "cifar10", "root": args.cifar, "source": "imagefolder"})
    batches = ImageBatches(
        data.train_x,
        data.train_y,
        data.mean,
        data.std,
        args.batch,
        seed=0,
        device=device,
        channels_last=True,
    )
    state = {"epoch": 0, "it": batches.epoch(0)}

    def step() -> None:
        try:
            x, y = next(state["it"])
        except StopIteration:
            state["epoch"] += 1
            state["it"] = batches.epoch(state["epoch"])
            x, y = next(state["it"])
        train_on(x, y)

    return step


def _transformer_case(
    case: str, args: argparse.Namespace, device: torch.device, prepare: Prepare
) -> tuple[Step, int, int]:
    """The step of a Transformer case, the model's parameter count, and the target tokens."""
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
        model = models.reference_transformer(vocab, pad, d, ffn, heads, layers)
    else:
        norm = {"tf_ln": "ln", "tf_bn": "bn", "tf_pn": "pn"}[case]
        model = models.transformer(norm, vocab, pad, d, ffn, heads, layers)
    model = model.to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=1e-4)
    model = prepare(model)

    def step() -> None:
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

    return step, params, ntok
