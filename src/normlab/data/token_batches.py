"""Batches of sentence pairs by a token budget, as fairseq builds them.

Pairs are sorted by length (a fresh random order breaks ties each epoch), packed greedily so that
`n_sentences * longest_side <= max_tokens` (the padded size of the bigger of the source and target
tensors), and the batches are then shuffled. Every pair appears exactly once per epoch; the order of
epoch e depends only on (seed, e), so a resumed run replays it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from normlab.errors import UserError


def pack_by_tokens(
    order: np.ndarray, lengths: np.ndarray, max_tokens: int, max_sentences: int | None = None
) -> list[np.ndarray]:
    """Cut `order` (indices sorted by length) into consecutive batches within the budget."""
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for pos, idx in enumerate(order):
        n = lengths[idx]
        if n > max_tokens:
            raise UserError(
                f"sentence pair {idx} has {n} tokens, more than max_tokens={max_tokens}; "
                "raise translation.max_tokens or filter long pairs out"
            )
        size = pos - start + 1
        new_longest = max(longest, n)
        full = new_longest * size > max_tokens or (max_sentences and size > max_sentences)
        if full:
            batches.append(order[start:pos])
            start, new_longest = pos, n
        longest = new_longest
    if start < len(order):
        batches.append(order[start:])
    return batches


def epoch_batches(
    src_lengths: np.ndarray,
    tgt_lengths: np.ndarray,
    max_tokens: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    max_sentences: int | None = None,
) -> list[np.ndarray]:
    """The batches (arrays of pair indices) of one epoch."""
    src_lengths, tgt_lengths = np.asarray(src_lengths), np.asarray(tgt_lengths)
    n = len(src_lengths)
    rng = np.random.default_rng([seed, epoch])
    ties = rng.permutation(n) if shuffle else np.arange(n)
    # lexsort: last key is primary -> by source length, then target length, then the random order
    order = ties[np.lexsort((tgt_lengths[ties], src_lengths[ties]))]
    lengths = np.maximum(src_lengths, tgt_lengths)
    batches = pack_by_tokens(order, lengths, max_tokens, max_sentences)
    if shuffle:
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches


def collate_pairs(
    src: list[list[int]], tgt: list[list[int]], pad: int, eos: int
) -> dict[str, torch.Tensor]:
    """Right-padded tensors for a batch of (source ids, target ids), each ending with eos.

    The decoder's input is the target shifted right behind an eos (fairseq's convention), so the
    model predicts target[t] from target[:t].
    """
    import torch

    def pad_to(seqs: list[list[int]], width: int) -> torch.Tensor:
        out = torch.full((len(seqs), width), pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        return out

    width_t = max(len(t) for t in tgt)
    target = pad_to(tgt, width_t)
    prev = pad_to([[eos, *t[:-1]] for t in tgt], width_t)
    return {
        "src_tokens": pad_to(src, max(len(s) for s in src)),
        "prev_output_tokens": prev,
        "target": target,
        "ntokens": sum(len(t) for t in tgt),
    }
