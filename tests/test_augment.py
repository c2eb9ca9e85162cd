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


def _batches(device="cpu", channels_last=False):
    from normlab.data.image_batches import ImageBatches

    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (50,), generator=g)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    return ImageBatches(
        images, labels, mean, std, 16, seed=7, device=device, channels_last=channels_last
    )


def test_image_batches_on_cpu_are_the_per_epoch_cpu_draws_exactly():
    """The draws of epoch e come from the (seed, e) CPU generator and are indexed per batch: the
    same batches, bit for bit, as drawing and indexing them by hand (and when resumed at k)."""
    from normlab.data.image_batches import epoch_generator

    data = _batches()
    for epoch in (0, 3):
        g = epoch_generator(7, epoch)
        order = torch.randperm(50, generator=g)
        offsets, flips = draw_augmentation(50, 4, g)
        got = list(data.epoch(epoch))
        assert len(got) == 4
        for k, (x, y) in enumerate(got):
            idx = order[k * 16 : (k + 1) * 16]
            ref = crop_flip(data.images[idx], offsets[idx], flips[idx], 4)
            assert torch.equal(x, data.normalize(ref)), (epoch, k)
            assert torch.equal(y, data.labels[idx])
        resumed = list(data.epoch(epoch, start_batch=2))
        for (x, y), (rx, ry) in zip(got[2:], resumed, strict=True):
            assert torch.equal(x, rx) and torch.equal(y, ry)


def test_image_batches_keep_every_tensor_on_the_data_device():
    """The per-epoch draws are moved to the data's device once; batches never leave it. (The meta
    device stands in for a GPU: shapes and devices are checked, no values.)"""
    data = _batches(device="meta", channels_last=True)
    assert all(t.device.type == "meta" for t in data.epoch_draws(0))
    for x, y in data.epoch(0, start_batch=1):
        assert x.device.type == "meta" and y.device.type == "meta"
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8)
        assert x.is_contiguous(memory_format=torch.channels_last)
    cpu = _batches()
    assert all(t.device.type == "cpu" for t in cpu.epoch_draws(0))
