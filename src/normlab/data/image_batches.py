"""Training and evaluation batches from uint8 image tensors, augmented in batches.

The order and augmentation of epoch e are drawn from a generator seeded by (seed, e), so batch k of
epoch e is the same whether the run got there directly or was resumed at k. The draws are made on
the CPU whatever the device (a CUDA generator would draw other numbers), so a GPU run sees the same
order and augmentation as a CPU run; they are copied to the data's device once per epoch, and every
batch is then gathered, augmented and normalized where the data lives, without a copy per batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from normlab.data.augment import crop_flip, draw_augmentation
from normlab.data.sharding import check_shardable
from normlab.data.sharding import shard as shard_items


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class ImageBatches:
    """Shuffled, augmented, normalized float batches (N, C, H, W) with int64 labels."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        batch_size: int,
        seed: int,
        augment: bool = True,
        pad: int = 4,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.device = torch.device(device)
        # The uint8 images live on the training device (a GPU holds CIFAR-10 in 150 MB).
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.mean = (mean * 255).view(1, -1, 1, 1).to(self.device)
        self.inv_std = (1 / (std * 255)).view(1, -1, 1, 1).to(self.device)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.pad = pad
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # (rank, world): under torchrun this rank keeps its strided share of every global batch
        self.rank, self.world = shard
        n, b = len(self.labels), batch_size
        check_shardable(
            [b] * (n // b) + [n % b] * bool(n % b), self.world, "images",
            "raise trainer.batch_size",
        )  # fmt: skip

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().sub_(self.mean).mul_(self.inv_std)
        return x.contiguous(memory_format=self.memory_format)

    def epoch_draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The order, crop offsets and flips of epoch `epoch`, drawn on the CPU from the (seed,
        epoch) generator and placed on the data's device (one copy per epoch, not per batch)."""
        g = epoch_generator(self.seed, epoch)
        order = torch.randperm(len(self.labels), generator=g)
        offsets, flips = draw_augmentation(len(self.labels), self.pad, g)
        if self.device.type == "cpu":
            return order, offsets, flips
        return tuple(t.to(self.device, non_blocking=True) for t in (order, offsets, flips))

    def epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches `start_batch`, `start_batch + 1`, ... of epoch `epoch`."""
        order, offsets, flips = self.epoch_draws(epoch)
        for k in range(start_batch, len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]  # on the data's device
            idx = shard_items(idx, self.rank, self.world)
            x = self.images[idx]
            if self.augment:
                x = crop_flip(x, offsets[idx], flips[idx], self.pad)
            yield self.normalize(x), self.labels[idx]

    def in_order(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once, in stored order, without augmentation (for evaluation)."""
        for k in range(len(self)):
            sl = slice(k * self.batch_size, (k + 1) * self.batch_size)
            yield self.normalize(self.images[sl]), self.labels[sl]
