"""Encoder–decoder Transformer: fairseq's `transformer_iwslt_de_en`, with a norm per sublayer.

Architecture (Vaswani et al. 2017 as fairseq builds it): token embeddings scaled by √d_model plus
sinusoidal positions, dropout; `encoder_layers` × [self-attention, ReLU FFN] and `decoder_layers` ×
[causal self-attention, cross-attention, ReLU FFN], each sublayer wrapped in a residual connection
with dropout on its output. Pre-norm by default (`normalize_before`: x + f(norm(x)), plus a final
norm at the encoder and the decoder output); post-norm (norm(x + f(x)), no final norms) as an
option. One embedding matrix serves the encoder input, the decoder input and the output projection
(`share_all_embeddings`, so source and target share one joined dictionary). The layers that hold
no norm (embedding and positions, attention, feed-forward, causal mask) are in
`transformer_layers.py`; this file is the model and where its norms go.

Norms. The builder makes every norm from a norm config for the "sequence" layout (the run's
`cfg.norm` and its own overrides, each looked up once), called as `norm(x, pad_mask)`; encoder
norms see the source pad mask, decoder norms the target one. Which norm each of the 7 positions
uses (encoder_self_attn, encoder_ffn, encoder_final, decoder_self_attn, decoder_cross_attn,
decoder_ffn, decoder_final) is decided, later rules winning:
  1. the run's norm (`norm`) everywhere;
  2. `decoder_norm` (default "ln"), if not None, for the four decoder positions — the official
     PowerNorm code keeps the decoder on LayerNorm, so `norm=bn` means "BN in the encoder";
     `decoder_norm: null` puts the run's norm in the decoder too ("BN everywhere");
  3. `sublayer_norms[position]`, a norm config such as {name: ln}, where it is not None.

Decoding API (used by eval/beam_search.py): `encode(src) -> EncoderOut`, `new_cache()`,
`decode_step(prefix, encoder_out, cache) -> logits of the next token`. With a cache, only the
prefix's last token is run and each layer's keys/values are appended to the cache; without one,
the whole prefix is recomputed (the reference the cache is tested against).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from normlab.errors import UserError
from normlab.models import MODELS
from normlab.models.transformer_layers import (
    Attention,
    FeedForward,
    InputEmbedding,
    causal_mask,
    make_positions,
)
from normlab.models.transformer_layers import sinusoid_table as sinusoid_table  # re-export
from normlab.norms import NormFactory, NormSpec, resolve_norm

SUBLAYERS = (
    "encoder_self_attn",
    "encoder_ffn",
    "encoder_final",
    "decoder_self_attn",
    "decoder_cross_attn",
    "decoder_ffn",
    "decoder_final",
)


@dataclass
class TransformerConfig:
    vocab_size: int
    pad_idx: int
    d_model: int = 512
    ffn_dim: int = 1024
    heads: int = 4
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.3
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    normalize_before: bool = True
    max_positions: int = 1024


# -- decoding state --------------------------------------------------------------------------------
@dataclass
class EncoderOut:
    states: torch.Tensor  # (B, S, C)
    pad_mask: torch.Tensor  # (B, S), True at pads

    def reorder(self, order: torch.Tensor) -> EncoderOut:
        """The rows `order` of the batch (beam search repeats and drops sentences with this)."""
        return EncoderOut(self.states.index_select(0, order), self.pad_mask.index_select(0, order))


@dataclass
class LayerCache:
    self_kv: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, H, t, d/H) each, grows
    cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None  # computed once per source


@dataclass
class DecoderCache:
    """Keys and values of the decoder's past steps, one `LayerCache` per layer."""

    layers: list[LayerCache] = field(default_factory=list)

    @property
    def steps(self) -> int:
        """How many decoder positions the cache holds."""
        first = self.layers[0].self_kv if self.layers else None
        return 0 if first is None else first[0].shape[2]

    def reorder(self, order: torch.Tensor) -> DecoderCache:
        """Keep the rows `order`, e.g. the beams that survived a search step (in place)."""
        for layer in self.layers:
            if layer.self_kv is not None:
                layer.self_kv = tuple(t.index_select(0, order) for t in layer.self_kv)
            if layer.cross_kv is not None:
                layer.cross_kv = tuple(t.index_select(0, order) for t in layer.cross_kv)
        return self


