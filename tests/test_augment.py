"""Batched crop+flip equals torchvision's per-image transforms with the same random draws."""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF

from normlab.data.augment import crop_flip, draw_augmentation


def test_batched_crop_flip_matches_per_image_torchvision():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    offsets, flips = draw_augmentation(64, 4, g)
    out = crop_flip(images, offsets, flips, pad=4)
    for i in range(64):
        ref = TF.pad(images[i], [4], fill=0)
        ref = TF.crop(ref, int(offsets[i, 0]), int(offsets[i, 1]), 32, 32)
        if flips[i]:
            ref = TF.hflip(ref)
        assert torch.equal(out[i], ref), i


def test_draws_cover_all_offsets_and_both_flips():
    offsets, flips = draw_augmentation(20_000, 4, torch.Generator().manual_seed(0))
    assert set(offsets.flatten().tolist()) == set(range(9))
    assert 0.45 < flips.float().mean().item() < 0.55
