"""A per-step metrics table as CSV, appended row by row and cut back exactly on resume.

CSV keeps a run readable while it is still going (and by any tool); the byte offset after each
flush goes into the checkpoint, so a resumed run truncates whatever was logged after the checkpoint
and its file ends up identical to an uninterrupted run's.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class MetricsFile:
    def __init__(
        self, path: str | os.PathLike, columns: Sequence[str], resume_offset: int | None = None
    ):
        self.path = Path(path)
        self.columns = list(columns)
        if resume_offset is not None and self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(resume_offset)
            self._file = open(self.path, "a", newline="")  # noqa: SIM115 - open for the run
        else:
            self._file = open(self.path, "w", newline="")  # noqa: SIM115 - open for the run
            self._file.write(",".join(self.columns) + "\n")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="raise")

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})

    def flush(self) -> int:
        """Flush to disk and return the offset a checkpoint should record."""
        self._file.flush()
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)  # round-trips exactly, so resumed and uninterrupted files compare equal
    return v


def read_metrics(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(io.StringIO(f.read())))
