"""The Transformer's layers that hold no norm: token embedding with sinusoidal positions,
multi-head attention, the ReLU feed-forward block and the decoder's causal mask. `transformer.py`
wires them into residual blocks around the norms; `vit.py` and `conv_encoder.py` reuse them.

Positions follow fairseq's SinusoidalPositionalEmbedding: the k-th real token of a row (k = 1, 2,
...; pads are not counted, so left and right padding give the same positions) gets position
p = pad_idx + k, embedded as [sin(p·ω_0), …, sin(p·ω_{h-1}), cos(p·ω_0), …, cos(p·ω_{h-1})] with
h = d/2 and ω_i = 10000^(-i/(h-1)); pads get the zero vector.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from normlab.errors import UserError

if TYPE_CHECKING:
    from normlab.models.transformer import TransformerConfig


def sinusoid_table(num_positions: int, d: int, pad_idx: int) -> torch.Tensor:
    """Row p is position p's embedding (see the module docstring); rows 0..pad_idx are zero."""
    half = d // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * freqs
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if d % 2:
        table = F.pad(table, (0, 1))
    table[: pad_idx + 1] = 0
    return table


def make_positions(tokens: torch.Tensor, pad_idx: int) -> torch.Tensor:
    """pad_idx + (rank of the token among its row's real tokens); pad_idx at pads."""
    real = tokens.ne(pad_idx).long()
    return torch.cumsum(real, dim=1) * real + pad_idx


class InputEmbedding(nn.Module):
    """Scaled token embedding + sinusoidal position + dropout; its matrix is also the output layer."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_idx)
        self.scale = math.sqrt(cfg.d_model)
        self.dropout = cfg.dropout
        table = sinusoid_table(cfg.max_positions + cfg.pad_idx + 1, cfg.d_model, cfg.pad_idx)
        self.register_buffer("positions", table, persistent=False)  # a constant, not a weight

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.tokens(tokens) * self.scale + self.positions[positions]
        return F.dropout(x, self.dropout, self.training)


class Attention(nn.Module):
    """Multi-head attention; keys/values are projected separately so a decoder can cache them."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise UserError(f"model.d_model={d} is not divisible by model.heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d) for _ in range(3))
        self.out_proj = nn.Linear(d, d)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, H, T, C/H)
        b, t, c = x.shape
        return x.view(b, t, self.heads, c // self.heads).transpose(1, 2)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split_heads(self.k_proj(source)), self._split_heads(self.v_proj(source))

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """`mask` (broadcast to B, H, T, S) is True where a query may attend to a key."""
        q = self._split_heads(self.q_proj(x))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape))


class FeedForward(nn.Module):
    def __init__(self, d: int, ffn_dim: int, activation_dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, ffn_dim), nn.Linear(ffn_dim, d)
        self.activation_dropout = activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.fc1(x)), self.activation_dropout, self.training)
        return self.fc2(h)


def causal_mask(pad_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T), True where query t may see key s: s ≤ t and s is not a pad.

    Each query may also always see itself. That changes nothing for a real query, but gives a pad
    query that sees only pads (left padding) one key instead of an empty softmax row, whose NaN
    would reach the weight gradients through 0·NaN.
    """
    t = pad_mask.shape[1]
    past = torch.ones(t, t, dtype=torch.bool, device=pad_mask.device).tril()
    itself = torch.eye(t, dtype=torch.bool, device=pad_mask.device)
    return (past & ~pad_mask[:, None, None, :]) | itself
