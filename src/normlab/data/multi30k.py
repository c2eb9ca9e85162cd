"""Multi30K German->English (task 1 of the WMT16-18 multimodal translation tasks), text only.

The official gzipped files (github.com/multi30k/dataset, data/task1/raw) are read in place from
`dir`, never copied: `train.{de,en}.gz` (29,000 pairs) trains, `val.{de,en}.gz` (1,014) validates,
and `test_set` picks the test set (`test_2016_flickr`, 1,000 pairs, the usual one;
`test_2017_flickr`, 1,000; `test_2018_flickr`, 1,071). This module only maps those names to the
train/valid/test roles: the text goes through the same code as `data=parallel_text`
(`prepare_parallel_files`: Moses tokenization, clean-corpus-n on the training pairs, lowercasing,
joint BPE learned on the training text, dictionary and ids cached by content under `cache_dir`).
"""

from __future__ import annotations

import os
from pathlib import Path

from normlab.data import DATASETS
from normlab.data.translation import TranslationData, _cache, assemble
from normlab.errors import UserError

SRC, TGT = "de", "en"
TEST_SETS = ("test_2016_flickr", "test_2017_flickr", "test_2018_flickr")
# Role in the run -> the official file stem ({stem}.de.gz, {stem}.en.gz); test comes from test_set.
STEMS = {"train": "train", "valid": "val"}
# 8,000 joint merges: see configs/data/multi30k.yaml for why.
DEFAULT_MERGES = 8000


def multi30k_files(folder: Path, test_set: str) -> dict[str, tuple[Path, Path]]:
    """The (German, English) files of each role, checked to exist, before anything is read."""
    if test_set not in TEST_SETS:
        raise UserError(
            f"data.test_set={test_set!r} is not a Multi30K German-English test set; use one of "
            f"{', '.join(TEST_SETS)}"
        )
    if not folder.is_dir():
        raise UserError(
            f"data.dir={folder} is not a folder; point data.dir at the folder holding Multi30K's "
            "gzipped train, val and test_*_flickr .de.gz/.en.gz files (data/task1/raw of "
            "github.com/multi30k/dataset)"
        )
    files = {
        role: (folder / f"{stem}.{SRC}.gz", folder / f"{stem}.{TGT}.gz")
        for role, stem in (*STEMS.items(), ("test", test_set))
    }
    for role, pair in files.items():
        for path in pair:
            if not path.is_file():
                raise UserError(
                    f"{path} does not exist, and data=multi30k needs it as the {role} split; "
                    f"put Multi30K's official {path.name} (data/task1/raw of "
                    "github.com/multi30k/dataset) in data.dir, unchanged"
                )
    return files


@DATASETS.register("multi30k")
def load_multi30k(
    dir: str = "../shared/data/multi30k",
    test_set: str = "test_2016_flickr",
    out_dir: str | None = None,
    cache_dir: str | None = None,
    bpe_codes: str | None = None,
    merges: int = DEFAULT_MERGES,
    holdout: int = 0,
    holdout_seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    max_positions: int = 1024,
    workers: int = 1,
) -> TranslationData:
    """Multi30K de-en as the translation task uses it (see the module docstring)."""
    from normlab.data.iwslt14 import prepare_parallel_files

    folder = Path(os.path.expanduser(str(dir)))
    files = multi30k_files(folder, str(test_set))
    prepared = prepare_parallel_files(
        files,
        SRC,
        TGT,
        out_dir=out_dir,
        cache_dir=_cache(cache_dir),
        bpe_codes=bpe_codes,
        merges=merges,
        workers=workers,
    )
    # Row i of valid/test is line i+1 of its German file; training pairs are counted after
    # clean-corpus-n, which drops some, so they are named by their cleaned position.
    line_files = {
        "train": "cleaned training pair {n}",
        "valid": str(files["valid"][0]),
        "test": str(files["test"][0]),
    }
    return assemble(
        prepared,
        "train",
        "valid",
        "test",
        holdout,
        holdout_seed,
        train_limit,
        test_limit,
        max_positions,
        f"Multi30K de-en (task 1), test set {test_set}",
        line_files,
    )
