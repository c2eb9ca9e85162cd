"""How a benchmark step is timed, and the autocast of `--amp` around a model's forward pass: the
same for normlab's cases and the references, so their ratios stay like for like."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch


def timed(step: Callable[[], object], steps: int, warmup: int, sync: Callable[[], object]) -> float:
    """Seconds per step over `steps` calls of `step`, after `warmup` untimed ones; `sync` waits
    for the device before each clock reading."""
    for _ in range(warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t) / steps


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The autocast context of `--amp` (a no-op context for none)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16}[amp])


def with_amp(model: torch.nn.Module, device: torch.device, amp: str) -> torch.nn.Module:
    """`model` with its forward pass under autocast and float32 outputs; the loss, the backward
    and the optimizer step stay outside autocast (as the training loop does it)."""
    if amp == "none":
        return model

    class Autocast(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            with autocast(device, amp):
                out = self.inner(*args)
            return out.float()

    return Autocast(model)
