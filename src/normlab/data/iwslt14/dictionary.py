"""A fairseq-style dictionary: `fairseq-preprocess --joined-dictionary` without fairseq.

Ids 0-3 are the special symbols <s>, <pad>, </s>, <unk>; then every token of the counted files by
descending count, ties in code-point order of the token (what fairseq's `finalize` yields: it sorts
by symbol, then stably by count); then "madeupword0000"... fillers up to a multiple of 8, as
fairseq's default `--padding-factor 8` does, so vocabulary sizes match fairseq's. Files are saved
in fairseq's `dict.txt` format ("token count" per line, specials omitted).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

from normlab.bpe_text import BPE_SYMBOL, remove_bpe
from normlab.data.iwslt14.textio import read_lines
from normlab.errors import UserError
from normlab.io_utils import atomic_write_text

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
SPECIALS = (BOS, PAD, EOS, UNK)
PADDING_FACTOR = 8


class Dictionary:
    """Token <-> id mapping with fairseq's special-symbol layout and API names."""

    def __init__(self) -> None:
        self.symbols: list[str] = []
        self.counts: list[int] = []
        self.indices: dict[str, int] = {}
        for symbol in SPECIALS:
            self._add(symbol, 0)
        self.nspecial = len(SPECIALS)

    def _add(self, symbol: str, count: int) -> None:
        if symbol in self.indices:
            raise ValueError(f"duplicate symbol {symbol!r}")
        self.indices[symbol] = len(self.symbols)
        self.symbols.append(symbol)
        self.counts.append(count)

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, lines: Iterable[str], padding_factor: int = PADDING_FACTOR) -> Dictionary:
        """Count the whitespace-separated tokens of `lines` and order them as fairseq does."""
        counter: Counter[str] = Counter()
        n_lines = 0
        for line in lines:
            counter.update(line.split())
            n_lines += 1
        d = cls()
        d.counts[d.eos()] = n_lines  # fairseq counts one </s> per line
        for special in SPECIALS:
            counter.pop(special, None)  # never give a special a second id
        for symbol, count in sorted(counter.items(), key=lambda item: (-item[1], item[0])):
            d._add(symbol, count)
        i = 0
        while padding_factor > 1 and len(d) % padding_factor:
            d._add(f"madeupword{i:04d}", 0)
            i += 1
        return d

    def save(self, path: str | os.PathLike) -> None:
        """fairseq's dict.txt: "token count" per line, specials omitted (written atomically)."""
        rows = zip(self.symbols[self.nspecial :], self.counts[self.nspecial :], strict=True)
        atomic_write_text(path, "".join(f"{s} {c}\n" for s, c in rows))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dictionary:
        d = cls()
        for line_no, line in enumerate(read_lines(path), start=1):
            symbol, _, count = line.rstrip().rpartition(" ")
            if not symbol or not count.isdigit():
                raise UserError(
                    f"{path} line {line_no} is not 'token count'; give a fairseq dict.txt file."
                )
            d._add(symbol, int(count))
        return d

    # -- fairseq API --------------------------------------------------------------------------
    def bos(self) -> int:
        return self.indices[BOS]

    def pad(self) -> int:
        return self.indices[PAD]

    def eos(self) -> int:
        return self.indices[EOS]

    def unk(self) -> int:
        return self.indices[UNK]

    def __len__(self) -> int:
        return len(self.symbols)

    def __getitem__(self, idx: int) -> str:
        return self.symbols[idx] if 0 <= idx < len(self.symbols) else UNK

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.indices

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and (self.symbols, self.counts) == (
            other.symbols,
            other.counts,
        )

    def index(self, symbol: str) -> int:
        return self.indices.get(symbol, self.unk())

    def encode_line(self, line: str, append_eos: bool = True) -> list[int]:
        """Ids of the whitespace-separated tokens of `line` (unknown -> unk), then eos."""
        unk = self.unk()
        ids = [self.indices.get(token, unk) for token in line.split()]
        if append_eos:
            ids.append(self.eos())
        return ids

    def string(self, ids: Iterable[int], bpe_symbol: str | None = BPE_SYMBOL) -> str:
        """Text of `ids` without <s>, <pad>, </s>; BPE removed unless `bpe_symbol` is None."""
        skip = {self.bos(), self.pad(), self.eos()}
        text = " ".join(self[int(i)] for i in ids if int(i) not in skip)
        return remove_bpe(text, bpe_symbol) if bpe_symbol else text
