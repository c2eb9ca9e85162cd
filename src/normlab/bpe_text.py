"""BPE's continuation marker and its removal, as fairseq's `--remove-bpe` does.

Two packages need it and may not import each other (docs/design.md §1): `data` turns ids back into
text (`Dictionary.string`) and `eval` scores BLEU on BPE-joined text. The one definition lives in
this neutral module, which imports nothing from normlab, so both can use it without depending on
each other.
"""

from __future__ import annotations

BPE_SYMBOL = "@@ "  # subword-nmt's separator "@@" plus the space before the next piece


def remove_bpe(line: str, symbol: str = BPE_SYMBOL) -> str:
    """Join subword pieces: "new@@ s" -> "news". The appended space lets a marker at the very end
    of the line go too ("marker@@" -> "marker"), exactly as fairseq's post-processing does."""
    return (line + " ").replace(symbol, "").rstrip()
