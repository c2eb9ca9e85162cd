"""What machine the benchmark ran on, and whether its device has bfloat16 instructions."""

from __future__ import annotations

import os
from typing import Any

import torch

from normlab.tracking.provenance import cpu_bf16_capability, cpu_model, git_info
from normlab.train.precision import native_bf16


def machine() -> dict[str, Any]:
    """CPU, its bf16 instructions, what trainer.amp=auto picks, cores, torch, threads, git, GPU."""
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


def auto_amp(device: torch.device) -> str:
    """--amp auto: measure bf16 next to float32 wherever the device has bf16 instructions (even
    where trainer.amp=auto would not pick it: the table shows why), else float32 alone."""
    if device.type == "cuda":
        has = torch.cuda.is_bf16_supported()
    else:
        has = any(cpu_bf16_capability().values())
    if not has:
        print(f"bench: {device.type} has no bfloat16 instructions (AMX, AVX512-BF16): float32 only")
    return "both" if has else "none"
