"""prepare-iwslt14.sh end to end on a synthetic de-en.tgz, and the golden BPE / load checks."""

from __future__ import annotations

import importlib.util
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

import normlab.data.iwslt14.prepare as prepare_module
from normlab.bpe_text import remove_bpe
from normlab.data.iwslt14 import (
    TEST_SETS,
    Dictionary,
    PreparedData,
    apply_codes,
    build_fairseq_text,
    load_prepared,
    prepare_iwslt14,
    split_holdout,
)
from normlab.data.iwslt14.archive import extract_segments
from normlab.data.iwslt14.textio import RawPair, read_lines
from normlab.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
MERGES = 40

# -- a synthetic de-en.tgz with the real archive's structure ---------------------------------------

DE_WORDS = [
    "das",
    "haus",
    "ist",
    "klein",
    "und",
    "der",
    "garten",
    "groß",
    "wir",
    "sehen",
    "einen",
    "baum",
    "im",
    "sommer",
]
EN_WORDS = [
    "the",
    "house",
    "is",
    "small",
    "and",
    "the",
    "garden",
    "big",
    "we",
    "see",
    "a",
    "tree",
    "in",
    "summer",
]


def content_pair(i: int) -> tuple[str, str]:
    """Lines that tokenize to themselves (lowercase words, final " ."), so expectations are plain."""
    n = 4 + i % 7
    de = " ".join(DE_WORDS[(i + k) % len(DE_WORDS)] for k in range(n))
    en = " ".join(EN_WORDS[(i * 3 + k) % len(EN_WORDS)] for k in range(n))
    return f"{de} .", f"{en} ."


# Pairs clean-corpus-n must drop, by (talk, position): length, ratio, empty side.
BAD_PAIRS = {
    (1, 5): (" ".join(["wort"] * 180), " ".join(["word"] * 180)),
    (1, 12): ("ja .", "yes yes yes yes yes ."),
    (1, 20): ("", "only english here ."),
}


def train_tags(lang: str) -> tuple[str, list[tuple[str, str]]]:
    """(file text, expected kept (de, en) pairs after extraction, tokenization and cleaning)."""
    lines, kept = [], []
    for talk in range(2):
        title = ("Jemand: Ein Titel", "Somebody: A title")
        desc = ("TED Talk: eine Beschreibung", "TED Talk: a description")
        meta = [
            f"<url>http://www.ted.com/talks/talk{talk}.html</url>",
            "<keywords>talks, science, summer</keywords>",
            f"<talkid>{talk + 1}</talkid>",
            f"<title>{title[lang == 'en']}</title>",
            f"<description>{desc[lang == 'en']}</description>",
        ]
        lines += meta
        kept += [("jemand : ein titel", "somebody : a title")]
        kept += [("ted talk : eine beschreibung", "ted talk : a description")]
        for pos in range(30):
            pair = BAD_PAIRS.get((talk, pos)) or content_pair(talk * 30 + pos)
            lines.append(pair[lang == "en"])
            if (talk, pos) not in BAD_PAIRS:
                kept.append(pair)
    return "".join(f"{line}\n" for line in lines), kept


def xml_file(name: str, lang: str) -> tuple[str, list[str]]:
    """(XML text, expected tokenized lowercased segments)."""
    short = name.split(".")[-1]
    if lang == "de":
        segs = [f"Das ist {short} und es geht’s gut.", "Wir leben in den U.S.A."]
        expected = [f"das ist {short} und es geht &apos; s gut .", "wir leben in den u.s.a ."]
    else:
        segs = [f"This is {short} and it’s fine.", "We live in the U.S.A."]
        expected = [f"this is {short} and it &apos;s fine .", "we live in the u.s.a ."]
    body = "\n".join(f'<seg id="{i}"> {s} </seg>' for i, s in enumerate(segs, start=1))
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n'
        f'<srcset setid="iwslt2014-{short}" srclang="german">\n<doc docid="1" genre="lectures">\n'
        "<url>http://www.ted.com/talks/x.html</url>\n<description>Ein Vortrag</description>\n"
        "<keywords>talks</keywords>\n<talkid>1</talkid>\n<title>Titel</title>\n"
        f"{body}\n</doc>\n</srcset>\n</mteval>\n"
    )
    return text, expected


