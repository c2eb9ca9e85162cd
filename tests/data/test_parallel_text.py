"""Bring-your-own parallel text through the IWSLT14 pipeline, and its input checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from normlab.bpe_text import remove_bpe
from normlab.data.iwslt14 import prepare_parallel_text
from normlab.data.iwslt14.textio import read_lines
from normlab.errors import UserError

FR = ["le", "chat", "noir", "dort", "sur", "la", "table", "de", "la", "cuisine"]
EN = ["the", "black", "cat", "sleeps", "on", "the", "kitchen", "table", "today"]


def sentences(words: list[str], n: int, shift: int) -> list[str]:
    return [
        " ".join(words[(i * shift + k) % len(words)] for k in range(3 + i % 5)) + "."
        for i in range(n)
    ]


def write_corpus(folder: Path, splits: dict[str, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in splits.items():
        (folder / f"{split}.fr").write_text("\n".join(sentences(FR, n, 1)) + "\n", encoding="utf-8")
        (folder / f"{split}.en").write_text("\n".join(sentences(EN, n, 2)) + "\n", encoding="utf-8")
    return folder


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_parallel_text_end_to_end(tmp_path: Path):
    corpus = write_corpus(tmp_path / "corpus", {"train": 50, "valid": 6, "test": 7})
    out = tmp_path / "out"
    prepared = prepare_parallel_text(
        corpus, "fr", "en", out_dir=out, cache_dir=tmp_path / "cache", merges=30, workers=1
    )
    assert {k: len(v) for k, v in prepared.splits.items()} == {"train": 50, "valid": 6, "test": 7}
    assert (prepared.src_lang, prepared.tgt_lang) == ("fr", "en")
    assert prepared.dict_source == ("train.fr", "train.en")
    assert read_lines(out / "tmp" / "valid.fr")[0] == "le chat noir ."
    for split in ("train", "valid", "test"):
        tmp = read_lines(out / "tmp" / f"{split}.en")
        assert [remove_bpe(x) for x in read_lines(out / f"{split}.en")] == tmp
        assert [prepared.dictionary.string(ids) for ids in prepared.splits[split]["tgt"]][:3] == [
            " ".join(t if t in prepared.dictionary else "<unk>" for t in line.split())
            for line in tmp[:3]
        ]
    again = prepare_parallel_text(corpus, "fr", "en", cache_dir=tmp_path / "cache", merges=30)
    assert again.cache_hit and again.text_dir == prepared.cache_path / "text"


def test_missing_valid_is_every_23rd_training_line(tmp_path: Path):
    corpus = write_corpus(tmp_path / "corpus", {"train": 50})
    prepared = prepare_parallel_text(corpus, "fr", "en", cache_dir=tmp_path / "cache", merges=20)
    assert {k: len(v) for k, v in prepared.splits.items()} == {"train": 48, "valid": 2}


def corrupt(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "train.en",
            b"one.\ntwo.\n",
            r"train\.fr has 50 lines but .*train\.en has 2, so line 3 of",
        ),
        ("train.fr", b"", r"train\.fr is empty \(line 1 is missing\); put one sentence per line"),
        ("valid.en", b"ok.\nfine.\n\xffbad.\n", r"valid\.en line 3 is not valid UTF-8 .*iconv"),
        (
            "test.fr",
            b"x.\n" * 6,
            r"test\.fr has 6 lines but .*test\.en has 7, so line 7 of .*test\.en",
        ),
    ],
)
def test_bad_input_is_one_sentence_and_caches_nothing(
    tmp_path: Path, name: str, data: bytes, message: str
):
    corpus = write_corpus(tmp_path / "corpus", {"train": 50, "valid": 6, "test": 7})
    corrupt(corpus, name, data)
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=message) as err:
        prepare_parallel_text(corpus, "fr", "en", cache_dir=cache, merges=20, workers=1)
    assert str(err.value).count("; ") >= 1 and "\n" not in str(err.value)
    assert entries(cache) == []


def test_split_with_one_side_missing_or_bad_codes(tmp_path: Path):
    corpus = write_corpus(tmp_path / "corpus", {"train": 30, "test": 5})
    (corpus / "test.en").unlink()
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=r"test\.en does not exist"):
        prepare_parallel_text(corpus, "fr", "en", cache_dir=cache)
    write_corpus(corpus, {"test": 5})
    codes = tmp_path / "codes"
    codes.write_text("#version: 0.2\na b\nthree parts here\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"codes line 3 is 'three parts here'"):
        prepare_parallel_text(corpus, "fr", "en", cache_dir=cache, bpe_codes=codes)
    with pytest.raises(UserError, match="both 'fr'"):
        prepare_parallel_text(corpus, "fr", "fr", cache_dir=cache)
    with pytest.raises(UserError, match="merges=0 is not a positive number"):
        prepare_parallel_text(corpus, "fr", "en", cache_dir=cache, merges=0)
    assert entries(cache) == []


def test_sentences_that_all_fail_cleaning_are_a_user_error(tmp_path: Path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.fr").write_text("a .\nb .\n", encoding="utf-8")
    (corpus / "train.en").write_text("a b c d e f .\nb c d e f g .\n", encoding="utf-8")
    with pytest.raises(UserError, match="no training pair survives cleaning"):
        prepare_parallel_text(corpus, "fr", "en", cache_dir=tmp_path / "cache", workers=1)
    assert [p for p in (tmp_path / "cache").iterdir()] == []
