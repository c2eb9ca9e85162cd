"""Moses tokenization and lowercasing exactly as `tokenizer.perl -l L` and `lowercase.perl` do it.

sacremoses ports tokenizer.perl closely; three behaviours of the Perl script that fairseq's
prepare-iwslt14.sh ran have to be added to match it byte for byte:

* The line-final period. tokenizer.perl splits a period off the *last* word of a line
  unconditionally ("they are unlikely to be non-breaking prefixes"), so "in den u.s.a." ends in
  "u.s.a ." and "usw." in "usw .". sacremoses applies the abbreviation rules to the last word too
  and leaves "u.s.a." whole. 16 German and 15 English IWSLT14 test lines depend on this.
* Blank lines. tokenizer.perl prints a line that is empty or only whitespace unchanged.
* Control characters. Perl collapses `\\s+` first and then deletes ASCII 0-31; Python's `\\s` also
  matches "\\x1c"-"\\x1f", which would turn those into spaces instead of deleting them.

lowercase.perl is Perl's `lc`, which has no final-sigma rule; Python's `str.lower` maps a
word-final capital sigma to "ς", so it is mapped to "σ" first.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sacremoses import MosesTokenizer

from normlab.data.iwslt14._parallel import Workers, map_chunks

# Perl's \s on decoded (utf8) strings: the Unicode White_Space characters.
PERL_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_BLANK_LINE = re.compile(f"[{PERL_SPACE}]*")
# Python-only whitespace that Perl deletes as ASCII junk instead of collapsing into a space.
_NON_PERL_SPACE_CONTROL = re.compile("[\x1c-\x1f]")
_LINE_FINAL_PERIOD = re.compile(r"^(\S+)\.$")


class PerlMosesTokenizer(MosesTokenizer):
    """sacremoses' MosesTokenizer plus tokenizer.perl's unconditional split of the final period."""

    def handles_nonbreaking_prefixes(self, text: str) -> str:
        tokens = text.split()
        if tokens:
            match = _LINE_FINAL_PERIOD.match(tokens[-1])
            if match:
                # "word." -> "word ." before the abbreviation rules run on the other words. The
                # next-word tests of the second-to-last word only look at the first character,
                # which the split leaves unchanged, so they decide as tokenizer.perl does.
                tokens[-1] = f"{match.group(1)} ."
        return super().handles_nonbreaking_prefixes(" ".join(tokens))


def tokenize_line(line: str, tokenizer: MosesTokenizer) -> str:
    """One line (without "\\n") as `tokenizer.perl -l L` prints it, with its default escaping."""
    if _BLANK_LINE.fullmatch(line):
        return line
    line = _NON_PERL_SPACE_CONTROL.sub("", line)
    return tokenizer.tokenize(line, escape=True, return_str=True)


def lowercase(line: str) -> str:
    """Perl's `lc` (lowercase.perl): Python's lower() without the final-sigma special case."""
    return line.replace("\u03a3", "\u03c3").lower()


@functools.lru_cache(maxsize=8)
def _tokenizer(lang: str) -> PerlMosesTokenizer:
    # One per language and process: workers reuse it across chunks.
    return PerlMosesTokenizer(lang=lang)


@dataclass(frozen=True)
class LineTokenizer:
    """A picklable per-language tokenizing task for worker processes."""

    lang: str
    lower: bool = False

    def __call__(self, lines: Sequence[str]) -> list[str]:
        tokenizer = _tokenizer(self.lang)
        out = [tokenize_line(line, tokenizer) for line in lines]
        return [lowercase(line) for line in out] if self.lower else out


def tokenize_lines(
    lines: Sequence[str],
    lang: str,
    *,
    lower: bool = False,
    workers: int | Workers = 1,
    desc: str | None = None,
    min_lines_per_worker: int | None = None,
) -> list[str]:
    """Tokenize (and optionally lowercase) many lines, in worker processes when that pays off."""
    task = LineTokenizer(lang, lower)
    return map_chunks(
        task, lines, workers=workers, desc=desc, min_lines_per_worker=min_lines_per_worker
    )
