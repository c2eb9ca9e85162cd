"""Joint BPE through subword-nmt's Python API, as `learn_bpe.py -s N` and `apply_bpe.py -c code`.

subword-nmt calls `sys.exit` on a malformed codes file, so codes are validated here first and a
bad file becomes one UserError naming the line.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from subword_nmt.apply_bpe import BPE
from subword_nmt.learn_bpe import learn_bpe

from normlab.data.iwslt14._parallel import Workers, map_chunks
from normlab.data.iwslt14.textio import decode_lines
from normlab.errors import UserError


def check_merges(merges: int) -> None:
    """Refuse a merge count subword-nmt would silently accept (0 or less learns nothing)."""
    if not isinstance(merges, int) or merges < 1:
        raise UserError(f"merges={merges} is not a positive number of BPE merges; use e.g. 10000.")


def learn_codes(lines: Iterable[str], merges: int) -> str:
    """The codes file text (a "#version: 0.2" header, then one merge per line) learned on `lines`.

    The learned merges depend on line order only through ties, exactly as with the CLI, so feed
    the source-language training lines first, then the target ones (`cat train.de train.en`).
    """
    check_merges(merges)
    out = io.StringIO()
    # num_workers=1 reads the iterable directly (the parallel path needs a real file name).
    learn_bpe(list(lines), out, merges, num_workers=1)
    return out.getvalue()


def read_codes(path: str | os.PathLike) -> str:
    """A codes file's text, checked to be one "left right" pair per line after the header."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"BPE codes file {path} does not exist; check --bpe-codes.") from None
    lines = decode_lines(data, path)
    if not lines:
        raise UserError(f"BPE codes file {path} is empty; give a subword-nmt codes file.")
    first = 1 if lines[0].startswith("#version:") else 0
    for line_no, line in enumerate(lines[first:], start=first + 1):
        if len(line.strip("\r\n ").split(" ")) != 2:
            raise UserError(
                f"BPE codes file {path} line {line_no} is {line[:40]!r}, not two subword units "
                "separated by one space; give a codes file written by subword-nmt learn-bpe."
            )
    return data.decode("utf-8")


@functools.lru_cache(maxsize=2)
def _bpe(codes: str) -> BPE:
    # One per codes and process: its word cache then speeds up every later chunk.
    return BPE(io.StringIO(codes))


@dataclass(frozen=True)
class BpeApplier:
    """A picklable `apply_bpe.py -c codes` task for worker processes."""

    codes: str = field(repr=False)

    def __call__(self, lines: Sequence[str]) -> list[str]:
        bpe = _bpe(self.codes)
        # process_line keeps leading/trailing whitespace the way the CLI does.
        return [bpe.process_line(line) for line in lines]


def apply_codes(
    lines: Sequence[str], codes: str, *, workers: int | Workers = 1, desc: str | None = None
) -> list[str]:
    """Segment tokenized lines with BPE codes (separator "@@")."""
    return map_chunks(BpeApplier(codes), lines, workers=workers, desc=desc)
