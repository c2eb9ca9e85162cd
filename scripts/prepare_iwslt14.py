#!/usr/bin/env python
"""Prepare IWSLT14 de-en exactly as fairseq's prepare-iwslt14.sh, then cache dictionary + ids.

  python scripts/prepare_iwslt14.py --download --out data/iwslt14.tokenized.de-en
  python scripts/prepare_iwslt14.py --archive de-en.tgz --out data/iwslt14.tokenized.de-en
  python scripts/prepare_iwslt14.py --prepared ../shared/data/iwslt14/fairseq-reference

Input folders are only read; prepared data goes to the cache (default
~/.cache/normlab/iwslt14/<key>) and, with --out, a copy of the fairseq-layout text to --out.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from normlab.data.iwslt14 import (
    IWSLT14_URL,
    PreparedData,
    default_iwslt14_cache,
    load_prepared,
    prepare_iwslt14,
)
from normlab.data.iwslt14._parallel import default_workers
from normlab.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--archive", type=Path, help="path of de-en.tgz")
    source.add_argument("--download", action="store_true", help=f"fetch {IWSLT14_URL}")
    source.add_argument(
        "--prepared", type=Path, help="an already-prepared fairseq-layout folder (BPE'd text)"
    )
    p.add_argument(
        "--out", type=Path, help="where to copy the fairseq-layout text (tmp/, code, ...)"
    )
    p.add_argument(
        "--cache-dir", type=Path, default=None, help=f"default: {default_iwslt14_cache()}"
    )
    p.add_argument("--bpe-codes", type=Path, help="use these BPE codes instead of learning them")
    p.add_argument("--merges", type=int, default=10_000, help="BPE merges to learn (default 10000)")
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes for tokenization and BPE (default min(4, CPUs))",
    )
    p.add_argument("--src-lang", default="de", help="with --prepared: source suffix (default de)")
    p.add_argument("--tgt-lang", default="en", help="with --prepared: target suffix (default en)")
    return p.parse_args(argv)


def summary(prepared: PreparedData) -> str:
    sizes = ", ".join(f"{name} {len(ds):,}" for name, ds in prepared.splits.items())
    origin = "from cache" if prepared.cache_hit else "built"
    return (
        f"{prepared.source_description}\n"
        f"  pairs: {sizes}; dictionary: {len(prepared.dictionary):,} symbols "
        f"(from {', '.join(prepared.dict_source)})\n"
        f"  ids {origin}: {prepared.cache_path}\n"
        f"  text: {prepared.text_dir}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.prepared is not None:
            if args.bpe_codes is not None or args.out is not None:
                raise UserError(
                    "--prepared takes already BPE'd text, so --bpe-codes and --out do not apply; "
                    "drop them."
                )
            prepared = load_prepared(
                args.prepared, args.cache_dir, src_lang=args.src_lang, tgt_lang=args.tgt_lang
            )
        else:
            prepared = prepare_iwslt14(
                archive=args.archive,
                out_dir=args.out,
                cache_dir=args.cache_dir,
                bpe_codes=args.bpe_codes,
                merges=args.merges,
                workers=args.workers,
                download=args.download,
            )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(prepared))
    return 0


if __name__ == "__main__":
    # Only as a script: as an imported module (tests) the caller owns the logging set-up.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
