"""Token-budget batching: every pair once per epoch, never over budget, deterministic per (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.data.token_batches import epoch_batches
from normlab.errors import UserError


@pytest.fixture
def lengths():
    rng = np.random.default_rng(0)
    return rng.integers(1, 120, 3000), rng.integers(1, 120, 3000)


def test_every_pair_exactly_once_and_no_batch_over_budget(lengths):
    src, tgt = lengths
    for epoch in range(3):
        batches = epoch_batches(src, tgt, max_tokens=1024, seed=7, epoch=epoch)
        seen = np.concatenate(batches)
        assert sorted(seen.tolist()) == list(range(3000))
        for b in batches:
            padded = len(b) * max(src[b].max(), tgt[b].max())
            assert padded <= 1024


def test_same_seed_and_epoch_same_batches_other_epoch_differs(lengths):
    src, tgt = lengths
    a = epoch_batches(src, tgt, 1024, seed=1, epoch=0)
    b = epoch_batches(src, tgt, 1024, seed=1, epoch=0)
    c = epoch_batches(src, tgt, 1024, seed=1, epoch=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert [x.tolist() for x in a] != [x.tolist() for x in c]


def test_batches_group_similar_lengths(lengths):
    src, tgt = lengths
    batches = epoch_batches(src, tgt, 2048, seed=0, epoch=0)
    spread = np.mean([src[b].max() - src[b].min() for b in batches if len(b) > 1])
    assert spread < 5  # sorted by length, so padding is small


def test_pair_longer_than_the_budget_is_one_sentence():
    with pytest.raises(UserError, match="has 300 tokens, more than max_tokens=256"):
        epoch_batches(np.array([5, 300]), np.array([5, 10]), 256, seed=0, epoch=0)


def test_packing_is_greedy():
    ten = np.full(3000, 10)
    batches = epoch_batches(ten, ten, 1024, seed=0, epoch=0)
    assert sorted(len(b) for b in batches) == [42] + [102] * 29  # 102 pairs fill 1020 tokens


def test_max_sentences_caps_the_batch():
    src = np.full(100, 2)
    batches = epoch_batches(src, src, 4096, seed=0, epoch=0, max_sentences=16)
    assert max(len(b) for b in batches) == 16
    assert sum(len(b) for b in batches) == 100
