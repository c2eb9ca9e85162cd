"""Translation data as training sees it: a joined dictionary and id pairs for train/valid/test.

Three sources behind one config:
- `iwslt14` with `archive=de-en.tgz` (or `download=true`): fairseq's prepare-iwslt14.sh in Python;
- `iwslt14` with `prepared_dir=DIR`: a directory already in fairseq's layout (BPE'd text), e.g.
  fairseq's own output — or, in this team's environment, fairseq's valid/test files, where the cpu
  scale trains on the valid split (a real 1/23 sample of the training corpus) minus a held-out slice;
- `parallel_text` with `dir`, `src`, `tgt`: your own raw {train,valid,test}.{src,tgt} files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from normlab.data import DATASETS
from normlab.errors import UserError


@dataclass
class TranslationData:
    dictionary: object  # normlab.data.iwslt14.Dictionary
    train: object  # datasets.Dataset with int columns "src", "tgt" (each ending with eos)
    valid: object
    test: object
    src_lang: str
    tgt_lang: str
    source: str  # what results must be labelled with
    detail: str


def _limit(ds, n: int | None):
    return ds if n is None or n >= len(ds) else ds.select(range(n))


def _drop_long(ds, max_positions: int):
    keep = [
        i
        for i, (s, t) in enumerate(zip(ds["src"], ds["tgt"], strict=True))
        if len(s) <= max_positions and len(t) <= max_positions
    ]
    return ds.select(keep) if len(keep) < len(ds) else ds, len(ds) - len(keep)


def assemble(
    prepared,
    train_split: str,
    valid_split: str,
    test_split: str,
    holdout: int,
    holdout_seed: int,
    train_limit: int | None,
    test_limit: int | None,
    max_positions: int,
    label: str,
) -> TranslationData:
    from normlab.data.iwslt14 import split_holdout

    splits = prepared.splits
    for role, name in (("train", train_split), ("test", test_split)):
        if name not in splits:
            raise UserError(
                f"data.{role}_split={name!r} is not among the prepared splits "
                f"({', '.join(splits)}); pick one of those"
            )
    train = splits[train_split]
    if holdout:
        train, valid = split_holdout(train, holdout, holdout_seed)
        valid_desc = f"{len(valid)} pairs held out of {train_split}"
    else:
        if valid_split not in splits:
            raise UserError(
                f"data.valid_split={valid_split!r} is not among the prepared splits; use one of "
                f"{', '.join(splits)} or hold pairs out of the training split with data.holdout=N"
            )
        valid = splits[valid_split]
        valid_desc = f"{valid_split} ({len(valid)} pairs)"
    train = _limit(train, train_limit)
    train, dropped = _drop_long(train, max_positions)
    test = _limit(splits[test_split], test_limit)
    test_desc = f"{test_split} ({len(test)} pairs" + (
        f", the first {test_limit} of {len(splits[test_split])})"
        if len(test) < len(splits[test_split])
        else ")"
    )
    detail = (
        f"train: {train_split} ({len(train)} pairs{f', {dropped} longer than {max_positions} dropped' if dropped else ''}); "
        f"valid: {valid_desc}; test: {test_desc}; dictionary: {len(prepared.dictionary)} symbols "
        f"from {', '.join(prepared.dict_source)}"
    )
    return TranslationData(
        prepared.dictionary, train, valid, test, prepared.src_lang, prepared.tgt_lang, label, detail
    )


def _cache(cache_dir: str | None) -> Path | None:
    return Path(os.path.expanduser(cache_dir)) if cache_dir else None


@DATASETS.register("iwslt14")
def load_iwslt14(
    prepared_dir: str | None = None,
    archive: str | None = None,
    download: bool = False,
    out_dir: str | None = None,
    cache_dir: str | None = None,
    train_split: str = "train",
    valid_split: str = "valid",
    test_split: str = "test",
    holdout: int = 0,
    holdout_seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    max_positions: int = 1024,
    workers: int = 1,
) -> TranslationData:
    from normlab.data import iwslt14

    if prepared_dir:
        prepared = iwslt14.load_prepared(Path(os.path.expanduser(prepared_dir)), _cache(cache_dir))
        if train_split == "train":
            label = "IWSLT14 de-en (fairseq-prepared)"
        else:
            label = f"IWSLT14 de-en, fairseq's {train_split} split as training data (1/23 of the training corpus)"
    elif archive or download:
        prepared = iwslt14.prepare_iwslt14(
            archive=archive,
            out_dir=out_dir,
            cache_dir=_cache(cache_dir),
            download=download,
            workers=workers,
        )
        label = "IWSLT14 de-en (prepare-iwslt14.sh)"
    else:
        raise UserError(
            "IWSLT14 needs data.prepared_dir=DIR (fairseq-layout BPE'd text), data.archive=de-en.tgz, "
            "or data.download=true"
        )
    return assemble(
        prepared,
        train_split,
        valid_split,
        test_split,
        holdout,
        holdout_seed,
        train_limit,
        test_limit,
        max_positions,
        label,
    )


@DATASETS.register("parallel_text")
def load_parallel_text(
    dir: str,
    src: str,
    tgt: str,
    out_dir: str | None = None,
    cache_dir: str | None = None,
    bpe_codes: str | None = None,
    merges: int = 10000,
    holdout: int = 0,
    holdout_seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    max_positions: int = 1024,
    workers: int = 1,
) -> TranslationData:
    from normlab.data.iwslt14 import prepare_parallel_text

    prepared = prepare_parallel_text(
        Path(os.path.expanduser(dir)),
        src,
        tgt,
        out_dir=out_dir,
        cache_dir=_cache(cache_dir),
        bpe_codes=bpe_codes,
        merges=merges,
        workers=workers,
    )
    return assemble(
        prepared,
        "train",
        "valid",
        "test",
        holdout,
        holdout_seed,
        train_limit,
        test_limit,
        max_positions,
        f"parallel text {src}-{tgt} from {dir}",
    )
