"""Prepared data as training sees it: a joined dictionary and token ids per split, from the cache.

Any fairseq-layout directory (`{train,valid,test}.{src,tgt}`, BPE applied, plus optionally `code`
and `tmp/`) can be turned into PreparedData. A directory may lack the train split (fairseq's
valid+test outputs alone, say, to train on valid): the dictionary is counted on the training-role
split (train if present, else valid), never on test, so that test words unseen in training stay
<unk> exactly as with fairseq's train-only dictionary.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from normlab.data.iwslt14.cache import (
    PIPELINE_VERSION,
    build_entry,
    cache_key,
    default_iwslt14_cache,
    hash_file,
    load_splits,
    lookup,
    save_splits,
)
from normlab.data.iwslt14.dictionary import Dictionary
from normlab.data.iwslt14.textio import read_pair
from normlab.errors import UserError
from normlab.io_utils import atomic_write_json

SPLITS = ("train", "valid", "test")
Pairs = Mapping[str, tuple[list[str], list[str]]]


@dataclass
class PreparedData:
    """Dictionary + ids per split (Arrow-backed `datasets.Dataset`, columns "src" and "tgt")."""

    dictionary: Dictionary
    splits: dict[str, datasets.Dataset]
    src_lang: str
    tgt_lang: str
    source_description: str
    dict_source: tuple[str, ...]  # the files whose tokens the dictionary counts
    text_dir: Path  # fairseq-layout BPE'd text (references for BLEU live here)
    cache_path: Path
    cache_hit: bool


def default_dict_splits(present: Sequence[str]) -> tuple[str, ...]:
    """The training-role split: train, else valid (the cpu scale trains on it), else all."""
    for split in ("train", "valid"):
        if split in present:
            return (split,)
    return tuple(present)


def write_ids_entry(
    entry: Path,
    pairs: Pairs,
    *,
    src_lang: str,
    tgt_lang: str,
    dict_splits: Sequence[str],
    description: str,
) -> None:
    """Write dict.txt, splits/ (ids) and, last, meta.json into a cache entry being built."""
    dictionary = Dictionary.build(
        line for split in dict_splits for side in pairs[split] for line in side
    )
    dictionary.save(entry / "dict.txt")
    save_splits(
        entry / "splits",
        {
            split: tuple([dictionary.encode_line(line) for line in side] for side in (src, tgt))
            for split, (src, tgt) in pairs.items()
        },
    )
    atomic_write_json(
        entry / "meta.json",
        {
            "pipeline_version": PIPELINE_VERSION,
            "src_lang": src_lang,
            "tgt_lang": tgt_lang,
            "source_description": description,
            "dict_source": [f"{s}.{lang}" for s in dict_splits for lang in (src_lang, tgt_lang)],
            "split_sizes": {split: len(src) for split, (src, _) in pairs.items()},
        },
    )


def open_entry(entry: Path, *, text_dir: Path, cache_hit: bool) -> PreparedData:
    meta = json.loads((entry / "meta.json").read_text())
    return PreparedData(
        dictionary=Dictionary.load(entry / "dict.txt"),
        splits=load_splits(entry / "splits"),
        src_lang=meta["src_lang"],
        tgt_lang=meta["tgt_lang"],
        source_description=meta["source_description"],
        dict_source=tuple(meta["dict_source"]),
        text_dir=text_dir,
        cache_path=entry,
        cache_hit=cache_hit,
    )


def load_prepared(
    prepared_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    src_lang: str = "de",
    tgt_lang: str = "en",
    dict_splits: Sequence[str] | None = None,
) -> PreparedData:
    """Dictionary + ids for an already-prepared fairseq-layout directory (read, never written).

    Any of train/valid/test may be missing; `dict_splits` overrides which splits the dictionary
    is counted on (default: see `default_dict_splits`).
    """
    prepared_dir = Path(prepared_dir)
    if not prepared_dir.is_dir():
        raise UserError(f"{prepared_dir} is not a directory; pass a fairseq-layout directory.")
    present = [
        s
        for s in SPLITS
        if (prepared_dir / f"{s}.{src_lang}").exists()
        or (prepared_dir / f"{s}.{tgt_lang}").exists()
    ]
    if not present:
        raise UserError(
            f"{prepared_dir} has no {{train,valid,test}}.{{{src_lang},{tgt_lang}}} files; pass the "
            "output directory of prepare-iwslt14.sh (or of this package) with BPE'd text."
        )
    paths = {
        s: (prepared_dir / f"{s}.{src_lang}", prepared_dir / f"{s}.{tgt_lang}") for s in present
    }
    pairs = {s: read_pair(*paths[s]) for s in present}
    chosen = tuple(dict_splits) if dict_splits else default_dict_splits(present)
    if missing := [s for s in chosen if s not in pairs]:
        raise UserError(
            f"dict_splits names {', '.join(missing)}, which {prepared_dir} does not have; choose "
            f"among {', '.join(present)}."
        )
    cache_dir = Path(cache_dir) if cache_dir is not None else default_iwslt14_cache()
    key = cache_key(
        "fairseq-layout",
        src_lang,
        tgt_lang,
        "dict=" + ",".join(chosen),
        *(f"{p.name}={hash_file(p)}" for s in present for p in paths[s]),
    )
    entry = lookup(cache_dir, key)
    hit = entry is not None
    if entry is None:
        description = (
            f"fairseq-layout BPE'd text (splits: {', '.join(present)}; dictionary from "
            f"{', '.join(f'{s}.{lang}' for s in chosen for lang in (src_lang, tgt_lang))})"
        )
        entry = build_entry(
            cache_dir,
            key,
            lambda tmp: write_ids_entry(
                tmp,
                pairs,
                src_lang=src_lang,
                tgt_lang=tgt_lang,
                dict_splits=chosen,
                description=description,
            ),
        )
    return open_entry(entry, text_dir=prepared_dir, cache_hit=hit)


def split_holdout(
    dataset: datasets.Dataset, n_holdout: int, seed: int = 0
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(rest, holdout): `n_holdout` rows drawn without replacement by `seed`, both in input order.

    Deterministic across runs and platforms (Python's seeded `random.Random`), so the cpu scale's
    validation slice of fairseq's valid split is the same everywhere.
    """
    n = len(dataset)
    if not 0 < n_holdout < n:
        raise UserError(
            f"n_holdout={n_holdout} must be between 1 and {n - 1} for a split of {n} pairs; "
            "choose a smaller holdout."
        )
    held = sorted(random.Random(seed).sample(range(n), n_holdout))
    held_set = set(held)
    rest = [i for i in range(n) if i not in held_set]
    return dataset.select(rest), dataset.select(held)
