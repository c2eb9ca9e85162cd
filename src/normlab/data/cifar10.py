"""CIFAR-10 from torchvision's download or from an image folder, decoded once into a uint8 cache.

`source=torchvision` downloads the real dataset into `root` when it is missing.
`source=imagefolder` reads `root/{train,test}/<class>/*.{png,jpg}`, a full copy or a subset; a
folder with JPEGs is labelled "CIFAR-10 (JPEG copy)" (a lossy re-encoding, never plain CIFAR-10),
one of fewer PNGs than the real splits a "PNG subset". Either way the images are decoded
once into uint8 tensors saved atomically under `cache_dir` (the data folder may be read-only), keyed
by the source's file listing, so later runs load them in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from normlab.data import DATASETS, default_cache_dir
from normlab.errors import UserError
from normlab.io_utils import atomic_write, remove_stale_temporaries

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CACHE_VERSION = 1  # bump when the cache's content or layout changes


@dataclass
class ImageData:
    """Uint8 images (N, 3, 32, 32) and int64 labels, with where they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    source: str  # what a paper should call it, e.g. "CIFAR-10 (JPEG copy)"
    detail: str  # path and counts

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean of the training images, in [0, 1]."""
        return self.train_x.float().mean(dim=(0, 2, 3)) / 255

    @property
    def std(self) -> torch.Tensor:
        return self.train_x.float().std(dim=(0, 2, 3)) / 255


def _fix_hint(root: Path) -> str:
    return (
        f"either download it with data.source=torchvision data.root={root} (needs internet), or "
        "point data.root at a folder holding train/<class>/*.png and test/<class>/*.png"
    )


def _list_image_folder(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """(path, label) per split, sorted, with one clear error for each way the layout can be wrong."""
    if not root.is_dir():
        raise UserError(f"CIFAR-10 folder {root} does not exist; {_fix_hint(root)}")
    listing: dict[str, list[tuple[Path, int]]] = {}
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserError(f"CIFAR-10 folder {root} has no {split}/ subfolder; {_fix_hint(root)}")
        files = []
        for label, name in enumerate(CLASSES):
            class_dir = split_dir / name
            if not class_dir.is_dir():
                raise UserError(
                    f"class folder {class_dir} is missing; an image folder needs all ten CIFAR-10 "
                    f"classes ({', '.join(CLASSES)}) under {split}/"
                )
            images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise UserError(
                    f"class folder {class_dir} holds no .png/.jpg images; {_fix_hint(root)}"
                )
            files += [(p, label) for p in images]
        listing[split] = files
    return listing


def _listing_key(listing: dict[str, list[tuple[Path, int]]]) -> str:
    h = hashlib.sha256(f"imagefolder-v{CACHE_VERSION}".encode())
    for split, files in listing.items():
        for path, label in files:
            st = path.stat()
            h.update(f"{split}|{path}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _decode(files: list[tuple[Path, int]], desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(tqdm(files, desc=desc, unit="img", disable=None, leave=False)):
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise UserError(
                f"cannot read image {path} ({err.__class__.__name__}); replace or delete that file"
            ) from None
        if array.shape != (32, 32, 3):
            raise UserError(
                f"image {path} is {array.shape[1]}x{array.shape[0]}; CIFAR-10 images are 32x32"
            )
        images[i] = array
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def _describe_folder(root: Path, listing: dict[str, list[tuple[Path, int]]]) -> str:
    suffixes = {p.suffix.lower() for files in listing.values() for p, _ in files}
    n_train, n_test = len(listing["train"]), len(listing["test"])
    if suffixes & {".jpg", ".jpeg"}:
        return "CIFAR-10 (JPEG copy)"  # lossy re-encoding: never to be called plain CIFAR-10
    if n_train < 50_000 or n_test < 10_000:
        return f"CIFAR-10 (PNG subset, {n_train} train / {n_test} test)"
    return "CIFAR-10 (PNG image folder)"


def _load_cached(cache_file: Path) -> dict | None:
    if cache_file.parent.is_dir():  # a writer killed mid-write leaves its temp file behind
        remove_stale_temporaries(cache_file.parent, f".{cache_file.name}.*.tmp")
    if not cache_file.exists():
        return None
    try:
        return torch.load(cache_file, weights_only=True)
    except Exception:  # a corrupt cache is rebuilt, never trusted
        return None


def _from_image_folder(root: Path, cache_dir: Path) -> dict:
    listing = _list_image_folder(root)
    cache_file = cache_dir / f"cifar10-imagefolder-{_listing_key(listing)}.pt"
    cached = _load_cached(cache_file)
    if cached is not None:
        return cached
    train_x, train_y = _decode(listing["train"], "decode train")
    test_x, test_y = _decode(listing["test"], "decode test")
    blob = {
        "train_x": train_x,
        "train_y": train_y,
        "test_x": test_x,
        "test_y": test_y,
        "source": _describe_folder(root, listing),
    }
    _save_cache(cache_file, blob)
    return blob


def _from_torchvision(root: Path, cache_dir: Path, download: bool) -> dict:
    import torchvision

    key = hashlib.sha256(f"torchvision-v{CACHE_VERSION}|{root.resolve()}".encode()).hexdigest()[:16]
    cache_file = cache_dir / f"cifar10-torchvision-{key}.pt"
    cached = _load_cached(cache_file)
    if cached is not None:
        return cached
    blob: dict = {"source": "CIFAR-10"}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = torchvision.datasets.CIFAR10(str(root), train=train, download=download)
        except Exception as err:  # no network, a broken archive, a read-only root...
            raise UserError(
                f"could not get CIFAR-10 into {root} with torchvision ({err}); check the network "
                f"and that {root} is writable, or use data.source=imagefolder with a local copy"
            ) from None
        blob[f"{split}_x"] = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        blob[f"{split}_y"] = torch.tensor(list(ds.targets), dtype=torch.int64)
    _save_cache(cache_file, blob)
    return blob


def _save_cache(cache_file: Path, blob: dict) -> None:
    try:
        atomic_write(cache_file, lambda f: torch.save(blob, f))
    except OSError as err:  # caching is an optimisation; an unwritable cache only costs time
        import warnings

        warnings.warn(f"could not write the CIFAR-10 cache {cache_file}: {err}", stacklevel=2)


def _subset(
    x: torch.Tensor, y: torch.Tensor, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset (the same for every run seed), so small scales see all classes."""
    if limit is None or limit >= len(y):
        return x, y
    if limit < 1:
        raise UserError(f"data limit {limit} must be a positive number of images (or null for all)")
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:limit].sort().values
    return x[keep], y[keep]


