"""trainer.amp: which precision the forward pass computes in.

  auto  bfloat16 autocast where the device computes bf16 natively and fast: a CUDA GPU with bf16,
        or a CPU with AMX tiles (amx_bf16); float32 everywhere else.
  bf16  bfloat16 autocast on any device.
  null  float32.

Under autocast BN/PN statistics, running buffers, the probe and the loss stay float32 (the norms
compute their statistics in float32 and the tasks take the loss on float32 logits).

Why AVX512-BF16 alone does not count as native: on a 2-core Xeon with avx512_bf16 but no AMX
(torch 2.14.1, one thread, measured side by side in one process) a 2048x512x2048 bf16 matmul ran
at 0.6x the float32 rate and whole training steps at 0.71-0.80x (ResNet-20 batch 128, the cpu and
long Transformers): oneDNN uses the dot-product instructions for few kernels and the casts cost
more than they save. With AMX the same step is ~2x faster. `make bench` measures both precisions
on the machine at hand.
"""

from __future__ import annotations

from typing import Any

import torch

from normlab.errors import UserError
from normlab.tracking.provenance import cpu_bf16_capability


def native_bf16(device: torch.device, cpu_capability: dict[str, bool] | None = None) -> bool:
    """Whether bfloat16 autocast is expected to be faster than float32 on `device`."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cap = cpu_bf16_capability() if cpu_capability is None else cpu_capability
        return bool(cap.get("amx_bf16"))
    return False


def amp_dtype(
    setting: Any, device: torch.device, cpu_capability: dict[str, bool] | None = None
) -> torch.dtype | None:
    """The autocast dtype of `trainer.amp` on `device` (None: full float32)."""
    if setting in (None, "none", "null", False):
        return None
    if setting == "bf16":
        return torch.bfloat16
    if setting == "auto":
        return torch.bfloat16 if native_bf16(device, cpu_capability) else None
    raise UserError(
        f"trainer.amp={setting!r} is not supported; use trainer.amp=auto (bf16 where the device "
        "computes it natively), trainer.amp=bf16 or trainer.amp=null (float32)"
    )


def precision_name(dtype: torch.dtype | None) -> str:
    return "bfloat16 autocast" if dtype == torch.bfloat16 else "float32"