# -- the residual blocks ---------------------------------------------------------------------------
class Block(nn.Module):
    """The residual wiring shared by encoder and decoder layers."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.normalize_before, self.dropout = cfg.normalize_before, cfg.dropout

    def residual(
        self,
        x: torch.Tensor,
        norm: nn.Module,
        pad_mask: torch.Tensor | None,
        sublayer: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        if self.normalize_before:  # pre-norm: x + f(norm(x))
            return x + F.dropout(sublayer(norm(x, pad_mask)), self.dropout, self.training)
        return norm(x + F.dropout(sublayer(x), self.dropout, self.training), pad_mask)


class EncoderLayer(Block):
    def __init__(self, cfg: TransformerConfig, norms: Mapping[str, NormFactory]) -> None:
        super().__init__(cfg)
        d = cfg.d_model
        self.self_attn = Attention(d, cfg.heads, cfg.attention_dropout)
        self.self_attn_norm = norms["encoder_self_attn"](d)
        self.ffn = FeedForward(d, cfg.ffn_dim, cfg.activation_dropout)
        self.ffn_norm = norms["encoder_ffn"](d)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        def self_attend(h: torch.Tensor) -> torch.Tensor:
            return self.self_attn(h, *self.self_attn.keys_values(h), mask)

        x = self.residual(x, self.self_attn_norm, pad_mask, self_attend)
        return self.residual(x, self.ffn_norm, pad_mask, self.ffn)


class DecoderLayer(Block):
    def __init__(self, cfg: TransformerConfig, norms: Mapping[str, NormFactory]) -> None:
        super().__init__(cfg)
        d = cfg.d_model
        self.self_attn = Attention(d, cfg.heads, cfg.attention_dropout)
        self.self_attn_norm = norms["decoder_self_attn"](d)
        self.cross_attn = Attention(d, cfg.heads, cfg.attention_dropout)
        self.cross_attn_norm = norms["decoder_cross_attn"](d)
        self.ffn = FeedForward(d, cfg.ffn_dim, cfg.activation_dropout)
        self.ffn_norm = norms["decoder_ffn"](d)

    def forward(
        self,
        x: torch.Tensor,
        pad_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None,
        encoder_out: EncoderOut,
        cache: LayerCache | None,
    ) -> torch.Tensor:
        def self_attend(h: torch.Tensor) -> torch.Tensor:
            k, v = self.self_attn.keys_values(h)
            if cache is not None:  # append this step's keys/values to the past ones
                if cache.self_kv is not None:
                    k = torch.cat([cache.self_kv[0], k], dim=2)
                    v = torch.cat([cache.self_kv[1], v], dim=2)
                cache.self_kv = (k, v)
            return self.self_attn(h, k, v, self_mask)

        def cross_attend(h: torch.Tensor) -> torch.Tensor:
            kv = cache.cross_kv if cache is not None else None
            if kv is None:
                kv = self.cross_attn.keys_values(encoder_out.states)
                if cache is not None:
                    cache.cross_kv = kv
            return self.cross_attn(h, *kv, ~encoder_out.pad_mask[:, None, None, :])

        x = self.residual(x, self.self_attn_norm, pad_mask, self_attend)
        x = self.residual(x, self.cross_attn_norm, pad_mask, cross_attend)
        return self.residual(x, self.ffn_norm, pad_mask, self.ffn)


# -- the model -------------------------------------------------------------------------------------
class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig, norms: Mapping[str, NormFactory]) -> None:
        super().__init__()
        self.cfg = cfg
        self.pad_idx, self.max_positions = cfg.pad_idx, cfg.max_positions
        # Registered in execution order, so `model.modules()` meets the norms as a batch does.
        # Pre-norm leaves the residual stream unnormalized: fairseq adds a norm at each output.
        final = cfg.normalize_before
        self.embed = InputEmbedding(cfg)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(cfg, norms) for _ in range(cfg.encoder_layers)
        )
        self.encoder_final_norm = norms["encoder_final"](cfg.d_model) if final else None
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(cfg, norms) for _ in range(cfg.decoder_layers)
        )
        self.decoder_final_norm = norms["decoder_final"](cfg.d_model) if final else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # fairseq's init: N(0, d^-1/2) embeddings (pad row zero); Xavier-uniform projections, with
        # gain 1/√2 for q, k, v; zero biases. Norms keep their own defaults.
        nn.init.normal_(self.embed.tokens.weight, std=self.cfg.d_model**-0.5)
        nn.init.zeros_(self.embed.tokens.weight[self.pad_idx])
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                qkv = name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj")
                nn.init.xavier_uniform_(m.weight, gain=2**-0.5 if qkv else 1.0)
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def scale_metrics(self) -> dict[str, torch.Tensor]:
        """The scale of what the first norm sees: √d·embedding + positions, so its batch variance
        moves with the RMS of the shared embedding matrix (which is also the output projection);
        the pad row, held at zero, is left out. Logged per step."""
        w = self.embed.tokens.weight
        sum_sq = w.pow(2).sum() - w[self.pad_idx].pow(2).sum()
        return {"embed_rms": (sum_sq / ((w.shape[0] - 1) * w.shape[1])).sqrt()}

    def _check_length(self, tokens: torch.Tensor) -> None:
        if tokens.shape[1] > self.max_positions:
            raise UserError(
                f"a batch of {tokens.shape[1]} tokens per sentence exceeds "
                f"model.max_positions={self.max_positions}; filter longer sentences or raise it"
            )

    def encode(self, src_tokens: torch.Tensor) -> EncoderOut:
        self._check_length(src_tokens)
        pad_mask = src_tokens.eq(self.pad_idx)
        x = self.embed(src_tokens, make_positions(src_tokens, self.pad_idx))
        mask = ~pad_mask[:, None, None, :]
        for layer in self.encoder_layers:
            x = layer(x, pad_mask, mask)
        if self.encoder_final_norm is not None:
            x = self.encoder_final_norm(x, pad_mask)
        return EncoderOut(x, pad_mask)

    def _decoder_stack(
        self,
        x: torch.Tensor,
        pad_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None,
        encoder_out: EncoderOut,
        cache: DecoderCache | None,
    ) -> torch.Tensor:
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, pad_mask, self_mask, encoder_out, cache.layers[i] if cache else None)
        if self.decoder_final_norm is not None:
            x = self.decoder_final_norm(x, pad_mask)
        return F.linear(x, self.embed.tokens.weight)  # the shared embedding is the output layer

    def decode(self, prev_output_tokens: torch.Tensor, encoder_out: EncoderOut) -> torch.Tensor:
        """Teacher-forced decoder: logits (B, T, V) for every position of `prev_output_tokens`."""
        self._check_length(prev_output_tokens)
        pad_mask = prev_output_tokens.eq(self.pad_idx)
        x = self.embed(prev_output_tokens, make_positions(prev_output_tokens, self.pad_idx))
        return self._decoder_stack(x, pad_mask, causal_mask(pad_mask), encoder_out, None)

    def forward(self, src_tokens: torch.Tensor, prev_output_tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(prev_output_tokens, self.encode(src_tokens))

    def new_cache(self) -> DecoderCache:
        return DecoderCache([LayerCache() for _ in self.decoder_layers])

    def decode_step(
        self, prefix: torch.Tensor, encoder_out: EncoderOut, cache: DecoderCache | None = None
    ) -> torch.Tensor:
        """Logits (B, V) of the token after `prefix` (B, t), a pad-free decoder input.

        With `cache`, which must hold the steps for prefix[:, :-1], only the last token is run.
        """
        if cache is None:
            return self.decode(prefix, encoder_out)[:, -1]
        self._check_length(prefix)
        if cache.steps != prefix.shape[1] - 1:
            raise ValueError(f"the cache holds {cache.steps} steps, the prefix {prefix.shape[1]}")
        last = prefix[:, -1:]
        x = self.embed(last, torch.full_like(last, self.pad_idx + prefix.shape[1]))
        # One query that may see every cached key: no mask needed, and no pads to leave out.
        return self._decoder_stack(x, None, None, encoder_out, cache)[:, -1]


# -- the builder -----------------------------------------------------------------------------------
def sublayer_factories(
    norm: NormFactory,
    norm_for: Callable[[Mapping[str, Any]], NormFactory],
    decoder_norm: str | Mapping[str, Any] | None,
    sublayer_norms: Mapping[str, Mapping[str, Any] | None] | None,
) -> dict[str, NormFactory]:
    """The norm factory of each of the 7 positions (rules in the module docstring)."""
    factories = dict.fromkeys(SUBLAYERS, norm)
    if decoder_norm is not None:
        cfg = {"name": decoder_norm} if isinstance(decoder_norm, str) else decoder_norm
        decoder_factory = norm_for(cfg)
        factories |= {k: decoder_factory for k in SUBLAYERS if k.startswith("decoder_")}
    for key, cfg in (sublayer_norms or {}).items():
        if key not in factories:
            raise UserError(
                f"model.sublayer_norms has no position {key!r}; positions are {', '.join(SUBLAYERS)}"
            )
        if cfg is not None:
            factories[key] = norm_for(cfg)
    return factories


def sequence_norm(norm: NormSpec) -> NormFactory:
    """The factory of a norm config for (B, T, C) token sequences: every sequence model's norms
    (a factory made already is used as it is)."""
    return resolve_norm(norm, "sequence")


@MODELS.register("transformer")
def build_transformer(
    norm: NormSpec,
    *,
    decoder_norm: str | Mapping[str, Any] | None = "ln",
    sublayer_norms: Mapping[str, Mapping[str, Any] | None] | None = None,
    norm_for: Callable[[Mapping[str, Any]], NormFactory] = sequence_norm,
    **options: Any,
) -> Transformer:
    """`norm` is the run's norm, built for the "sequence" layout; `norm_for(cfg)` builds the
    overrides (`decoder_norm`, `sublayer_norms`), by default for the same layout.
    `options` are TransformerConfig's fields, whose defaults are the only ones."""
    cfg = TransformerConfig(**options)
    run_norm = sequence_norm(norm)
    return Transformer(cfg, sublayer_factories(run_norm, norm_for, decoder_norm, sublayer_norms))
