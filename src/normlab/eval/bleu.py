"""Corpus BLEU two ways: the paper's tokenized BLEU, and detokenized sacreBLEU.

1. `tokenized_bleu` is the number the paper's Table 1 reports, the one fairseq-generate prints:
   hypotheses and references as the data preparation left them (Moses-tokenized, lowercased),
   BPE joined back ("@@ " removed), split on whitespace and nothing else. No smoothing: like
   fairseq's scorer and multi-bleu.perl, a corpus with no matching 4-gram scores 0.
2. `detokenized_bleu` is what newer papers report: both sides Moses-detokenized, then sacreBLEU's
   default 13a tokenization; it comes with sacreBLEU's signature so the number is reproducible.
   (Our references are lowercased by the data preparation, so this is a lowercased sacreBLEU.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU
from sacremoses import MosesDetokenizer

from normlab.bpe_text import BPE_SYMBOL, remove_bpe


@dataclass(frozen=True)
class BleuResult:
    score: float  # 0..100
    precisions: tuple[float, ...]  # modified n-gram precisions in percent, n = 1..4
    brevity_penalty: float
    hyp_len: int
    ref_len: int
    signature: str  # sacreBLEU's description of how the score was computed

    def __str__(self) -> str:
        p = "/".join(f"{x:.1f}" for x in self.precisions)
        return f"BLEU = {self.score:.2f} {p} (BP = {self.brevity_penalty:.3f}) {self.signature}"


def _check_lengths(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")


def _score(metric: BLEU, hypotheses: Sequence[str], references: Sequence[str]) -> BleuResult:
    s = metric.corpus_score(list(hypotheses), [list(references)])
    return BleuResult(
        score=s.score,
        precisions=tuple(s.precisions),
        brevity_penalty=s.bp,
        hyp_len=s.sys_len,
        ref_len=s.ref_len,
        signature=str(metric.get_signature()),
    )


def tokenized_bleu(
    hypotheses: Sequence[str], references: Sequence[str], bpe_marker: str | None = BPE_SYMBOL
) -> BleuResult:
    """The paper's BLEU over whitespace tokens; BPE is removed from both sides first."""
    _check_lengths(hypotheses, references)
    if bpe_marker is not None:
        hypotheses = [remove_bpe(h, bpe_marker) for h in hypotheses]
        references = [remove_bpe(r, bpe_marker) for r in references]
    # force=True: sacreBLEU warns on already-tokenized input, which is exactly what this is.
    return _score(BLEU(tokenize="none", smooth_method="none", force=True), hypotheses, references)


def detokenize(lines: Sequence[str], lang: str) -> list[str]:
    """Moses-detokenize tokenized lines (also undoes the tokenizer's &apos;-style escapes)."""
    detok = MosesDetokenizer(lang=lang)
    return [detok.detokenize(line.split()) for line in lines]


def detokenized_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    lang: str,
    bpe_marker: str | None = BPE_SYMBOL,
) -> BleuResult:
    """sacreBLEU with its defaults (13a, exp smoothing) on Moses-detokenized text in `lang`."""
    _check_lengths(hypotheses, references)
    if bpe_marker is not None:
        hypotheses = [remove_bpe(h, bpe_marker) for h in hypotheses]
        references = [remove_bpe(r, bpe_marker) for r in references]
    return _score(BLEU(), detokenize(hypotheses, lang), detokenize(references, lang))
