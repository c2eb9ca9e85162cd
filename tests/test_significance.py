"""The paired bootstrap test against a direct re-implementation of Koehn's procedure (the same
resampled sentence indices, BLEU recomputed from the resampled sentences by eval.bleu), and the
reader of generate-test.txt against the file the translation task writes."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.eval.bleu import tokenized_bleu
from normlab.eval.significance import paired_bootstrap, read_generate

WORDS = ["a", "man", "in", "a", "blue", "shirt", "is", "riding", "a", "bike", "down", "the"]


def _corpus(n: int, seed: int, noise: float) -> tuple[list[str], list[str]]:
    """References, and hypotheses that drop / swap a `noise` share of their words."""
    rng = np.random.default_rng(seed)
    refs, hyps = [], []
    for _ in range(n):
        ref = list(rng.choice(WORDS, size=rng.integers(6, 14)))
        hyp = [w if rng.random() > noise else str(rng.choice(WORDS)) for w in ref]
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return refs, hyps


def _direct(baseline, system, refs, samples, seed):
    """Koehn's paired bootstrap written out: sacreBLEU's index draw, BLEU per resample recomputed
    from the sentences, the centred absolute-difference statistic, (count + 1) / (samples + 1)."""
    idx = np.random.default_rng(seed).choice(len(system), size=(samples, len(system)), replace=True)
    real = abs(
        tokenized_bleu(baseline, refs, None).score - tokenized_bleu(system, refs, None).score
    )
    diffs = []
    for row in idx:
        ref, base, sys_ = ([xs[i] for i in row] for xs in (refs, baseline, system))
        b = tokenized_bleu(base, ref, None).score
        s = tokenized_bleu(sys_, ref, None).score
        diffs.append(abs(s - b))
    diffs = np.array(diffs)
    return (np.sum(diffs - diffs.mean() > real) + 1) / (samples + 1)


def test_p_value_matches_a_direct_computation():
    refs, good = _corpus(60, 0, 0.2)
    _, bad = _corpus(60, 0, 0.45)
    res = paired_bootstrap(bad, good, refs, samples=40, seed=7)
    assert res.baseline_bleu == pytest.approx(tokenized_bleu(bad, refs, None).score)
    assert res.system_bleu == pytest.approx(tokenized_bleu(good, refs, None).score)
    assert res.p_value == pytest.approx(_direct(bad, good, refs, 40, 7), abs=1e-9)


def test_clear_difference_is_significant_and_a_one_sentence_difference_is_not():
    refs, good = _corpus(200, 1, 0.1)
    _, bad = _corpus(200, 1, 0.35)
    assert paired_bootstrap(bad, good, refs, samples=200).p_value < 0.01
    almost = [*good[:-1], "a dog"]
    assert paired_bootstrap(good, almost, refs, samples=200).p_value > 0.05


def test_equal_scores_are_not_a_difference():
    refs, good = _corpus(50, 3, 0.1)
    assert paired_bootstrap(good, list(good), refs, samples=50).p_value == 1.0


def test_mismatched_lengths_are_refused():
    refs, hyps = _corpus(5, 2, 0.1)
    with pytest.raises(ValueError, match="same sentences"):
        paired_bootstrap(hyps, hyps[:4], refs)


def test_read_generate_orders_by_index_and_refuses_gaps(tmp_path):
    path = tmp_path / "generate-test.txt"
    path.write_text("S-1\tb\nT-1\tref b\nH-1\thyp b\nS-0\ta\nT-0\tref a\nH-0\thyp a\n")
    assert read_generate(path) == (["ref a", "ref b"], ["hyp a", "hyp b"])
    path.write_text("T-0\tref a\nH-0\thyp a\nT-2\tref c\nH-2\thyp c\n")
    with pytest.raises(ValueError, match="same sentences"):
        read_generate(path)
