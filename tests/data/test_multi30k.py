"""`data=multi30k`: the official gzipped files read in place, mapped to train/valid/test, through
the pipeline `data=parallel_text` uses; golden checks of its tokenization and BPE against
sacremoses and subword-nmt called directly on the real files (issue 14)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from sacremoses import MosesTokenizer

from helpers import SHARED_DATA, make_multi30k_like, snapshot, write_gz
from normlab.data.iwslt14 import prepare_parallel_text, tokenize_lines
from normlab.data.iwslt14.textio import read_lines, read_pair
from normlab.data.multi30k import TEST_SETS, load_multi30k, multi30k_files
from normlab.errors import UserError

MULTI30K = SHARED_DATA / "multi30k"


SIZES = {"train": 60, "val": 5, "test_2016_flickr": 7, "test_2017_flickr": 8, "test_2018_flickr": 9}


@pytest.mark.parametrize("test_set", TEST_SETS)
def test_file_names_map_to_splits_and_are_read_in_place(tmp_path, test_set):
    folder = make_multi30k_like(tmp_path / "m30k", SIZES)
    before = snapshot(folder)
    data = load_multi30k(
        dir=str(folder), test_set=test_set, cache_dir=str(tmp_path / "c"), merges=40
    )
    assert (len(data.train), len(data.valid), len(data.test)) == (60, 5, SIZES[test_set])
    assert (data.src_lang, data.tgt_lang) == ("de", "en")
    assert data.source == f"Multi30K de-en (task 1), test set {test_set}"
    assert snapshot(folder) == before  # nothing unpacked or written beside the official files
    first = data.dictionary.string(data.test["src"][0], bpe_symbol="@@ ")
    assert first == read_lines(folder / f"{test_set}.de.gz")[0].lower().replace(".", " .")


def test_gzipped_files_share_the_plain_corpus_cache_entry(tmp_path):
    """One pipeline serves both: Multi30K's .gz files and the same text as a data=parallel_text
    folder are the same cache entry (the key hashes the text, not the compression)."""
    folder = make_multi30k_like(tmp_path / "m30k", SIZES)
    cache = tmp_path / "cache"
    load_multi30k(dir=str(folder), cache_dir=str(cache), merges=40)
    plain = tmp_path / "plain"
    plain.mkdir()
    for split, stem in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("de", "en"):
            (plain / f"{split}.{lang}").write_bytes(
                gzip.decompress((folder / f"{stem}.{lang}.gz").read_bytes())
            )
    again = prepare_parallel_text(plain, "de", "en", cache_dir=cache, merges=40)
    assert again.cache_hit
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [
        again.cache_path.name
    ]


def test_line_count_mismatch_is_one_sentence_and_caches_nothing(tmp_path):
    folder = make_multi30k_like(tmp_path / "m30k", SIZES)
    write_gz(folder / "val.en.gz", read_lines(folder / "val.en.gz")[:4])
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as err:
        load_multi30k(dir=str(folder), cache_dir=str(cache), merges=40)
    message = str(err.value)
    assert message == (
        f"{folder}/val.de.gz has 5 lines but {folder}/val.en.gz has 4, so line 5 of "
        f"{folder}/val.de.gz has no partner; give both files one sentence per line, paired line "
        "by line."
    )
    assert not cache.exists() or not list(cache.iterdir())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"test_set": "test_2017_mscoco"},
            r"^data\.test_set='test_2017_mscoco' is not a Multi30K German-English test set; use "
            r"one of test_2016_flickr, test_2017_flickr, test_2018_flickr$",
        ),
        ({"dir": "missing"}, r"^data\.dir=.*/missing is not a folder; point data\.dir at the"),
        (
            {"remove": "test_2016_flickr.en.gz"},
            r"test_2016_flickr\.en\.gz does not exist, and data=multi30k needs it as the test "
            r"split; put Multi30K's official test_2016_flickr\.en\.gz",
        ),
        (
            {"remove": "train.de.gz"},
            r"train\.de\.gz does not exist, and data=multi30k needs it as the train split",
        ),
        (
            {"corrupt": "val.de.gz"},
            r"val\.de\.gz is not a readable gzip file \(.*\); download it again",
        ),
    ],
)
def test_bad_input_is_one_readable_sentence(tmp_path, change, message):
    folder = make_multi30k_like(tmp_path / "m30k", SIZES)
    kwargs = {"dir": str(folder), "cache_dir": str(tmp_path / "c"), "merges": 40}
    if "remove" in change:
        (folder / change["remove"]).unlink()
    elif "corrupt" in change:
        (folder / change["corrupt"]).write_bytes(b"not gzip at all\n")
    elif "dir" in change:
        kwargs["dir"] = str(tmp_path / change["dir"])
    else:
        kwargs.update(change)
    with pytest.raises(UserError, match=message) as err:
        load_multi30k(**kwargs)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ the real files


@pytest.fixture(scope="module")
def multi30k() -> Path:
    if not MULTI30K.is_dir():
        pytest.skip(
            f"{MULTI30K} not found: the Multi30K checks read the official gzipped files there "
            "(../shared/data/multi30k beside the checkout)"
        )
    return MULTI30K


def test_official_files_have_the_documented_sizes(multi30k):
    sizes = {"train": 29000, "valid": 1014}
    for test_set, n in zip(TEST_SETS, (1000, 1000, 1071), strict=True):
        files = multi30k_files(multi30k, test_set)
        for role, expected in {**sizes, "test": n}.items():
            de, en = read_pair(*files[role])
            assert len(de) == len(en) == expected, (test_set, role)


def sacremoses_lowercased(lines: list[str], lang: str) -> list[str]:
    """An independent tokenization: sacremoses' MosesTokenizer called directly with what the
    pipeline documents (tokenizer.perl's defaults: escaping on, no aggressive dash splitting),
    then lowercased."""
    tokenizer = MosesTokenizer(lang=lang)
    return [tokenizer.tokenize(line, escape=True, return_str=True).lower() for line in lines]


def clean_corpus_n_keeps(src: str, tgt: str) -> bool:
    """clean-corpus-n.perl -ratio 1.5 ... 1 175 on one tokenized pair (prepare-iwslt14.sh's)."""
    n, m = len(src.split()), len(tgt.split())
    return 1 <= n <= 175 and 1 <= m <= 175 and n <= 1.5 * m and m <= 1.5 * n


def subword_nmt(*args: str, stdin: str) -> str:
    """The `subword-nmt` command itself (learn-bpe / apply-bpe), as prepare-iwslt14.sh runs it."""
    cli = Path(sys.executable).with_name("subword-nmt")
    done = subprocess.run([str(cli), *args], input=stdin.encode(), capture_output=True, check=True)
    return done.stdout.decode("utf-8")


SLICE = {"train": ("train", 200), "valid": ("val", 100), "test": ("test_2016_flickr", 50)}


@pytest.fixture(scope="module")
def slice_prepared(multi30k, tmp_path_factory):
    """The first 200 training pairs (and 100 val, 50 test pairs) of the real files, gzipped under
    their own names, through data=multi30k with 300 merges; its text is copied to out/."""
    tmp = tmp_path_factory.mktemp("multi30k-slice")
    (tmp / "m30k").mkdir()
    raw: dict[str, dict[str, list[str]]] = {}
    for role, (stem, n) in SLICE.items():
        raw[role] = {lang: read_lines(multi30k / f"{stem}.{lang}.gz")[:n] for lang in ("de", "en")}
        for lang, lines in raw[role].items():
            write_gz(tmp / "m30k" / f"{stem}.{lang}.gz", lines)
    data = load_multi30k(
        dir=str(tmp / "m30k"), out_dir=str(tmp / "out"), cache_dir=str(tmp / "cache"), merges=300
    )
    return raw, data, tmp / "out"


def test_tokenization_equals_sacremoses_called_directly(slice_prepared):
    raw, data, out = slice_prepared
    direct = {
        role: {lang: sacremoses_lowercased(lines, lang) for lang, lines in sides.items()}
        for role, sides in raw.items()
    }
    # valid and test are only tokenized and lowercased: every line, in order
    for role in ("valid", "test"):
        for lang in ("de", "en"):
            assert read_lines(out / "tmp" / f"{role}.{lang}") == direct[role][lang], (role, lang)
    # train is cleaned first (clean-corpus-n, as prepare-iwslt14.sh): the kept pairs, in order
    pairs = zip(direct["train"]["de"], direct["train"]["en"], strict=True)
    kept = [i for i, pair in enumerate(pairs) if clean_corpus_n_keeps(*pair)]
    assert len(kept) == 195  # 5 of the first 200 captions differ in length by more than 1.5x
    for lang in ("de", "en"):
        assert read_lines(out / "tmp" / f"train.{lang}") == [direct["train"][lang][i] for i in kept]
    assert len(data.train) == 195 and len(data.valid) == 100 and len(data.test) == 50


def test_bpe_equals_subword_nmt_called_directly(slice_prepared):
    """subword-nmt learn-bpe on `cat train.de train.en` (the tokenized, cleaned, lowercased
    slice), apply-bpe on every split: the same codes and the same segmented text."""
    _, data, out = slice_prepared
    tokenized = out / "tmp"
    train = "".join(
        (tokenized / f"train.{lang}").read_text(encoding="utf-8") for lang in ("de", "en")
    )
    codes = subword_nmt("learn-bpe", "-s", "300", stdin=train)
    assert (out / "code").read_text(encoding="utf-8") == codes
    (out.parent / "direct-codes").write_text(codes, encoding="utf-8")
    for role in ("train", "valid", "test"):
        for lang in ("de", "en"):
            text = (out / "tmp" / f"{role}.{lang}").read_text(encoding="utf-8")
            segmented = subword_nmt("apply-bpe", "-c", str(out.parent / "direct-codes"), stdin=text)
            assert (out / f"{role}.{lang}").read_text(encoding="utf-8") == segmented, (role, lang)
    # ... and the ids the run trains on are those pieces in the dictionary
    first = read_lines(out / "train.en")[0]
    assert data.dictionary.string(data.train["tgt"][0], bpe_symbol=None) == first


@pytest.mark.slow
def test_whole_training_text_tokenizes_as_sacremoses_but_for_the_final_period(multi30k):
    """All 29,000 training lines: the pipeline equals sacremoses except where tokenizer.perl's
    unconditional split of a line-final period applies ("linie a." -> "linie a ."), which the
    pipeline adds on purpose (normlab/data/iwslt14/tokenize.py)."""
    for lang, n_final in (("de", 14), ("en", 3)):
        lines = read_lines(multi30k / f"train.{lang}.gz")
        ours = tokenize_lines(lines, lang, lower=True)
        theirs = sacremoses_lowercased(lines, lang)
        differ = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
        assert len(differ) == n_final, lang
        for a, b in differ:
            assert b.endswith(".") and not b.endswith(" .") and a == b[:-1] + " .", (a, b)
