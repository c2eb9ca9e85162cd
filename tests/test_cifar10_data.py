"""CIFAR-10 loading: both sources, the uint8 cache, naming of the source, and every bad input."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import make_image_folder
from normlab.data import cifar10 as cifar
from normlab.errors import UserError


def _load(root, cache, **kw):
    return cifar.load_cifar10(root=str(root), source="imagefolder", cache_dir=str(cache), **kw)


def _read_only(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_image_folder_decodes_exact_pixels_into_the_cache(image_folder, tmp_path):
    data = _load(image_folder, tmp_path / "cache")
    assert data.train_x.shape == (240, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (80, 3, 32, 32)
    first = np.array(Image.open(image_folder / "train" / "airplane" / "0000.png"))
    assert torch.equal(data.train_x[0], torch.from_numpy(first).permute(2, 0, 1))
    assert data.train_y.tolist() == [i // 24 for i in range(240)]
    assert data.source == "CIFAR-10 (PNG subset, 240 train / 80 test)"
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_second_load_reads_the_cache_not_the_images(image_folder, tmp_path, monkeypatch):
    first = _load(image_folder, tmp_path / "cache")

    def no_decoding(*a, **k):
        raise AssertionError("images decoded again although the cache is valid")

    monkeypatch.setattr(cifar, "_decode", no_decoding)
    again = _load(image_folder, tmp_path / "cache")
    assert torch.equal(first.train_x, again.train_x)


def test_changed_folder_invalidates_the_cache(tmp_path):
    root = make_image_folder(tmp_path / "data", {"train": 2, "test": 1})
    a = _load(root, tmp_path / "cache")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "cat" / "9999.png")
    b = _load(root, tmp_path / "cache")
    assert len(b.train_y) == len(a.train_y) + 1


def test_read_only_data_folder_works_and_stays_untouched(tmp_path):
    root = make_image_folder(tmp_path / "ro", {"train": 2, "test": 1}, suffix=".jpg")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    _read_only(root)
    try:
        data = _load(root, tmp_path / "cache")
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert data.source == "CIFAR-10 (JPEG copy)"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_subset_limit_is_the_same_for_every_call(image_folder, tmp_path):
    a = _load(image_folder, tmp_path / "c", train_limit=50)
    b = _load(image_folder, tmp_path / "c", train_limit=50)
    assert len(a.train_y) == 50 and torch.equal(a.train_x, b.train_x)
    assert len(set(a.train_y.tolist())) == 10  # a random subset, not the first classes


@pytest.mark.parametrize(
    "breakage, message",
    [
        (
            "missing_root",
            r"CIFAR-10 folder .*nowhere does not exist; either download it with data.source=torchvision",
        ),
        ("missing_split", r"has no test/ subfolder"),
        ("missing_class", r"class folder .*train/frog is missing"),
        ("empty_class", r"class folder .*train/frog holds no .png/.jpg images"),
        ("unreadable_image", r"cannot read image .*0000.png .*replace or delete that file"),
        ("wrong_size", r"image .*0000.png is 16x16; CIFAR-10 images are 32x32"),
    ],
)
def test_bad_image_folders_get_one_sentence_and_no_cache(tmp_path, breakage, message):
    root = make_image_folder(tmp_path / "data", {"train": 1, "test": 1})
    frog = root / "train" / "frog"
    if breakage == "missing_root":
        root = tmp_path / "nowhere"
    elif breakage == "missing_split":
        shutil.rmtree(root / "test")
    elif breakage == "missing_class":
        shutil.rmtree(frog)
    elif breakage == "empty_class":
        for p in frog.iterdir():
            p.unlink()
    elif breakage == "unreadable_image":
        (frog / "0000.png").write_bytes(b"not a png")
    elif breakage == "wrong_size":
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(frog / "0000.png")
    with pytest.raises(UserError, match=message) as err:
        _load(root, tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_torchvision_source_converts_and_caches(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:  # stands in for the download, which needs the internet
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            n = 6 if train else 3
            self.data = np.arange(n * 32 * 32 * 3, dtype=np.int64).reshape(n, 32, 32, 3) % 256
            self.data = self.data.astype(np.uint8)
            self.targets = list(range(n))

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(CIFAR10=FakeCIFAR10))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    data = cifar.load_cifar10(
        root=str(tmp_path / "dl"), source="torchvision", cache_dir=str(tmp_path / "c")
    )
    assert calls == [(str(tmp_path / "dl"), True, True), (str(tmp_path / "dl"), False, True)]
    assert data.source == "CIFAR-10"
    assert data.train_x.shape == (6, 3, 32, 32)
    assert torch.equal(
        data.train_x[1], torch.from_numpy(FakeCIFAR10(None, True, True).data[1]).permute(2, 0, 1)
    )
    cifar.load_cifar10(
        root=str(tmp_path / "dl"), source="torchvision", cache_dir=str(tmp_path / "c")
    )
    assert len(calls) == 3  # the second load came from the cache (the third call above is ours)


def test_torchvision_download_failure_is_one_sentence(tmp_path, monkeypatch):
    class Offline:
        def __init__(self, *a, **k):
            raise OSError("Name or service not known")

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(CIFAR10=Offline))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    with pytest.raises(
        UserError, match="could not get CIFAR-10 into .*use data.source=imagefolder"
    ):
        cifar.load_cifar10(root=str(tmp_path), source="torchvision", cache_dir=str(tmp_path / "c"))


def test_shared_png_subset_is_named_and_counted(shared_data, tmp_path):
    data = _load(shared_data / "cifar10-subset", tmp_path / "cache")
    assert (len(data.train_y), len(data.test_y)) == (4000, 1000)
    assert data.source == "CIFAR-10 (PNG subset, 4000 train / 1000 test)"
    assert os.access(tmp_path / "cache", os.W_OK)
