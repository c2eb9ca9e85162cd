"""Translation data as training sees it: a joined dictionary and id pairs for train/valid/test.

Three sources behind one config:
- `iwslt14` with `archive=de-en.tgz` (or `download=true`): fairseq's prepare-iwslt14.sh in Python;
- `iwslt14` with `prepared_dir=DIR`: a directory already in fairseq's layout (BPE'd text), e.g.
  fairseq's own output; `train_split=valid` with `holdout=N` trains on another split (fairseq's
  valid is a real 1/23 sample of the training corpus) and validates on N pairs held out of it;
- `parallel_text` with `dir`, `src`, `tgt`: your own raw {train,valid,test}.{src,tgt} files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normlab.data import DATASETS
from normlab.errors import UserError

log = logging.getLogger(__name__)


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


def _skip_long(ds, max_positions: int, sides: tuple[str, ...], where) -> tuple[Any, str]:
    """`ds` without the pairs the model cannot take (a side longer than `max_positions` tokens),
    and a note naming them (file and line, via `where(row)`) for the log and the run's summary.
    Valid pairs feed both sides to the model; of a test pair only the source is (the target is
    the BLEU reference), so a long reference alone is kept."""
    lengths = [[len(x) for x in ds[side]] for side in sides]
    long_rows = [i for i in range(len(ds)) if any(n[i] > max_positions for n in lengths)]
    if not long_rows:
        return ds, ""
    named = ", ".join(
        f"{where(i)} ({max(n[i] for n in lengths):,} tokens)" for i in long_rows[:3]
    ) + (f" and {len(long_rows) - 3} more" if len(long_rows) > 3 else "")
    note = (
        f"{len(long_rows)} pair(s) longer than data.max_positions={max_positions} tokens "
        f"skipped: {named}"
    )
    log.warning(note)
    keep = sorted(set(range(len(ds))) - set(long_rows))
    return ds.select(keep), note


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
    line_files: dict[str, str] | None = None,
) -> TranslationData:
    """The training, validation and test pairs of a prepared corpus as the run uses them.
    `line_files[split]` names the file whose line i+1 is row i of that split (for messages)."""
    from normlab.data.iwslt14 import split_holdout

    splits = prepared.splits
    line_files = line_files or {
        name: str(prepared.text_dir / f"{name}.{prepared.src_lang}") for name in splits
    }

    def line_of(split: str):
        where = line_files[split]
        if "{n}" not in where:
            where += " line {n}"
        return lambda i: where.format(n=i + 1)

    for role, name in (("train", train_split), ("test", test_split)):
        if name not in splits:
            raise UserError(
                f"data.{role}_split={name!r} is not among the prepared splits "
                f"({', '.join(splits)}); pick one of those"
            )
    train = splits[train_split]
    if holdout:
        train, valid = split_holdout(train, holdout, holdout_seed)
        valid, valid_note = _skip_long(
            valid, max_positions, ("src", "tgt"), lambda i: f"held-out pair {i + 1}"
        )
        valid_desc = f"{len(valid)} pairs held out of {train_split}"
    else:
        if valid_split not in splits:
            raise UserError(
                f"data.valid_split={valid_split!r} is not among the prepared splits; use one of "
                f"{', '.join(splits)} or hold pairs out of the training split with data.holdout=N"
            )
        valid, valid_note = _skip_long(
            splits[valid_split], max_positions, ("src", "tgt"), line_of(valid_split)
        )
        valid_desc = f"{valid_split} ({len(valid)} pairs)"
    train = _limit(train, train_limit)
    train, dropped = _drop_long(train, max_positions)
    # Every split is checked here, at load time: a test source the model cannot take would
    # otherwise fail at beam search, after the whole run.
    test, test_note = _skip_long(
        _limit(splits[test_split], test_limit), max_positions, ("src",), line_of(test_split)
    )
    test_desc = f"{test_split} ({len(test)} pairs" + (
        f", the first {test_limit} of {len(splits[test_split])})"
        if test_limit is not None and test_limit < len(splits[test_split])
        else ")"
    )
    detail = (
        f"train: {train_split} ({len(train)} pairs{f', {dropped} longer than {max_positions} dropped' if dropped else ''}); "
        f"valid: {valid_desc}; test: {test_desc}; dictionary: {len(prepared.dictionary)} symbols "
        f"from {', '.join(prepared.dict_source)}"
    )
    for role, note in (("valid", valid_note), ("test", test_note)):
        if note:
            detail += f"; {role}: {note}"
    return TranslationData(
        prepared.dictionary, train, valid, test, prepared.src_lang, prepared.tgt_lang, label, detail
    )


def _cache(cache_dir: str | None) -> Path | None:
    return Path(os.path.expanduser(cache_dir)) if cache_dir else None


# The defaults are configs/data/iwslt14.yaml's (tests/test_house_helpers.py keeps them equal);
# out_dir has none here because the YAML's depends on $NORMLAB_DATA.
@DATASETS.register("iwslt14")
def load_iwslt14(
    *,  # called with the YAML's keys only, so out_dir may go without a default where it stands
    prepared_dir: str | None = None,
    archive: str | None = None,
    download: bool = False,
    out_dir: str | None,
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
    train_split: str = "train",
    valid_split: str = "valid",
    test_split: str = "test",
) -> TranslationData:
    from normlab.data.iwslt14 import prepare_parallel_text

    raw = Path(os.path.expanduser(str(dir)))
    _check_raw_splits(raw, str(src), str(tgt), train_split, test_split, holdout, valid_split)
    prepared = prepare_parallel_text(
        raw,
        str(src),
        str(tgt),
        out_dir=out_dir,
        cache_dir=_cache(cache_dir),
        bpe_codes=bpe_codes,
        merges=merges,
        workers=workers,
    )
    # Row i of a split is line i+1 of its raw file, except for a valid split carved out of the
    # cleaned training pairs (no valid files given) and train itself (cleaned).
    line_files = {split: str(raw / f"{split}.{src}") for split in prepared.splits}
    line_files["train"] = "cleaned training pair {n}"
    if not (raw / f"valid.{src}").exists():
        line_files["valid"] = "valid pair {n} (every 23rd cleaned training pair)"
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
        f"parallel text {src}-{tgt} from {raw}",
        line_files,
    )


def _check_raw_splits(
    raw: Path,
    src: str,
    tgt: str,
    train_split: str,
    test_split: str,
    holdout: int,
    valid_split: str,
) -> None:
    """Fail before tokenizing anything if a split the run needs has no files."""
    from normlab.data.iwslt14.prepared_data import SPLITS

    if not raw.is_dir():
        raise UserError(
            f"data.dir={raw} is not a folder; point it at the folder holding train.{src}, "
            f"train.{tgt}, test.{src} and test.{tgt}"
        )
    roles = {"train": train_split, "test": test_split} | ({} if holdout else {"valid": valid_split})
    for role, split in roles.items():
        if split not in SPLITS:
            raise UserError(
                f"data.{role}_split={split!r} is not a split of a parallel corpus; use one of "
                f"{', '.join(SPLITS)}"
            )
        files = [raw / f"{split}.{lang}" for lang in (src, tgt)]
        if split != "valid" and not all(f.exists() for f in files):
            missing = [f.name for f in files if not f.exists()]
            why = "the run ends with BLEU on it" if role == "test" else f"the {role} split"
            raise UserError(
                f"{raw} has no {' and no '.join(missing)} ({why}); add "
                f"{'it' if len(missing) == 1 else 'them'}: raw text, one sentence per line, "
                "paired line by line"
            )
