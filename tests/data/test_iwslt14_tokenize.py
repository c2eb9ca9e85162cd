"""Moses tokenization, cleaning and lowercasing as prepare-iwslt14.sh runs them (tokenizer.perl,
clean-corpus-n.perl, lowercase.perl), plus the golden rebuild of fairseq's test set."""

from __future__ import annotations

from pathlib import Path

import pytest
from sacremoses import MosesTokenizer

from normlab.data.iwslt14.archive import TEST_SETS, extract_segments
from normlab.data.iwslt14.clean import clean_corpus
from normlab.data.iwslt14.textio import read_lines
from normlab.data.iwslt14.tokenize import (
    PerlMosesTokenizer,
    lowercase,
    tokenize_line,
    tokenize_lines,
)


def tok(line: str, lang: str = "en") -> str:
    return tokenize_line(line, PerlMosesTokenizer(lang))


# -- the line-final period ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "line", "expected"),
    [
        ("de", "Das sind alle Straßen in den U.S.A.", "Das sind alle Straßen in den U.S.A ."),
        ("de", "Viele sind verdeckt usw.", "Viele sind verdeckt usw ."),
        ("en", "but those are the roads in the U.S.", "but those are the roads in the U.S ."),
        ("en", "Mr.", "Mr ."),  # a lone nonbreaking prefix is still the last word
        ("en", "we could do a, or b.", "we could do a , or b ."),
    ],
)
def test_line_final_period_is_split_like_tokenizer_perl(lang: str, line: str, expected: str):
    assert tok(line, lang) == expected


def test_sacremoses_alone_keeps_the_final_abbreviation_whole():
    # The reason PerlMosesTokenizer exists: without it these lines differ from fairseq's.
    plain = MosesTokenizer("de").tokenize("in den U.S.A.", escape=True, return_str=True)
    assert plain == "in den U.S.A."


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Mr. Smith went to Washington.", "Mr. Smith went to Washington ."),
        ("The U.S.A. are big.", "The U.S.A. are big ."),
        ("It is 5 p.m. now.", "It is 5 p.m. now ."),
        ('He said "no."', "He said &quot; no . &quot;"),
    ],
)
def test_inner_periods_follow_the_usual_moses_rules(line: str, expected: str):
    assert tok(line, "en") == expected


# -- the rest of tokenizer.perl's wrapper -----------------------------------------------------


def test_default_escaping_as_tokenizer_perl():
    assert tok('a & b "c" [d] | <e>') == (
        "a &amp; b &quot; c &quot; &#91; d &#93; &#124; &lt; e &gt;"
    )


def test_german_apostrophes_split_both_sides_english_contractions_right():
    assert tok("Wie geht's dir?", "de") == "Wie geht &apos; s dir ?"
    assert tok("It's John's.", "en") == "It &apos;s John &apos;s ."


@pytest.mark.parametrize("line", ["", "   ", "\t \u00a0"])
def test_blank_lines_pass_through_unchanged(line: str):
    assert tok(line) == line


def test_python_only_whitespace_controls_are_deleted_not_spaced():
    # Perl deletes ASCII 0-31 after collapsing \s; \x1c-\x1f are not Perl whitespace.
    assert tok("ab\x1ccd ef") == "abcd ef"
    assert tok("ab\tcd") == "ab cd"


def test_lowercase_is_perl_lc_without_final_sigma():
    assert lowercase("ΟΔΟΣ Straße ÄÖÜ") == "οδοσ straße äöü"
    assert "ΟΔΟΣ".lower() == "οδος"  # what plain Python would have written


def test_parallel_tokenization_equals_serial():
    lines = [f"Satz Nummer {i}: Das ist's, in den U.S.A." for i in range(40)]
    serial = tokenize_lines(lines, "de", lower=True, workers=1)
    parallel = tokenize_lines(lines, "de", lower=True, workers=2, min_lines_per_worker=10)
    assert parallel == serial
    assert serial[0] == "satz nummer 0 : das ist &apos; s , in den u.s.a ."


# -- clean-corpus-n.perl -ratio 1.5 ... 1 175 ------------------------------------------------


def test_clean_corpus_rules():
    src = [
        "a b c",  # 1 kept
        "",  # 2 empty side
        "a b",  # 3 ratio 3/2 = 1.5: kept (the test is "> ratio")
        "a",  # 4 ratio 2: dropped
        " ".join(["w"] * 175),  # 5 175 words: kept
        " ".join(["w"] * 176),  # 6 176 words: dropped
        "  x \t y  ",  # 7 whitespace normalized, kept
        "x" * 1001,  # 8 a word over 1000 characters: dropped
    ]
    tgt = ["a b c", "a", "a b c", "a b", " ".join(["v"] * 175), " ".join(["v"] * 176), "x y", "y"]
    result = clean_corpus(src, tgt, ratio=1.5, min_len=1, max_len=175)
    assert result.kept == [1, 3, 5, 7]
    assert result.src[3] == "x y"
    assert result.tgt[1] == "a b c"


# -- golden: fairseq's tmp/test.* rebuilt from the raw XML ----------------------------------------


@pytest.mark.parametrize("lang", ["de", "en"])
def test_test_set_rebuilt_from_xml_matches_fairseq_byte_for_byte(
    shared_data: Path, iwslt14_reference: Path, lang: str
):
    orig = shared_data / "iwslt14" / "orig" / "de-en"
    segments = [
        seg
        for name in TEST_SETS
        for seg in extract_segments(read_lines(orig / f"{name}.de-en.{lang}.xml"))
    ]
    rebuilt = tokenize_lines(segments, lang, lower=True, workers=1)
    expected = (iwslt14_reference / "tmp" / f"test.{lang}").read_bytes()
    assert len(rebuilt) == 6750
    assert "".join(f"{line}\n" for line in rebuilt).encode("utf-8") == expected
