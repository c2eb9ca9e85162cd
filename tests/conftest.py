"""Fixtures: an isolated cache, a synthetic CIFAR-like image folder, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import SHARED_DATA, image_smoke_overrides, make_image_folder


def pytest_configure(config):
    # Runs wandb starts in tests (and their subprocesses) print nothing unless the user says so.
    os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Tests never touch the user's real cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("cifar-like"), {"train": 24, "test": 8})


@pytest.fixture
def smoke_overrides(image_folder) -> list[str]:
    return image_smoke_overrides(image_folder)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"{SHARED_DATA} not found: this check needs the shared data folder beside the checkout"
        )
    return SHARED_DATA
