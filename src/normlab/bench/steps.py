"""One SGD training step of an image model, with the batch-statistics probe's calls where the
training loop makes them: the step of normlab.bench's image cases and of scripts/bench_probe.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from normlab.probe.batch_stats import BatchStatsProbe


def sgd_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    probe: BatchStatsProbe | None = None,
    step: int = 1,
) -> None:
    """One training step, with the probe's calls where the training loop makes them."""
    if probe is not None:
        probe.begin_step(step)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if probe is not None:
        probe.after_backward()
    opt.step()
    if probe is not None:  # read every value, as writing the rows would
        [float(r["var_dist"]) + float(r["grad_var"]) for r in probe.end_step(step, 0, 0.0)]
