"""Parallel-corpus cleaning with the semantics of Moses' `clean-corpus-n.perl -ratio R corpus l1 l2 out MIN MAX`.

Per pair, in the Perl script's order: strip "|" unless the first pair looked factored; collapse
whitespace runs to one space and trim one space at each end (the kept lines are written in this
normalized form); drop the pair if either side is empty, has more than MAX or fewer than MIN words
(words = fields between single spaces), if either length exceeds R times the other, or if either
side has a word longer than 1000 characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from normlab.data.iwslt14.tokenize import PERL_SPACE
from normlab.errors import UserError

MAX_WORD_LENGTH = 1000  # clean-corpus-n.perl's default (-max-word-length)
_SPACES = re.compile(f"[{PERL_SPACE}]+")
_LONG_WORD = re.compile(f"[^{PERL_SPACE}|]{{{MAX_WORD_LENGTH + 1}}}")
_BLANK_FACTOR = re.compile(r"[ |]\|")


@dataclass(frozen=True)
class CleanResult:
    src: list[str]
    tgt: list[str]
    kept: list[int]  # 1-based input line numbers of the kept pairs


def _normalize(line: str, factored: bool) -> str:
    if not factored:
        line = line.replace("|", "")
    line = _SPACES.sub(" ", line)
    # Perl: s/^ //; s/ $// -- one space each side, which is all a collapsed line can have.
    if line.startswith(" "):
        line = line[1:]
    if line.endswith(" "):
        line = line[:-1]
    return line


def _word_count(line: str) -> int:
    # split(/ /, $line) on a normalized, non-empty line: one field more than there are spaces.
    return line.count(" ") + 1


def clean_corpus(
    src: Sequence[str],
    tgt: Sequence[str],
    *,
    ratio: float = 1.5,
    min_len: int = 1,
    max_len: int = 175,
    name: str = "corpus",
) -> CleanResult:
    """Keep the pairs clean-corpus-n.perl keeps, normalized as it writes them."""
    if len(src) != len(tgt):
        raise UserError(
            f"{name}: {len(src)} source lines but {len(tgt)} target lines; give both sides one "
            "sentence per line with the same number of lines."
        )
    kept = CleanResult([], [], [])
    factored = bool(src) and ("|" in src[0] or "|" in tgt[0])
    for line_no, (f, e) in enumerate(zip(src, tgt, strict=True), start=1):
        f, e = _normalize(f, factored), _normalize(e, factored)
        if not f or not e:
            continue
        fc, ec = _word_count(f), _word_count(e)
        if ec > max_len or fc > max_len or ec < min_len or fc < min_len:
            continue
        if ec / fc > ratio or fc / ec > ratio:
            continue
        if _LONG_WORD.search(e) or _LONG_WORD.search(f):
            continue
        if factored and (_BLANK_FACTOR.search(f) or _BLANK_FACTOR.search(e)):
            raise UserError(
                f'{name} line {line_no} has an empty factor ("||" or " |"); remove the stray '
                "'|' characters from that line."
            )
        kept.src.append(f)
        kept.tgt.append(e)
        kept.kept.append(line_no)
    return kept
