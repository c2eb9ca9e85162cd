"""fairseq's examples/translation/prepare-iwslt14.sh, in Python, plus the dictionary + ids cache.

Text pipeline (`build_fairseq_text`), as the script runs it:
  train: tokenize -> clean-corpus-n (ratio 1.5, 1-175 words) -> lowercase
  valid: every 23rd line of the cleaned train (awk NR%23==0); train keeps the other lines
  test:  tokenize -> lowercase (no cleaning)
  BPE:   learn N joint merges on train.src followed by train.tgt; apply to every split
Output in the script's layout: tmp/{train,valid,test}.{src,tgt} (tokenized, lowercased), code,
{train,valid,test}.{src,tgt} (BPE applied).

`prepare_iwslt14` runs it on de-en.tgz inside a cache entry keyed by the archive's content, adds
the joined dictionary and ids, and copies the text to `out_dir`. The input is only read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from normlab.data.iwslt14._parallel import Workers, as_workers, default_workers
from normlab.data.iwslt14.archive import ARCHIVE_NAME, IWSLT14_URL, download, read_archive
from normlab.data.iwslt14.bpe import apply_codes, check_merges, learn_codes, read_codes
from normlab.data.iwslt14.cache import (
    build_entry,
    cache_key,
    copy_files,
    default_iwslt14_cache,
    hash_file,
    lookup,
)
from normlab.data.iwslt14.clean import clean_corpus
from normlab.data.iwslt14.prepared_data import PreparedData, open_entry, write_ids_entry
from normlab.data.iwslt14.textio import RawPair, write_lines
from normlab.data.iwslt14.tokenize import lowercase, tokenize_lines
from normlab.errors import UserError

log = logging.getLogger(__name__)

VALID_EVERY = 23
CLEAN_RATIO, CLEAN_MIN, CLEAN_MAX = 1.5, 1, 175
DEFAULT_MERGES = 10_000
IWSLT14_DESCRIPTION = "IWSLT14 de-en (fairseq prepare-iwslt14.sh)"


def bpe_key(codes: str | None, merges: int) -> str:
    """The BPE part of a cache key: given codes by content, else the number of merges to learn."""
    if codes is not None:
        return f"codes={hashlib.sha256(codes.encode()).hexdigest()}"
    check_merges(merges)  # fail before tokenizing 160k lines, not after
    return f"merges={merges}"


def finish(
    entry: Path, *, hit: bool, out_dir: str | os.PathLike | None, src: str, tgt: str
) -> PreparedData:
    """Open a cache entry; with `out_dir`, first copy its fairseq-layout text there."""
    text_dir = entry / "text"
    if out_dir is not None:
        splits = [s for s in ("train", "valid", "test") if (text_dir / f"{s}.{src}").exists()]
        names = [f"{d}{s}.{lang}" for d in ("tmp/", "") for s in splits for lang in (src, tgt)]
        copy_files(text_dir, Path(out_dir), [*names, "code"])
        text_dir = Path(out_dir)
    return open_entry(entry, text_dir=text_dir, cache_hit=hit)


def build_fairseq_text(
    out: Path,
    *,
    src: str,
    tgt: str,
    train: RawPair,
    test: RawPair | None,
    valid: RawPair | None = None,
    codes: str | None = None,
    merges: int = DEFAULT_MERGES,
    workers: int | Workers = 1,
) -> dict[str, tuple[list[str], list[str]]]:
    """Write the fairseq layout into `out`; return the BPE'd lines per split.

    `valid=None` carves valid out of the cleaned train as the script does; a given valid is
    tokenized and lowercased like test. `codes=None` learns `merges` joint merges on train.
    One pool of `workers` processes serves all steps.
    """
    with as_workers(workers) as pool:
        return _build_text(
            out,
            src=src,
            tgt=tgt,
            train=train,
            test=test,
            valid=valid,
            codes=codes,
            merges=merges,
            pool=pool,
        )


def _build_text(
    out: Path,
    *,
    src: str,
    tgt: str,
    train: RawPair,
    test: RawPair | None,
    valid: RawPair | None,
    codes: str | None,
    merges: int,
    pool: Workers,
) -> dict[str, tuple[list[str], list[str]]]:
    started = time.perf_counter()

    def tok(lines: list[str], lang: str, what: str, lower: bool) -> list[str]:
        return tokenize_lines(lines, lang, lower=lower, workers=pool, desc=f"tokenize {what}")

    # Train: tokenize, clean on the tokenized text, then lowercase (the script's order).
    cleaned = clean_corpus(
        tok(train.src, src, f"train.{src}", False),
        tok(train.tgt, tgt, f"train.{tgt}", False),
        ratio=CLEAN_RATIO,
        min_len=CLEAN_MIN,
        max_len=CLEAN_MAX,
        name=f"train.{src}-{tgt}",
    )
    log.info("clean-corpus-n kept %d of %d training pairs", len(cleaned.src), len(train.src))
    train_src = [lowercase(line) for line in cleaned.src]
    train_tgt = [lowercase(line) for line in cleaned.tgt]
    if not train_src:
        raise UserError(
            f"no training pair survives cleaning (1-{CLEAN_MAX} words per side, length ratio at "
            f"most {CLEAN_RATIO}); check that train.{src} and train.{tgt} are sentence-aligned."
        )

    tokenized: dict[str, tuple[list[str], list[str]]] = {}
    if valid is None:
        # awk NR%23==0 / NR%23!=0: 1-based line numbers 23, 46, ... are valid, the rest train.
        tokenized["train"] = (
            [x for i, x in enumerate(train_src, start=1) if i % VALID_EVERY],
            [x for i, x in enumerate(train_tgt, start=1) if i % VALID_EVERY],
        )
        tokenized["valid"] = (
            train_src[VALID_EVERY - 1 :: VALID_EVERY],
            train_tgt[VALID_EVERY - 1 :: VALID_EVERY],
        )
    else:
        tokenized["train"] = (train_src, train_tgt)
        tokenized["valid"] = (
            tok(valid.src, src, f"valid.{src}", True),
            tok(valid.tgt, tgt, f"valid.{tgt}", True),
        )
    if test is not None:
        tokenized["test"] = (
            tok(test.src, src, f"test.{src}", True),
            tok(test.tgt, tgt, f"test.{tgt}", True),
        )

    if codes is None:
        log.info("learning %d BPE merges on train.%s + train.%s", merges, src, tgt)
        codes = learn_codes([*tokenized["train"][0], *tokenized["train"][1]], merges)
    (out / "code").parent.mkdir(parents=True, exist_ok=True)
    (out / "code").write_text(codes, encoding="utf-8")

    bped: dict[str, tuple[list[str], list[str]]] = {}
    for split, sides in tokenized.items():
        pieces = []
        for lang, lines in zip((src, tgt), sides, strict=True):
            write_lines(out / "tmp" / f"{split}.{lang}", lines)
            encoded = apply_codes(lines, codes, workers=pool, desc=f"bpe {split}.{lang}")
            write_lines(out / f"{split}.{lang}", encoded)
            pieces.append(encoded)
        bped[split] = (pieces[0], pieces[1])
    log.info(
        "prepared %s in %.1fs",
        ", ".join(f"{k}={len(v[0])}" for k, v in bped.items()),
        time.perf_counter() - started,
    )
    return bped


def _resolve_archive(archive: Path | None, download_it: bool, url: str, cache_dir: Path) -> Path:
    if archive is not None and download_it:
        raise UserError("give either an archive path or download=True (--download), not both.")
    if archive is not None:
        return Path(archive)
    if download_it:
        return download(url, cache_dir / "downloads" / ARCHIVE_NAME)
    raise UserError(
        "no IWSLT14 input given; pass --archive PATH/TO/de-en.tgz, --download, or --prepared DIR."
    )


def prepare_iwslt14(
    archive: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    bpe_codes: str | os.PathLike | None = None,
    merges: int = DEFAULT_MERGES,
    workers: int | None = None,
    download: bool = False,
    url: str = IWSLT14_URL,
) -> PreparedData:
    """IWSLT14 de-en from de-en.tgz exactly as fairseq's prepare-iwslt14.sh, plus dict and ids.

    The whole result lives in `cache_dir/<key>` (key: archive content, BPE codes or merge count,
    pipeline version); a second call with the same inputs reuses it without recomputing.
    `out_dir`, if given, receives a copy of the fairseq-layout text. With `download=True` the
    archive is fetched from `url` into `cache_dir/downloads/` first.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_iwslt14_cache()
    workers = workers or default_workers()
    src, tgt = "de", "en"
    archive_path = _resolve_archive(
        Path(archive) if archive is not None else None, download, url, cache_dir
    )
    if not archive_path.is_file():
        raise UserError(f"{archive_path} does not exist; pass the path of de-en.tgz.")
    codes = read_codes(bpe_codes) if bpe_codes is not None else None
    archive_sha = hash_file(archive_path)
    key = cache_key("iwslt14-archive", src, tgt, archive_sha, bpe_key(codes, merges))
    entry = lookup(cache_dir, key)
    hit = entry is not None
    if entry is None:
        bpe_note = "given BPE codes" if codes is not None else f"joint BPE learned, {merges} merges"
        description = (
            f"{IWSLT14_DESCRIPTION} from {ARCHIVE_NAME} sha256:{archive_sha[:12]}; {bpe_note}; "
            f"dictionary from train.{src}, train.{tgt}"
        )

        def build(tmp: Path) -> None:
            train, test = read_archive(archive_path, src, tgt)
            pairs = build_fairseq_text(
                tmp / "text",
                src=src,
                tgt=tgt,
                train=train,
                test=test,
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
