"""Beam search and greedy decoding on a small seeded Transformer in eval mode.

The model is trained for a few dozen steps on a copy task first: an untrained model with shared
embeddings tends to repeat one token, so its beams never diverge and a search that reorders its
cache or prefixes wrongly would still pass. Half-trained, its beams differ from greedy's.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from normlab.eval.beam_search import Hypothesis, beam_search, greedy_decode
from normlab.models import build_model
from normlab.norms import norm_factory

PAD, EOS, VOCAB = 1, 2, 12
MAX_LEN = 12
SRC_LENS = [7, 3, 5, 9, 4]


def sentences(lengths: list[int], g: torch.Generator) -> torch.Tensor:
    """Random real tokens ending in EOS, right-padded."""
    out = torch.full((len(lengths), max(lengths)), PAD)
    for i, n in enumerate(lengths):
        out[i, : n - 1] = torch.randint(4, VOCAB, (n - 1,), generator=g)
        out[i, n - 1] = EOS
    return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = {"name": "transformer", "d_model": 32, "ffn_dim": 48, "heads": 2, "dropout": 0.0}
    cfg |= {"encoder_layers": 2, "decoder_layers": 2}
    model = build_model(
        cfg, norm_factory({"name": "bn"}, "sequence"), vocab_size=VOCAB, pad_idx=PAD
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(5)
    for _ in range(60):  # learn to copy the source (target = source, EOS included)
        tgt = sentences(torch.randint(2, 8, (32,), generator=g).tolist(), g)
        prev = torch.cat([torch.full((32, 1), EOS), tgt[:, :-1]], dim=1)
        prev[:, 1:][tgt[:, :-1].eq(EOS) | tgt[:, :-1].eq(PAD)] = PAD
        loss = F.cross_entropy(model(tgt, prev).transpose(1, 2), tgt, ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def src() -> torch.Tensor:
    return sentences(SRC_LENS, torch.Generator().manual_seed(1))


def search(model, src, **options) -> list[Hypothesis]:
    return beam_search(model, src, eos=EOS, pad=PAD, max_len_b=MAX_LEN, **options)


def greedy(model, src, **options) -> list[Hypothesis]:
    return greedy_decode(model, src, eos=EOS, pad=PAD, max_len_b=MAX_LEN, **options)


def assert_same(a: list[Hypothesis], b: list[Hypothesis]) -> None:
    assert [h.tokens for h in a] == [h.tokens for h in b]
    torch.testing.assert_close(
        torch.tensor([h.score for h in a]), torch.tensor([h.score for h in b]), rtol=0, atol=1e-5
    )


class WithoutCache(torch.nn.Module):
    """The same model, recomputing the whole prefix at every step instead of using the cache."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.max_positions = model, model.max_positions
        self.train(model.training)  # the search restores this mode on the wrapped model too

    def encode(self, src_tokens):
        return self.model.encode(src_tokens)

    def new_cache(self):
        return self.model.new_cache()  # reordered by the search, never read

    def decode_step(self, prefix, encoder_out, cache=None):
        return self.model.decode_step(prefix, encoder_out, None)


def test_the_toy_model_is_not_degenerate(model, src):
    beam, first = search(model, src), greedy(model, src)
    assert len({len(h.tokens) for h in beam}) > 1
    assert any(len(set(h.tokens)) > 1 for h in beam)
    assert [h.tokens for h in beam] != [h.tokens for h in first]


@pytest.mark.parametrize("lenpen", [1.0, 0.0])
def test_beam_one_is_greedy(model, src, lenpen):
    assert_same(search(model, src, beam=1, lenpen=lenpen), greedy(model, src, lenpen=lenpen))


def test_beam_finds_at_least_the_greedy_log_probability(model, src):
    for b, g in zip(
        search(model, src, beam=5, lenpen=0.0), greedy(model, src, lenpen=0.0), strict=True
    ):
        assert b.score >= g.score - 1e-6


@pytest.mark.parametrize("beam", [1, 4])
def test_cached_and_recomputed_decoding_agree(model, src, beam):
    assert_same(search(model, src, beam=beam), search(WithoutCache(model), src, beam=beam))


def test_a_batch_decodes_like_its_sentences_one_at_a_time(model, src):
    batched = search(model, src, beam=4)
    alone = [search(model, src[i : i + 1, : SRC_LENS[i]], beam=4)[0] for i in range(len(src))]
    assert_same(batched, alone)


def test_scores_are_the_models_log_probabilities_over_length(model, src):
    lenpen = 1.3
    for hyps in (search(model, src, lenpen=lenpen), greedy(model, src, lenpen=lenpen)):
        for i, h in enumerate(hyps):
            target = torch.tensor([h.tokens + [EOS]])
            prev = torch.tensor([[EOS] + h.tokens])
            with torch.no_grad():
                logits = model(src[i : i + 1], prev)
            log_prob = F.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).sum()
            assert h.log_prob == pytest.approx(float(log_prob), abs=1e-4)
            assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1) ** lenpen)


def test_length_limits_and_no_pads(model, src):
    for h in search(model, src, beam=3, max_len_a=0.5) + greedy(model, src):
        assert 1 <= len(h.tokens) <= MAX_LEN + 0.5 * max(SRC_LENS)  # min_len 1: never empty
        assert PAD not in h.tokens and EOS not in h.tokens
    short = beam_search(model, src, eos=EOS, pad=PAD, max_len_b=2)
    assert all(len(h.tokens) <= 2 for h in short)
    assert min(len(h.tokens) for h in search(model, src)) < 4  # short copies exist, yet:
    for h in search(model, src, min_len=4) + greedy(model, src, min_len=4):
        assert len(h.tokens) >= 4


def test_decoding_restores_training_mode(model, src):
    model.train()
    try:
        search(model, src[:1], beam=2)
        assert model.training
    finally:
        model.eval()
