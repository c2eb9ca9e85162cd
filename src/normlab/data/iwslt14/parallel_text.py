"""Bring your own corpus: raw `{train,valid,test}.{src,tgt}` through the IWSLT14 pipeline.

`prepare_parallel_files` is the pipeline on any named files (a corpus with its own file names,
gzipped or not, such as Multi30K, maps them to train/valid/test and calls it);
`prepare_parallel_text` is it on a folder in the `{split}.{lang}` layout.

Same steps as prepare-iwslt14.sh (Moses tokenize -> clean train -> lowercase -> joint BPE -> ids),
with the user's splits in place of the archive's: train is required and cleaned; valid and test
are optional and only tokenized and lowercased (they are references, so no pair is dropped); a
missing valid is carved out of the cleaned train as every 23rd line, as for IWSLT14. Every file is
checked (exists in pairs, not empty, UTF-8, same line count on both sides) before anything is
written, so bad input leaves no cache entry.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from normlab.data.iwslt14._parallel import default_workers
from normlab.data.iwslt14.bpe import read_codes
from normlab.data.iwslt14.cache import (
    build_entry,
    cache_key,
    default_iwslt14_cache,
    hash_file,
    lookup,
)
from normlab.data.iwslt14.prepare import DEFAULT_MERGES, bpe_key, build_fairseq_text, finish
from normlab.data.iwslt14.prepared_data import SPLITS, PreparedData, write_ids_entry
from normlab.data.iwslt14.textio import RawPair, read_pair
from normlab.errors import UserError

SplitFiles = Mapping[str, tuple[Path, Path]]  # split -> (source file, target file)


def split_files(data_dir: Path, src: str, tgt: str) -> dict[str, tuple[Path, Path]]:
    """The `{split}.{lang}` layout of a user's folder: train always (its absence is reported when
    it is read), valid and test when either of their two files is there."""
    if not data_dir.is_dir():
        raise UserError(f"{data_dir} is not a directory; pass the folder holding train.{src} etc.")
    files = {}
    for split in SPLITS:
        src_path, tgt_path = data_dir / f"{split}.{src}", data_dir / f"{split}.{tgt}"
        if split != "train" and not src_path.exists() and not tgt_path.exists():
            continue  # valid and test are optional, but only as a pair
        files[split] = (src_path, tgt_path)
    return files


def _content_hash(path: Path) -> str:
    """The cache key's hash of a raw file: of its text, so that a gzipped copy of a corpus and
    the plain one share their entry (the prepared data is the same)."""
    if not path.name.endswith(".gz"):
        return hash_file(path)
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def prepare_parallel_files(
    files: SplitFiles,
    src: str,
    tgt: str,
    out_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    bpe_codes: str | os.PathLike | None = None,
    merges: int = DEFAULT_MERGES,
    workers: int | None = None,
) -> PreparedData:
    """Raw parallel files, wherever they are and however named (`files[split]` = the source and
    target file of train, and optionally valid and test; ".gz" is read compressed), through the
    IWSLT14 pipeline; cached by content like `prepare_iwslt14`. The files are only read."""
    if src == tgt:
        raise UserError(f"source and target language are both {src!r}; give two different codes.")
    if "train" not in files or set(files) - set(SPLITS):
        raise ValueError(f"files must map train (and optionally valid, test), not {list(files)}")
    # Every file is read and checked (pairs, UTF-8, line counts) before anything is written.
    raw = {split: RawPair(*read_pair(*files[split])) for split in SPLITS if split in files}
    codes = read_codes(bpe_codes) if bpe_codes is not None else None
    cache_dir = Path(cache_dir) if cache_dir is not None else default_iwslt14_cache()
    workers = workers or default_workers()
    key = cache_key(
        "parallel-text",
        src,
        tgt,
        bpe_key(codes, merges),
        *(
            f"{split}.{lang}={_content_hash(Path(path))}"
            for split in raw
            for lang, path in zip((src, tgt), files[split], strict=True)
        ),
    )
    entry = lookup(cache_dir, key)
    hit = entry is not None
    if entry is None:
        bpe_note = "given BPE codes" if codes is not None else f"joint BPE learned, {merges} merges"
        description = (
            f"parallel text {src}-{tgt} ({', '.join(raw)}) through the IWSLT14 pipeline; "
            f"{bpe_note}; dictionary from train.{src}, train.{tgt}"
        )

        def build(tmp: Path) -> None:
            pairs = build_fairseq_text(
                tmp / "text",
                src=src,
                tgt=tgt,
                train=raw["train"],
                valid=raw.get("valid"),
                test=raw.get("test"),
                codes=codes,
                merges=merges,
                workers=workers,
            )
            write_ids_entry(
                tmp,
                pairs,
                src_lang=src,
                tgt_lang=tgt,
                dict_splits=("train",),
                description=description,
            )

        entry = build_entry(cache_dir, key, build)
    return finish(entry, hit=hit, out_dir=out_dir, src=src, tgt=tgt)


def prepare_parallel_text(
    data_dir: str | os.PathLike,
    src: str,
    tgt: str,
    out_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    bpe_codes: str | os.PathLike | None = None,
    merges: int = DEFAULT_MERGES,
    workers: int | None = None,
) -> PreparedData:
    """Prepare a user's raw `{train,valid,test}.{src,tgt}` folder like IWSLT14."""
    return prepare_parallel_files(
        split_files(Path(data_dir), src, tgt),
        src,
        tgt,
        out_dir=out_dir,
        cache_dir=cache_dir,
        bpe_codes=bpe_codes,
        merges=merges,
        workers=workers,
    )
