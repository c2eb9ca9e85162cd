"""Reading and writing line files the way the Perl/sed tools of prepare-iwslt14.sh see them.

Lines are split on "\\n" only: Python's universal newlines or `str.splitlines` would also split on
"\\r", "\\x0b", "\\x1c", "\\u2028" ..., which the Moses scripts treat as characters inside a line.
Decoding is strict UTF-8 so that a bad byte becomes one sentence naming the file and line number.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from normlab.errors import UserError
from normlab.io_utils import atomic_write


@dataclass(frozen=True)
class RawPair:
    """The two sides of one parallel split, line i of `src` translating line i of `tgt`."""

    src: list[str]
    tgt: list[str]


def decode_lines(data: bytes, name: str | os.PathLike) -> list[str]:
    """Decode UTF-8 bytes into lines without their "\\n"; a missing final newline is tolerated."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise UserError(
            f"{name} line {line_no} is not valid UTF-8 (byte 0x{data[err.start]:02x} at column "
            f"{column}); re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
        ) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: str | os.PathLike) -> list[str]:
    """All lines of a UTF-8 text file, raising UserError if it is missing or not UTF-8.

    A name ending in ".gz" is decompressed in memory, so that a corpus distributed gzipped (as
    Multi30K is) is read in place instead of being unpacked into the data folder.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; check the path and the file name.") from None
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:  # BadGzipFile is an OSError; a cut file is an EOFError
            raise UserError(
                f"{path} is not a readable gzip file ({err}); download it again, or give it "
                "uncompressed without the .gz suffix."
            ) from None
    return decode_lines(data, path)


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Write lines, each ended by "\\n", atomically (temp file + rename)."""
    payload = "".join(f"{line}\n" for line in lines).encode("utf-8")
    atomic_write(path, lambda f: f.write(payload))


def read_pair(src: str | os.PathLike, tgt: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Both sides of a parallel split, checked: UTF-8, not empty, one line per sentence pair."""
    sides = []
    for path in (Path(src), Path(tgt)):
        lines = read_lines(path)
        if not lines:
            raise UserError(
                f"{path} is empty (line 1 is missing); put one sentence per line in it, or leave "
                "out this split for both languages."
            )
        sides.append(lines)
    (src_lines, tgt_lines), (src_path, tgt_path) = sides, (Path(src), Path(tgt))
    if len(src_lines) != len(tgt_lines):
        longer = src_path if len(src_lines) > len(tgt_lines) else tgt_path
        raise UserError(
            f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}, so line "
            f"{min(len(src_lines), len(tgt_lines)) + 1} of {longer} has no partner; give both "
            "files one sentence per line, paired line by line."
        )
    return src_lines, tgt_lines
