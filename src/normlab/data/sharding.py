"""Which part of each global batch this process trains on, in a multi-process (torchrun) run.

Every rank draws the same global batches (the order depends only on seed and epoch) and keeps the
items at positions rank, rank + world, rank + 2·world, ...: batch sizes (`trainer.batch_size`,
`translation.max_tokens`) are global, so a run computes the same thing on any number of processes,
and the strided split gives every rank a similar share of a length-sorted token batch. The caller
says which rank and world size this process has (normlab.train.distributed asks, once for all).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from normlab.errors import UserError

T = TypeVar("T")


def shard(items: T, rank: int, world: int) -> T:
    """This rank's strided share of a batch's items (an index array or tensor)."""
    return items if world == 1 else items[rank::world]


def check_shardable(batch_sizes: Iterable[int], world: int, unit: str, fix: str) -> None:
    """Refuse, before training, a global batch with fewer items than there are processes."""
    if world == 1:
        return
    smallest = min(batch_sizes)
    if smallest < world:
        raise UserError(
            f"a global batch holds only {smallest} {unit}, fewer than the {world} processes "
            f"(ranks), so some ranks would get none; {fix} or run fewer processes"
        )
