"""Batched beam search and greedy decoding with a model's key/value cache, as fairseq-generate.

Rules (fairseq's SequenceGenerator with its defaults, beam 5, lenpen 1):
- The decoder input starts with EOS; pad is never generated; EOS is banned before step `min_len`
  (default 1: no empty translation); at step max_len = max_len_a·src_len + max_len_b (capped at
  the model's max_positions − 1) only EOS is allowed, so every hypothesis ends.
- Each step takes the 2·beam best (beam, token) extensions of a sentence by cumulative log-prob;
  those among the first `beam` that end in EOS are finished, scored
  sum of log-probs (EOS included) / length**lenpen with length = tokens including EOS; the best
  `beam` non-EOS extensions go on. A sentence stops when it has `beam` finished hypotheses, and its
  rows leave the batch. The result is the best-scoring finished hypothesis per sentence.
- At step 0 all beams hold the same prefix, so only the first beam's extensions are considered.
One deliberate difference: src_len is each sentence's own length (non-pad tokens, EOS included),
not the padded batch width, so a sentence decodes the same alone or in any batch (no difference
with fairseq-generate's default max_len_a = 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F


class Reorderable(Protocol):
    def reorder(self, order: torch.Tensor) -> Reorderable:
        """The state of the batch rows `order` (repeated, dropped or permuted)."""
        ...


class IncrementalSeq2Seq(Protocol):
    """What decoding needs from a model (models/transformer.py's Transformer provides it)."""

    training: bool
    max_positions: int

    def encode(self, src_tokens: torch.Tensor) -> Reorderable: ...
    def new_cache(self) -> Reorderable: ...
    def decode_step(
        self, prefix: torch.Tensor, encoder_out: Any, cache: Any = None
    ) -> torch.Tensor: ...
    def train(self, mode: bool = True) -> Any: ...


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # the output, without the leading and the final EOS
    score: float  # log_prob / (len(tokens) + 1) ** lenpen
    log_prob: float  # sum of the log-probs of the tokens and the final EOS


class _Stepper:
    """Next-token log-probs under fairseq's constraints, shared by beam search and greedy."""

    def __init__(
        self, model: IncrementalSeq2Seq, src_tokens: torch.Tensor, eos: int, pad: int, min_len: int
    ):
        self.model, self.eos, self.pad, self.min_len = model, eos, pad, min_len
        self.encoder_out = model.encode(src_tokens)
        self.cache = model.new_cache()

    def max_lens(self, src_tokens: torch.Tensor, a: float, b: int) -> torch.Tensor:
        src_lens = src_tokens.ne(self.pad).sum(dim=1)
        limit = getattr(self.model, "max_positions", 1 << 30) - 1
        return (a * src_lens + b).long().clamp(max=limit)  # .long() truncates, like int()

    def reorder(self, rows: torch.Tensor) -> None:
        self.encoder_out = self.encoder_out.reorder(rows)
        self.cache = self.cache.reorder(rows)

    def log_probs(self, prefix: torch.Tensor, step: int, at_max: torch.Tensor) -> torch.Tensor:
        """(rows, V) log-probs of the token after `prefix`; `at_max` rows may only end."""
        logits = self.model.decode_step(prefix, self.encoder_out, self.cache)
        lp = F.log_softmax(logits.float(), dim=-1)
        lp[:, self.pad] = -torch.inf
        if step < self.min_len:
            lp[:, self.eos] = -torch.inf
        if at_max.any():
            eos_lp = lp[:, self.eos].clone()
            lp[at_max] = -torch.inf
            lp[at_max, self.eos] = eos_lp[at_max]
        return lp


def _with_eval(model: IncrementalSeq2Seq, fn: Callable[[], list[Hypothesis]]) -> list[Hypothesis]:
    was_training = model.training
    model.train(False)  # dropout off, BN on its running statistics
    try:
        with torch.no_grad():
            return fn()
    finally:
        model.train(was_training)


def beam_search(
    model: IncrementalSeq2Seq,
    src_tokens: torch.Tensor,
    *,
    eos: int,
    pad: int,
    beam: int = 5,
    lenpen: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    min_len: int = 1,
) -> list[Hypothesis]:
    """The best hypothesis for each row of `src_tokens` (B, S), in order."""
    return _with_eval(
        model,
        lambda: _beam_search(
            model, src_tokens, eos, pad, beam, lenpen, max_len_a, max_len_b, min_len
        ),
    )


def _beam_search(
    model: IncrementalSeq2Seq,
    src_tokens: torch.Tensor,
    eos: int,
    pad: int,
    beam: int,
    lenpen: float,
    max_len_a: float,
    max_len_b: int,
    min_len: int,
) -> list[Hypothesis]:
    n_sent, device = src_tokens.shape[0], src_tokens.device
    stepper = _Stepper(model, src_tokens, eos, pad, min_len)
    max_lens = stepper.max_lens(src_tokens, max_len_a, max_len_b)
    stepper.reorder(torch.arange(n_sent, device=device).repeat_interleave(beam))
    # Active state: sentence ids, and per (sentence, beam) row its prefix and cumulative log-prob.
    sent = torch.arange(n_sent, device=device)
    prefix = torch.full((n_sent * beam, 1), eos, dtype=torch.long, device=device)
    cum = torch.zeros(n_sent, beam, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(n_sent)]

    for step in range(int(max_lens.max()) + 1):
        n = len(sent)
        at_max = (max_lens[sent] <= step).repeat_interleave(beam)
        lp = stepper.log_probs(prefix, step, at_max)
        vocab = lp.shape[1]
        cand = (cum.view(-1, 1) + lp).view(n, beam, vocab)
        if step == 0:
            cand = cand[:, :1]  # every beam holds the same prefix: avoid duplicates
        k = min(2 * beam, cand.shape[1] * vocab)
        top, flat = cand.reshape(n, -1).topk(k, dim=1)
        src_beam, tok = flat // vocab, flat % vocab

        # Finish the EOS extensions among each sentence's `beam` best candidates.
        for i, j in (tok[:, :beam] == eos).nonzero().tolist():
            hyps = finished[int(sent[i])]
            if len(hyps) < beam:
                row = prefix[i * beam + int(src_beam[i, j])]
                log_prob = float(top[i, j])
                hyps.append(Hypothesis(row[1:].tolist(), log_prob / (step + 1) ** lenpen, log_prob))
        done = torch.tensor([len(finished[int(s)]) >= beam for s in sent], device=device)
        done |= max_lens[sent] <= step
        if done.all():
            break

        # Continue with the `beam` best non-EOS candidates of each unfinished sentence.
        first_non_eos = torch.sort((tok == eos).int(), dim=1, stable=True).indices[:, :beam]
        keep = (~done).nonzero().squeeze(1)
        pick = first_non_eos[keep]
        rows = (keep.unsqueeze(1) * beam + src_beam[keep].gather(1, pick)).view(-1)
        prefix = torch.cat([prefix[rows], tok[keep].gather(1, pick).view(-1, 1)], dim=1)
        cum = top[keep].gather(1, pick)
        sent = sent[keep]
        stepper.reorder(rows)

    return [max(hyps, key=lambda h: h.score) for hyps in finished]


def greedy_decode(
    model: IncrementalSeq2Seq,
    src_tokens: torch.Tensor,
    *,
    eos: int,
    pad: int,
    lenpen: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    min_len: int = 1,
) -> list[Hypothesis]:
    """The argmax token at every step, under the same constraints and scoring as beam search."""
    return _with_eval(
        model, lambda: _greedy(model, src_tokens, eos, pad, lenpen, max_len_a, max_len_b, min_len)
    )


def _greedy(
    model: IncrementalSeq2Seq,
    src_tokens: torch.Tensor,
    eos: int,
    pad: int,
    lenpen: float,
    max_len_a: float,
    max_len_b: int,
    min_len: int,
) -> list[Hypothesis]:
    n_sent, device = src_tokens.shape[0], src_tokens.device
    stepper = _Stepper(model, src_tokens, eos, pad, min_len)
    max_lens = stepper.max_lens(src_tokens, max_len_a, max_len_b)
    prefix = torch.full((n_sent, 1), eos, dtype=torch.long, device=device)
    cum = torch.zeros(n_sent, device=device)
    ended = torch.zeros(n_sent, dtype=torch.bool, device=device)
    length = torch.zeros(n_sent, dtype=torch.long, device=device)
    # Finished rows keep decoding (simpler than dropping them); their extra tokens are cut off.
    for step in range(int(max_lens.max()) + 1):
        lp = stepper.log_probs(prefix, step, max_lens <= step)
        best, tok = lp.max(dim=1)
        cum = torch.where(ended, cum, cum + best)
        length = torch.where(ended, length, length + 1)
        ended |= tok == eos
        prefix = torch.cat([prefix, tok.unsqueeze(1)], dim=1)
        if ended.all():
            break
    return [
        Hypothesis(
            prefix[i, 1 : int(length[i])].tolist(),
            float(cum[i]) / int(length[i]) ** lenpen,
            float(cum[i]),
        )
        for i in range(n_sent)
    ]
