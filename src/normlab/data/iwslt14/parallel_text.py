"""Bring your own corpus: raw `{train,valid,test}.{src,tgt}` through the IWSLT14 pipeline.

Same steps as prepare-iwslt14.sh (Moses tokenize -> clean train -> lowercase -> joint BPE -> ids),
with the user's splits in place of the archive's: train is required and cleaned; valid and test
are optional and only tokenized and lowercased (they are references, so no pair is dropped); a
missing valid is carved out of the cleaned train as every 23rd line, as for IWSLT14. Every file is
checked (exists in pairs, not empty, UTF-8, same line count on both sides) before anything is
written, so bad input leaves no cache entry.
"""

from __future__ import annotations

import os
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
from normlab.data.iwslt14.prepared import SPLITS, PreparedData, write_ids_entry
from normlab.data.iwslt14.textio import RawPair, read_pair
from normlab.errors import UserError


def _read_splits(data_dir: Path, src: str, tgt: str) -> dict[str, RawPair]:
    if not data_dir.is_dir():
        raise UserError(f"{data_dir} is not a directory; pass the folder holding train.{src} etc.")
    if src == tgt:
        raise UserError(f"source and target language are both {src!r}; give two different codes.")
    raw = {}
    for split in SPLITS:
        src_path, tgt_path = data_dir / f"{split}.{src}", data_dir / f"{split}.{tgt}"
        if split != "train" and not src_path.exists() and not tgt_path.exists():
            continue  # valid and test are optional, but only as a pair
        raw[split] = RawPair(*read_pair(src_path, tgt_path))
    return raw


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
    """Prepare a user's raw parallel text like IWSLT14; cached by content like `prepare_iwslt14`."""
    data_dir = Path(data_dir)
    raw = _read_splits(data_dir, src, tgt)
    codes = read_codes(bpe_codes) if bpe_codes is not None else None
    cache_dir = Path(cache_dir) if cache_dir is not None else default_iwslt14_cache()
    workers = workers or default_workers()
    key = cache_key(
        "parallel-text",
        src,
        tgt,
        bpe_key(codes, merges),
        *(
            f"{split}.{lang}={hash_file(data_dir / f'{split}.{lang}')}"
            for split in raw
            for lang in (src, tgt)
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
