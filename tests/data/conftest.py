"""Fixtures for the data tests: the shared, read-only data folder beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` relative to the repo root (golden IWSLT14 files live there)."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(
            "../shared/data not found: golden IWSLT14 checks need the shared data folder beside "
            "the checkout"
        )
    return path


@pytest.fixture(scope="session")
def iwslt14_reference(shared_data: Path) -> Path:
    """fairseq's own prepare-iwslt14.sh outputs for valid/test (tmp/, code, BPE'd files)."""
    path = shared_data / "iwslt14" / "fairseq-reference"
    if not path.is_dir():
        pytest.skip(f"{path} not found: the golden IWSLT14 checks need fairseq's reference files")
    return path
