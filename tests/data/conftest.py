"""Fixtures for the data tests: fairseq's reference files in the shared data folder (the
`shared_data` fixture itself lives in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def iwslt14_reference(shared_data: Path) -> Path:
    """fairseq's own prepare-iwslt14.sh outputs for valid/test (tmp/, code, BPE'd files)."""
    path = shared_data / "iwslt14" / "fairseq-reference"
    if not path.is_dir():
        pytest.skip(f"{path} not found: the golden IWSLT14 checks need fairseq's reference files")
    return path
