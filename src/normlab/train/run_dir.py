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
from normlab.io_utils import remove_stale_temporaries


def lock_holder(run_dir: Path) -> str | None:
    """The pid holding `run_dir`'s lock, or None when no live process holds it. Only reads: a
    command that is then refused must leave the run directory as it was."""
    path = run_dir / "run.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 64).decode(errors="ignore").strip() or "another process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def in_use_error(run_dir: Path, holder: str) -> UserError:
    return UserError(
        f"run directory {run_dir} is in use by pid {holder}; wait for it to finish or choose "
        "another directory with hydra.run.dir=..."
    )


class RunDirLock:
    """An advisory lock on `run.lock`; the OS releases it if the process dies.

    `shared=True`: later locks of the same directory in this process enter without blocking (the
    CLI holds the lock while it writes the launch record, .hydra/, then calls `train`, which takes
    it again). Any other second lock, in this process or another, is refused.
    """

    _held: dict[str, int] = {}  # absolute lock path -> depth, of the locks taken with shared=True

    def __init__(self, run_dir: Path, shared: bool = False) -> None:
        self.path = run_dir / "run.lock"
        self._key = os.path.abspath(self.path)
        self._shared = shared
        self._fd: int | None = None
        self._nested = False

    def __enter__(self) -> RunDirLock:
        if self._key in RunDirLock._held:
            RunDirLock._held[self._key] += 1
            self._nested = True
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="ignore").strip() or "another process"
            os.close(fd)
            raise in_use_error(self.path.parent, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        if self._shared:
            RunDirLock._held[self._key] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        if self._nested:
            RunDirLock._held[self._key] -= 1
            self._nested = False
            return
        RunDirLock._held.pop(self._key, None)
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def remove_stale_run_temporaries(run_dir: Path) -> list[Path]:
    """Delete what writers killed mid-write (SIGKILL, power loss) left in a run directory:
    `.last.pt.*.tmp`, `probe/.part-*.parquet.*.tmp`, ... Call it holding the run's lock; a temp
    file that a live process still writes (it holds a lock on it) is kept."""
    folders = [run_dir, run_dir / "checkpoints", run_dir / "probe", run_dir / ".hydra"]
    folders += sorted((run_dir / "probe").glob("rank*"))
    return [p for folder in folders if folder.is_dir() for p in remove_stale_temporaries(folder)]
