"""IWSLT14 de-en prepared exactly as fairseq's prepare-iwslt14.sh, with a cached dictionary + ids.

    prepared = prepare_iwslt14(archive=Path("de-en.tgz"), out_dir=..., cache_dir=...)
    prepared = load_prepared(Path("iwslt14.tokenized.de-en"), cache_dir=...)  # fairseq output
    prepared = prepare_parallel_text(Path("my-corpus"), "fr", "en", ...)      # your own text
    prepared = prepare_parallel_files({"train": (de_gz, en_gz), ...}, "de", "en")  # any file names
    prepared.splits["train"][0] -> {"src": [ids..., eos], "tgt": [ids..., eos]}

Modules, one step each: archive (read/download de-en.tgz), tokenize (Moses), clean
(clean-corpus-n), bpe (subword-nmt), dictionary (fairseq-style), cache (content-keyed, atomic),
prepare (the script's pipeline), prepared_data (PreparedData, load_prepared), parallel_text.

Names are imported lazily (PEP 562): tokenization worker processes import
`normlab.data.iwslt14.tokenize`, and should not pay for `datasets` on start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "IWSLT14_URL": "archive",
    "TEST_SETS": "archive",
    "apply_codes": "bpe",
    "learn_codes": "bpe",
    "PIPELINE_VERSION": "cache",
    "default_iwslt14_cache": "cache",
    "Dictionary": "dictionary",
    "prepare_parallel_files": "parallel_text",
    "prepare_parallel_text": "parallel_text",
    "build_fairseq_text": "prepare",
    "prepare_iwslt14": "prepare",
    "PreparedData": "prepared_data",
    "load_prepared": "prepared_data",
    "split_holdout": "prepared_data",
    "PerlMosesTokenizer": "tokenize",
    "lowercase": "tokenize",
    "tokenize_lines": "tokenize",
}
__all__ = [
    "Dictionary",
    "IWSLT14_URL",
    "PIPELINE_VERSION",
    "PerlMosesTokenizer",
    "PreparedData",
    "TEST_SETS",
    "apply_codes",
    "build_fairseq_text",
    "default_iwslt14_cache",
    "learn_codes",
    "load_prepared",
    "lowercase",
    "prepare_iwslt14",
    "prepare_parallel_files",
    "prepare_parallel_text",
    "split_holdout",
    "tokenize_lines",
]

if TYPE_CHECKING:
    from normlab.data.iwslt14.archive import IWSLT14_URL, TEST_SETS
    from normlab.data.iwslt14.bpe import apply_codes, learn_codes
    from normlab.data.iwslt14.cache import PIPELINE_VERSION, default_iwslt14_cache
    from normlab.data.iwslt14.dictionary import Dictionary
    from normlab.data.iwslt14.parallel_text import prepare_parallel_files, prepare_parallel_text
    from normlab.data.iwslt14.prepare import build_fairseq_text, prepare_iwslt14
    from normlab.data.iwslt14.prepared_data import PreparedData, load_prepared, split_holdout
    from normlab.data.iwslt14.tokenize import PerlMosesTokenizer, lowercase, tokenize_lines


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
