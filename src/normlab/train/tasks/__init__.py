"""Tasks: what the generic training loop trains (data + model + loss + evaluation).

A task module registers `@TASKS.register("name")` on a class built from the whole config; the loop
(`normlab.train.loop`) only uses the `Task` protocol below, so a new kind of experiment is a new file
here plus configs, not an edit of the loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

from normlab.registry import Registry

TASKS: Registry = Registry("task", "normlab.train.tasks", "experiment")


class Task(Protocol):
    model: nn.Module
    data_source: str  # e.g. "CIFAR-10 (JPEG copy)": what results must be labelled with
    data_detail: str
    unit: str  # what throughput counts, e.g. "img" or "tok"
    train_keys: tuple[str, ...]  # the batch metrics train_loss returns (metrics.csv columns)
    eval_keys: tuple[str, ...]  # the metrics evaluate returns (eval.csv columns)

    def steps_per_epoch(self) -> int: ...

    def train_batches(self, epoch: int, start_batch: int) -> Iterator[Any]: ...

    def train_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float], int]:
        """Loss to backpropagate, batch metrics to log, and the number of items (for items/s)."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Metrics after an epoch, keys prefixed by split (e.g. test_acc)."""
        ...


def scale_metrics(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's own measures of its first norm's input scale (e.g. the embedding RMS), logged
    with the batch metrics of every step; {} for a model that defines none."""
    read = getattr(model, "scale_metrics", None)
    return read() if read is not None else {}