# The defaults are configs/data/cifar10.yaml's, which is what a run gets;
# tests/test_house_helpers.py keeps these equal to it.
@DATASETS.register("cifar10")
def load_cifar10(
    root: str,
    source: str = "torchvision",
    cache_dir: str | None = None,
    download: bool = True,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> ImageData:
    root_path = Path(os.path.expanduser(str(root)))
    cache = Path(os.path.expanduser(cache_dir or os.path.join(default_cache_dir(), "cifar10")))
    if source == "imagefolder":
        blob = _from_image_folder(root_path, cache)
    elif source == "torchvision":
        blob = _from_torchvision(root_path, cache, download)
    else:
        raise UserError(f"unknown data.source {source!r}; valid sources: imagefolder, torchvision")
    for key, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise UserError(
                f"data.{key}={limit!r} is not a positive number of images; give one "
                f"(e.g. data.{key}=512) or null for all"
            )
    train_x, train_y = _subset(blob["train_x"], blob["train_y"], train_limit)
    test_x, test_y = _subset(blob["test_x"], blob["test_y"], test_limit)
    detail = f"{len(train_y)} train / {len(test_y)} test images from {root_path} ({source})"
    return ImageData(train_x, train_y, test_x, test_y, CLASSES, blob["source"], detail)
