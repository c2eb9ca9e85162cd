"""BLEU against its formula (written out here) and against sacreBLEU; BPE removal; detokenization."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import sacrebleu

from normlab.bpe_text import remove_bpe
from normlab.eval.bleu import detokenize, detokenized_bleu, tokenized_bleu

HYPS = [
    "the cat sat on the mat",
    "there is a book on the table .",
    "he said that he would come tomorrow",
    "it is raining",
]
REFS = [
    "the cat sat on a mat",
    "a book is on the table .",
    "he said he would come tomorrow",
    "it is raining very heavily today",
]


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu_from_the_formula(hyps: list[str], refs: list[str]) -> float:
    """Papineni et al. 2002, one reference: BP · exp(mean_n log p_n), n = 1..4, where p_n is the
    corpus-level clipped n-gram precision and BP = min(1, exp(1 − r/c))."""
    log_p = 0.0
    for n in range(1, 5):
        matched = total = 0
        for h, r in zip(hyps, refs, strict=True):
            h_ngrams, r_ngrams = ngrams(h.split(), n), ngrams(r.split(), n)
            matched += sum(min(c, r_ngrams[g]) for g, c in h_ngrams.items())
            total += sum(h_ngrams.values())
        if matched == 0:
            return 0.0
        log_p += math.log(matched / total) / 4
    c = sum(len(h.split()) for h in hyps)
    r = sum(len(x.split()) for x in refs)
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return 100 * bp * math.exp(log_p)


def test_tokenized_bleu_is_the_formula():
    result = tokenized_bleu(HYPS, REFS)
    assert result.score == pytest.approx(bleu_from_the_formula(HYPS, REFS), abs=1e-9)
    assert result.brevity_penalty < 1  # the hypotheses are shorter: the penalty is exercised
    assert (result.hyp_len, result.ref_len) == (24, 25)
    assert "tok:none" in result.signature and "smooth:none" in result.signature


def test_tokenized_bleu_agrees_with_sacrebleu_on_pre_tokenized_text():
    reference = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none", force=True)
    assert tokenized_bleu(HYPS, REFS).score == pytest.approx(reference.score, abs=1e-9)


def test_no_matching_four_gram_scores_zero_without_smoothing():
    assert tokenized_bleu(["a b c"], ["a b c d e"]).score == 0.0
    assert bleu_from_the_formula(["a b c"], ["a b c d e"]) == 0.0


def test_a_perfect_hypothesis_scores_100():
    assert tokenized_bleu(REFS, REFS).score == pytest.approx(100.0)
    assert detokenized_bleu(REFS, REFS, "en").score == pytest.approx(100.0)


def test_bpe_is_removed_before_scoring():
    assert remove_bpe("the ne@@ w@@ s is go@@ od") == "the news is good"
    assert remove_bpe("a stray marker@@") == "a stray marker"  # fairseq: line + " ", then join
    assert remove_bpe("e@@mail") == "e@@mail"  # only "@@ " marks a piece
    bpe_hyps = ["the c@@ at sat on the m@@ at", *HYPS[1:]]
    bpe_refs = ["the cat sat on a m@@ at", *REFS[1:]]
    assert tokenized_bleu(bpe_hyps, bpe_refs).score == tokenized_bleu(HYPS, REFS).score
    assert (
        tokenized_bleu(bpe_hyps, bpe_refs, bpe_marker=None).score < tokenized_bleu(HYPS, REFS).score
    )


def test_detokenized_bleu_is_sacrebleu_on_moses_detokenized_text():
    hyps = ["it &apos;s a &quot; test &quot; , isn &apos;t it ?", "we have 3 @-@ 4 options ."]
    refs = ["it &apos;s the &quot; test &quot; , is it not ?", "we have 3 @-@ 5 options ."]
    assert detokenize(hyps, "en") == ["it's a \"test\", isn't it?", "we have 3-4 options."]
    result = detokenized_bleu(hyps, refs, "en")
    expected = sacrebleu.corpus_bleu(detokenize(hyps, "en"), [detokenize(refs, "en")])
    assert result.score == pytest.approx(expected.score)
    assert "tok:13a" in result.signature and "smooth:exp" in result.signature


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        tokenized_bleu(["a", "b"], ["a"])
