"""Atomic writes: a reader never sees a half-written file (temp file in the same folder + rename).

A writer holds an advisory lock (flock) on its temp file until the rename, so a temp file that no
live process holds a lock on is the leftover of a killed writer (SIGKILL, power loss) and
`remove_stale_temporaries` may delete it. A write that fails because the disk is full raises
`DiskFullError` (an OSError with errno ENOSPC), also when torch's writer reports it only as a
RuntimeError.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_GLOB = ".*.tmp"  # what mkstemp/mkdtemp below name their temporaries
BUILD_LOCK = ".building"  # held inside a temp folder while a process fills it
# Free bytes below which a failed write is put down to a full disk (torch's zip writer raises a
# bare RuntimeError, "unexpected pos ...", when the disk fills up).
FULL_BELOW = 1 << 20


class DiskFullError(OSError):
    """No space left to write `filename`; the file it would have replaced is untouched."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def is_disk_full(err: BaseException, folder: str | os.PathLike) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(err, OSError | RuntimeError):
        try:
            return shutil.disk_usage(folder).free < FULL_BELOW
        except OSError:
            return False
    return False


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(file)` on a temp file next to `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours until the rename: not stale while we live
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException as err:
        full = is_disk_full(err, path.parent)  # measured before the temp file frees its space
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise DiskFullError(path) from err
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _locked_by_someone(path: Path) -> bool:
    """Whether a live process holds a lock on this temp file (or on a temp folder's BUILD_LOCK)."""
    target = path / BUILD_LOCK if path.is_dir() else path
    try:
        fd = os.open(target, os.O_RDONLY)
    except OSError:
        return False  # a folder without its lock file: its builder died before making it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the lock we may just have taken
    return False


def remove_stale_temporaries(folder: str | os.PathLike, pattern: str = TEMP_GLOB) -> list[Path]:
    """Delete the temp files and folders matching `pattern` in `folder` that no live process is
    writing (a writer killed mid-write leaves them behind); return what was deleted."""
    removed = []
    for path in sorted(Path(folder).glob(pattern)):
        if path.is_symlink() or _locked_by_someone(path):
            continue
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # read-only or gone meanwhile: nothing to clean here
        removed.append(path)
    return removed
