"""Label-smoothed cross-entropy exactly as fairseq's `label_smoothed_cross_entropy` criterion."""

from __future__ import annotations

import torch


def label_smoothed_nll(
    logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(smoothed loss, nll), both summed over non-pad target tokens.

    fairseq spreads ε over the V−1 wrong classes: loss = (1 − ε − ε/(V−1))·nll + ε/(V−1)·Σ_v −log p_v.
    """
    lprobs = torch.log_softmax(logits.float(), dim=-1).view(-1, logits.size(-1))
    target = target.reshape(-1, 1)
    keep = target.ne(ignore_index)
    nll = -lprobs.gather(-1, target).masked_fill(~keep, 0.0).sum()
    smooth = -lprobs.sum(-1, keepdim=True).masked_fill(~keep, 0.0).sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss, nll
