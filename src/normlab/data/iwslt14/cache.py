"""A content-addressed cache of prepared data: `<cache_dir>/<key>/`, written atomically.

The key hashes the *content* of the inputs (not their paths or times) and PIPELINE_VERSION, so a
changed input or a changed pipeline gets a new entry and an unchanged one is reused. An entry is
built in a temp folder beside its final place and renamed into place when complete, so a crash or
a UserError half-way leaves no entry, and two concurrent builders cannot interleave files.
Token ids are stored with Hugging Face `datasets` (`save_to_disk`, memory-mapped Arrow), which
needs no network.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import datasets

from normlab.data import default_cache_dir
from normlab.io_utils import BUILD_LOCK, atomic_write, remove_stale_temporaries

# Bump when a change to tokenize/clean/BPE/dictionary/ids would change the prepared output.
PIPELINE_VERSION = "iwslt14-pipeline-1"
FEATURES = datasets.Features(
    {"src": datasets.List(datasets.Value("int32")), "tgt": datasets.List(datasets.Value("int32"))}
)
_COMPLETE = "meta.json"  # written last inside the temp folder; entries without it are ignored


def default_iwslt14_cache() -> Path:
    return Path(default_cache_dir()) / "iwslt14"


def hash_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_key(*parts: str) -> str:
    """A short stable key over PIPELINE_VERSION and the given strings (content hashes, options)."""
    digest = hashlib.sha256(PIPELINE_VERSION.encode())
    for part in parts:
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:24]


def lookup(cache_dir: Path, key: str) -> Path | None:
    """The complete entry for `key`, or None. Leftovers of builders of this entry that were
    killed mid-build (`.KEY.*.tmp/` folders no live process holds) are removed on the way."""
    if cache_dir.is_dir():
        remove_stale_temporaries(cache_dir, f".{key}.*.tmp")
    entry = cache_dir / key
    return entry if (entry / _COMPLETE).is_file() else None


def _private_cache(cache_dir: Path, err: OSError) -> Path:
    """A temporary folder, deleted at exit, for an entry that `cache_dir` cannot take."""
    private = Path(tempfile.mkdtemp(prefix="normlab-cache-"))
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    warnings.warn(
        f"data.cache_dir {cache_dir} is not writable ({err.strerror}); preparing the data in "
        f"{private} for this run only (set data.cache_dir=<a writable folder> to keep it)",
        stacklevel=3,
    )
    return private


def build_entry(cache_dir: Path, key: str, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` in a temp folder inside `cache_dir`, then rename it to `cache_dir/key`.

    `build` must write `meta.json` last. On any exception the temp folder is removed. A builder
    holds a lock on `tmp/.building` until the rename, so a folder nobody holds is stale. A cache
    folder that cannot be written (read-only, another user's) only costs the caching: the entry
    is built in a private temporary folder, with a warning.
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=cache_dir))
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        cache_dir = _private_cache(cache_dir, err)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=cache_dir))
    lock = os.open(tmp / BUILD_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        build(tmp)
        if not (tmp / _COMPLETE).is_file():
            raise RuntimeError(f"cache builder for {key} did not write {_COMPLETE}")
        try:
            os.rename(tmp, cache_dir / key)
        except OSError:
            # Another process finished the same entry first: theirs is identical, keep it.
            if lookup(cache_dir, key) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)  # the entry's .building file stays, unlocked: harmless
    return cache_dir / key


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars for these sub-second saves (restored afterwards)."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def save_splits(path: Path, splits: Mapping[str, tuple[Sequence[list[int]], Sequence[list[int]]]]):
    """Save {split: (src ids, tgt ids)} as a DatasetDict with int32 list columns "src", "tgt"."""
    dd = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict({"src": src, "tgt": tgt}, features=FEATURES)
            for name, (src, tgt) in splits.items()
        }
    )
    with _quiet_datasets():
        dd.save_to_disk(str(path))


def load_splits(path: Path) -> dict[str, datasets.Dataset]:
    with _quiet_datasets():
        dd = datasets.load_from_disk(str(path))
    return dict(dd.items())


def copy_files(src_dir: Path, dst_dir: Path, names: Iterable[str]) -> None:
    """Copy files to `dst_dir`, each one atomically (temp file + rename)."""
    for name in names:
        with open(src_dir / name, "rb") as src:
            atomic_write(dst_dir / name, lambda f, src=src: shutil.copyfileobj(src, f))
