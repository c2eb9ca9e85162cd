"""The run directory: one per run, locked while a process works in it.

config.yaml        resolved config          summary.json    final metrics + provenance
metrics.csv        one row per step         eval.csv        one row per evaluation
checkpoints/last.pt                         run.lock        held by the running process
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from normlab.errors import UserError


class RunDirLock:
    """An advisory lock on `run.lock`; the OS releases it if the process dies."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "run.lock"
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="ignore").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"run directory {self.path.parent} is in use by pid {holder}; wait for it to "
                "finish or choose another directory with hydra.run.dir=..."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
