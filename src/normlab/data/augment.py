"""Batched CIFAR augmentation on uint8 tensors: random crop with zero padding, horizontal flip.

Everything is one gather over the whole batch (no per-image Python or PIL work), and the random
draws are made up front per epoch from a seeded generator, so a resumed run replays them exactly.
"""

from __future__ import annotations

import torch


def draw_augmentation(
    n: int, pad: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: crop offsets in [0, 2*pad] for (row, col), and a flip flag."""
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets, flips


def crop_flip(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int
) -> torch.Tensor:
    """Random-crop (zero padding `pad`) and flip a batch (N, C, H, W), as torchvision's
    RandomCrop(H, padding=pad) + RandomHorizontalFlip would per image.

    Runs where `images` lives; `offsets` and `flips` best live there too (ImageBatches puts them
    there once per epoch), else they are copied over first."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    offsets = offsets.to(images.device, non_blocking=True)
    flips = flips.to(images.device, non_blocking=True)
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # (N, H)
    cols = torch.arange(w, device=images.device).expand(n, w)
    # A flipped image reads its columns right to left.
    cols = torch.where(flips[:, None], cols.flip(1), cols) + offsets[:, 1, None]  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chan = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
