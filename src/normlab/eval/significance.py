"""Is one system's test BLEU different from another's by more than chance? Paired bootstrap
resampling (Koehn 2004) as sacreBLEU implements it (Moses' bootstrap-hypothesis-difference-
significance.pl): resample the test sentences with replacement, score both systems on each
resample, and count how often the resampled difference, centred on its mean, exceeds the real one.

The BLEU resampled is the paper's kind (`eval.bleu.tokenized_bleu`): tokenized, lowercased, BPE
removed, as the runs' `generate-test.txt` holds the references and hypotheses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

DEFAULT_SAMPLES = 1000
DEFAULT_SEED = 12345  # sacreBLEU's own default, so that its command line gives the same numbers


@dataclass(frozen=True)
class PairedResult:
    baseline_bleu: float
    system_bleu: float
    p_value: float  # of "the two systems score the same"; (count + 1) / (samples + 1)
    system_mean: float  # the system's mean BLEU over the resamples
    system_ci: float  # half-width of its 95% interval over the resamples


def read_generate(path: str | Path) -> tuple[list[str], list[str]]:
    """(references, hypotheses) in sentence order from a run's generate-test.txt (T-i / H-i lines)."""
    refs: dict[int, str] = {}
    hyps: dict[int, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        tag, _, text = line.partition("\t")
        kind, _, index = tag.partition("-")
        if kind in ("T", "H") and index.isdigit():
            (refs if kind == "T" else hyps)[int(index)] = text
        elif line.strip() and kind != "S":
            raise ValueError(f"{path}:{n}: expected an S-, T- or H-<index> line, got {line[:60]!r}")
    if sorted(refs) != sorted(hyps) or sorted(refs) != list(range(len(refs))):
        raise ValueError(
            f"{path}: references and hypotheses do not cover the same sentences 0..n-1 "
            f"({len(refs)} references, {len(hyps)} hypotheses)"
        )
    return [refs[i] for i in range(len(refs))], [hyps[i] for i in range(len(hyps))]


def tokenized_metric() -> BLEU:
    # force=True: sacreBLEU warns on already-tokenized input, which is exactly what this is.
    return BLEU(tokenize="none", smooth_method="none", force=True)


def paired_bootstrap(
    baseline: Sequence[str],
    system: Sequence[str],
    references: Sequence[str],
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> PairedResult:
    """The paired bootstrap test of `system` against `baseline` on the same test sentences."""
    if not len(baseline) == len(system) == len(references):
        raise ValueError(
            f"paired test needs the same sentences: {len(baseline)} baseline, {len(system)} "
            f"system and {len(references)} reference lines"
        )
    test = PairedTest(
        [("baseline", list(baseline)), ("system", list(system))],
        {"BLEU": tokenized_metric()},
        [list(references)],
        test_type="bs",
        n_samples=samples,
    )
    test._seed = seed  # sacreBLEU otherwise reads SACREBLEU_SEED from the environment
    _, scores = test()
    base, result = scores["BLEU"]
    # sacreBLEU counts resampled differences strictly above the real one, so two systems with the
    # same score (e.g. both 0) get the smallest p it can give; no difference is no evidence of one.
    p = 1.0 if result.score == base.score else result.p_value
    return PairedResult(base.score, result.score, p, result.mean, result.ci)
