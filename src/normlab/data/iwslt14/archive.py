"""The raw IWSLT14 de-en archive: download it, read it, and extract text lines as the script does.

prepare-iwslt14.sh, before tokenizing:
* train (`train.tags.de-en.L`): drop lines containing "<url>", "<talkid>" or "<keywords>" (grep -v),
  delete the tags "<title>", "</title>", "<description>", "</description>" (sed); every other line,
  including other tag lines, is kept and tokenized.
* dev/test (`IWSLT14.TED*.L.xml`): keep lines containing "<seg id" (grep), delete the opening tag
  and whitespace after it, the closing tag and whitespace around it, and turn "’" into "'".
* test = dev2010, TEDX.dev2012, tst2010, tst2011, tst2012 concatenated in that order (the `cat`
  at the script's "creating train, valid, test" step).
"""

from __future__ import annotations

import os
import re
import tarfile
import urllib.request
from pathlib import Path

from normlab.data.iwslt14.textio import RawPair, decode_lines
from normlab.errors import UserError

IWSLT14_URL = "https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
DOWNLOAD_TIMEOUT_S = 60  # per socket operation, so a stalled connection fails instead of hanging
ARCHIVE_NAME = "de-en.tgz"
TEST_SETS = (
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012",
)
TRAIN_DROP = ("<url>", "<talkid>", "<keywords>")
TRAIN_STRIP = ("<title>", "</title>", "<description>", "</description>")
# sed's \s; the tokenizer collapses any other whitespace afterwards, so ASCII is enough here.
_SEG_OPEN = re.compile(r'<seg id="[0-9]*">[ \t\n\r\f\v]*')
_SEG_CLOSE = re.compile(r"[ \t\n\r\f\v]*</seg>[ \t\n\r\f\v]*")


def filter_train_tags(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if any(tag in line for tag in TRAIN_DROP):
            continue
        for tag in TRAIN_STRIP:
            line = line.replace(tag, "")
        out.append(line)
    return out


def extract_segments(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if "<seg id" not in line:
            continue
        line = _SEG_CLOSE.sub("", _SEG_OPEN.sub("", line))
        out.append(line.replace("\u2019", "'"))
    return out


def download(url: str, dest: Path) -> Path:
    """Fetch `url` to `dest` atomically (temp file + rename); an existing `dest` is reused."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            open(tmp, "wb") as out,
        ):
            while block := response.read(1 << 20):
                out.write(block)
        os.replace(tmp, dest)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"could not download {url} ({err}); check the network, or download it yourself and "
            "pass --archive PATH."
        ) from None
    return dest


def _members(archive: Path) -> dict[str, bytes]:
    """Basename -> bytes of the regular files in the archive (it has a single de-en/ folder)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            return {
                Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile()
            }
    except FileNotFoundError:
        raise UserError(f"{archive} does not exist; pass the path of de-en.tgz.") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UserError(
            f"{archive} is not a readable .tgz archive ({err}); download it again from "
            f"{IWSLT14_URL}."
        ) from None


def read_archive(archive: Path, src: str = "de", tgt: str = "en") -> tuple[RawPair, RawPair]:
    """(train, test) raw lines from de-en.tgz, extracted as prepare-iwslt14.sh does."""
    members = _members(archive)
    pair = f"{src}-{tgt}"

    def member(name: str) -> list[str]:
        if name not in members:
            raise UserError(
                f"{archive} has no file {name}; it must be the IWSLT14 {pair}.tgz from "
                f"{IWSLT14_URL}."
            )
        return decode_lines(members[name], f"{archive}:{name}")

    train = RawPair(
        *(filter_train_tags(member(f"train.tags.{pair}.{lang}")) for lang in (src, tgt))
    )
    test = RawPair(
        *(
            [
                seg
                for name in TEST_SETS
                for seg in extract_segments(member(f"{name}.{pair}.{lang}.xml"))
            ]
            for lang in (src, tgt)
        )
    )
    if len(train.src) != len(train.tgt) or len(test.src) != len(test.tgt):
        raise UserError(
            f"{archive} has unequal {src}/{tgt} line counts after extraction; download it again "
            f"from {IWSLT14_URL}."
        )
    return train, test