def expected_test(lang: str) -> list[str]:
    return [line for name in TEST_SETS for line in xml_file(name, lang)[1]]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only folder holding a read-only synthetic de-en.tgz."""
    folder = tmp_path_factory.mktemp("input")
    path = folder / "de-en.tgz"
    files = {f"de-en/train.tags.de-en.{lang}": train_tags(lang)[0] for lang in ("de", "en")}
    for name in TEST_SETS:
        for lang in ("de", "en"):
            files[f"de-en/{name}.de-en.{lang}.xml"] = xml_file(name, lang)[0]
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    yield path
    folder.chmod(stat.S_IRWXU)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture(scope="module")
def first_run(archive: Path, tmp_path_factory: pytest.TempPathFactory):
    before = snapshot(archive.parent)
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("out")
    prepared = prepare_iwslt14(
        archive=archive, out_dir=out, cache_dir=cache, merges=MERGES, workers=1
    )
    assert snapshot(archive.parent) == before, "preparation wrote into the input folder"
    return prepared, out, cache


# -- end to end ---------------------------------------------------------------------------------


def test_train_valid_split_after_metadata_removal_and_cleaning(first_run):
    _, out, _ = first_run
    kept = train_tags("de")[1]
    assert len(kept) == 61  # 2 talks x (title + description + 30 lines) - 3 dropped pairs
    valid = [pair for i, pair in enumerate(kept, start=1) if i % 23 == 0]
    train = [pair for i, pair in enumerate(kept, start=1) if i % 23 != 0]
    for lang, side in (("de", 0), ("en", 1)):
        assert read_lines(out / "tmp" / f"valid.{lang}") == [p[side] for p in valid]
        assert read_lines(out / "tmp" / f"train.{lang}") == [p[side] for p in train]
    train_text = (out / "tmp" / "train.de").read_text() + (out / "tmp" / "train.en").read_text()
    for gone in ("http", "talkid", "keywords", "&lt;", "wort", "only english", "yes yes"):
        assert gone not in train_text


def test_test_set_order_apostrophes_and_final_period(first_run):
    _, out, _ = first_run
    for lang in ("de", "en"):
        assert read_lines(out / "tmp" / f"test.{lang}") == expected_test(lang)
    assert "’" not in (out / "tmp" / "test.de").read_text()


def test_bpe_files_undo_to_the_tokenized_text(first_run):
    _, out, _ = first_run
    codes = read_lines(out / "code")
    assert codes[0] == "#version: 0.2"
    assert 1 <= len(codes) - 1 <= MERGES
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            bped = read_lines(out / f"{split}.{lang}")
            assert [remove_bpe(line) for line in bped] == read_lines(
                out / "tmp" / f"{split}.{lang}"
            )
    assert any("@@ " in line for line in read_lines(out / "train.de"))


def test_dictionary_and_ids(first_run):
    prepared, out, _ = first_run
    d = prepared.dictionary
    assert [d[i] for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert (d.bos(), d.pad(), d.eos(), d.unk()) == (0, 1, 2, 3)
    assert len(d) % 8 == 0
    assert prepared.dict_source == ("train.de", "train.en")
    assert prepared.source_description.startswith("IWSLT14 de-en (fairseq prepare-iwslt14.sh)")
    assert {k: len(v) for k, v in prepared.splits.items()} == {"train": 59, "valid": 2, "test": 10}
    for split, ds in prepared.splits.items():
        assert ds.column_names == ["src", "tgt"]
        for lang, column in (("de", "src"), ("en", "tgt")):
            bped = read_lines(out / f"{split}.{lang}")
            tmp = read_lines(out / "tmp" / f"{split}.{lang}")
            for ids, b, t in zip(ds[column], bped, tmp, strict=True):
                assert ids[-1] == d.eos()
                # test may hold pieces unseen in train: those become <unk>
                known = " ".join(tok if tok in d else "<unk>" for tok in b.split())
                assert d.string(ids, bpe_symbol=None) == known
                if split != "test":
                    assert d.string(ids) == t
    assert d.unk() in [i for ids in prepared.splits["test"]["src"] for i in ids]
    # Frequency order: every counted token before the padding fillers, counts non-increasing.
    counts = d.counts[d.nspecial :]
    real = [c for s, c in zip(d.symbols[d.nspecial :], counts, strict=True) if c > 0]
    assert real == sorted(real, reverse=True)


def test_second_run_hits_the_cache_without_rebuilding(first_run, archive, monkeypatch):
    prepared, out, cache = first_run
    assert not prepared.cache_hit

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached entry was rebuilt")

    monkeypatch.setattr(prepare_module, "read_archive", no_rebuild)
    monkeypatch.setattr(prepare_module, "build_fairseq_text", no_rebuild)
    again = prepare_iwslt14(archive=archive, out_dir=out, cache_dir=cache, merges=MERGES)
    assert again.cache_hit
    assert again.cache_path == prepared.cache_path
    assert again.dictionary == prepared.dictionary
    assert again.splits["train"]["src"] == prepared.splits["train"]["src"]
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [
        prepared.cache_path.name
    ]
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_download_uses_the_url_and_lands_in_the_cache(first_run, archive, tmp_path):
    prepared, _, _ = first_run
    cache = tmp_path / "cache"
    fetched = prepare_iwslt14(download=True, url=archive.as_uri(), cache_dir=cache, merges=MERGES)
    assert (cache / "downloads" / "de-en.tgz").read_bytes() == archive.read_bytes()
    assert fetched.dictionary == prepared.dictionary  # same content, same result
    with pytest.raises(UserError, match="could not download"):
        prepare_iwslt14(
            download=True, url=(tmp_path / "missing.tgz").as_uri(), cache_dir=tmp_path / "c2"
        )


def test_given_bpe_codes_are_used_instead_of_learning(first_run, archive, tmp_path):
    _, out, _ = first_run
    again = prepare_iwslt14(
        archive=archive,
        out_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        bpe_codes=out / "code",
    )
    assert not again.cache_hit
    assert (tmp_path / "out" / "code").read_bytes() == (out / "code").read_bytes()
    assert "given BPE codes" in again.source_description


def test_bad_archives_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare_iwslt14(archive=tmp_path / "nope.tgz", cache_dir=tmp_path / "cache")
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(UserError, match="not a readable .tgz"):
        prepare_iwslt14(archive=junk, cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="--archive"):
        prepare_iwslt14(cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").glob("*") if p.name != "downloads"]


# -- the command-line script ---------------------------------------------------------------------


def load_cli():
    spec = importlib.util.spec_from_file_location(
        "prepare_cli", REPO_ROOT / "scripts" / "prepare_iwslt14.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_cli_prepares_and_reports_errors_in_one_sentence(first_run, archive, tmp_path, capsys):
    _, _, cache = first_run
    cli = load_cli()
    code = cli.main(
        [
            "--archive",
            str(archive),
            "--out",
            str(tmp_path / "out"),
            "--cache-dir",
            str(cache),
            "--merges",
            str(MERGES),
            "--workers",
            "1",
        ]
    )
    assert code == 0
    assert (tmp_path / "out" / "test.en").is_file()
    assert "from cache" in capsys.readouterr().out
    assert cli.main(["--archive", str(tmp_path / "nope.tgz"), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


# -- golden: fairseq's BPE'd valid/test, and loading a fairseq-layout folder ----------------------


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("lang", ["de", "en"])
def test_fairseq_codes_reproduce_fairseq_bpe_files(iwslt14_reference: Path, split: str, lang: str):
    codes = (iwslt14_reference / "code").read_text(encoding="utf-8")
    tokenized = read_lines(iwslt14_reference / "tmp" / f"{split}.{lang}")
    bped = apply_codes(tokenized, codes, workers=1)
    expected = (iwslt14_reference / f"{split}.{lang}").read_bytes()
    assert "".join(f"{line}\n" for line in bped).encode("utf-8") == expected


@pytest.fixture(scope="module")
def reference_prepared(iwslt14_reference: Path, tmp_path_factory) -> PreparedData:
    before = snapshot(iwslt14_reference)
    prepared = load_prepared(iwslt14_reference, cache_dir=tmp_path_factory.mktemp("ref-cache"))
    assert snapshot(iwslt14_reference) == before
    return prepared


def test_load_prepared_on_fairseq_valid_and_test_only(reference_prepared, iwslt14_reference):
    p = reference_prepared
    assert {k: len(v) for k, v in p.splits.items()} == {"valid": 7283, "test": 6750}
    assert p.dict_source == ("valid.de", "valid.en")  # the training-role split, never test
    assert "valid.de, valid.en" in p.source_description
    assert (p.src_lang, p.tgt_lang, p.text_dir) == ("de", "en", iwslt14_reference)
    d = p.dictionary
    valid_de = read_lines(iwslt14_reference / "valid.de")
    tmp_de = read_lines(iwslt14_reference / "tmp" / "valid.de")
    for ids, bped, tmp in zip(
        p.splits["valid"]["src"][:500], valid_de[:500], tmp_de[:500], strict=True
    ):
        assert d.string(ids, bpe_symbol=None) == bped
        assert d.string(ids) == tmp
    again = load_prepared(iwslt14_reference, cache_dir=p.cache_path.parent)
    assert again.cache_hit and again.dictionary == d
    with pytest.raises(UserError, match="train"):
        load_prepared(iwslt14_reference, cache_dir=p.cache_path.parent, dict_splits=["train"])


def test_cli_accepts_a_prepared_folder(reference_prepared, iwslt14_reference, capsys):
    cache = reference_prepared.cache_path.parent
    assert load_cli().main(["--prepared", str(iwslt14_reference), "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "valid 7,283, test 6,750" in out and "from cache" in out


def test_split_holdout_is_deterministic(reference_prepared):
    valid = reference_prepared.splits["valid"]
    rest, held = split_holdout(valid, 500, seed=1)
    rest2, held2 = split_holdout(valid, 500, seed=1)
    _, held3 = split_holdout(valid, 500, seed=2)
    assert (len(rest), len(held)) == (6783, 500)
    assert held["src"] == held2["src"] and rest["tgt"] == rest2["tgt"]
    assert held["src"] != held3["src"]
    with pytest.raises(UserError, match="n_holdout"):
        split_holdout(valid, len(valid), seed=0)


def test_dictionary_round_trips_through_dict_txt(reference_prepared, tmp_path):
    reference_prepared.dictionary.save(tmp_path / "dict.txt")
    assert Dictionary.load(tmp_path / "dict.txt") == reference_prepared.dictionary
    assert os.path.getsize(tmp_path / "dict.txt") > 0


def test_public_api_names_all_resolve():
    import normlab.data.iwslt14 as api

    assert sorted(api.__all__) == sorted(api._EXPORTS)
    for name in api.__all__:
        assert getattr(api, name) is not None


@pytest.mark.slow
def test_parallel_pipeline_equals_serial_byte_for_byte(shared_data: Path, tmp_path: Path):
    """13.5k real sentence pairs through the whole text pipeline with 1 and with 2 workers."""
    orig = shared_data / "iwslt14" / "orig" / "de-en"
    segs = {
        lang: [
            s
            for name in TEST_SETS
            for s in extract_segments(read_lines(orig / f"{name}.de-en.{lang}.xml"))
        ]
        for lang in ("de", "en")
    }
    raw = RawPair(segs["de"] * 2, segs["en"] * 2)
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        build_fairseq_text(
            out, src="de", tgt="en", train=raw, test=None, merges=500, workers=workers
        )
        outputs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == 9  # tmp/{train,valid}.{de,en}, {train,valid}.{de,en}, code
