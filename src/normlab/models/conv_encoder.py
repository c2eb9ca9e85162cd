"""A convolutional encoder under the Transformer's decoder: the text cell without attention.

The other text cell of the {CNN, Transformer} × {images, text} design. The encoder is fairseq's
`fconv` idea (Gehring et al. 2017, ConvS2S) in pre-norm form:

    source tokens → √d·embedding + sinusoidal positions, dropout     (the Transformer's own input)
    → `encoder_layers` × x + dropout(GLU(conv1d_k(norm(x))))          (pads zeroed before each conv)
    → final norm → the Transformer decoder's cross-attention

Everything after the encoder is the Transformer's (`models/transformer.py`): the decoder, its
cache, the shared embedding as output layer, and the decoding API `encode` / `new_cache` /
`decode_step` that beam search calls. The encoder's first norm (`encoder_layers.0.conv_norm`) sees
exactly what the Transformer's first norm sees: the same InputEmbedding, initialized by the same
rule, so the two models differ only through what comes after it.

Padding. Each convolution mixes a token with its k−1 neighbours, so a pad next to a real token
would leak into it. The normalized input is zeroed at pads before every convolution: a real token
next to pads then sees exactly the zeros it would see at the end of an unpadded sentence, and its
output does not depend on how many pads there are or what they hold. The norms take the pad mask,
so masked BN's statistics count real tokens only. Pad positions of the residual stream carry
values, but nothing reads them: the next convolution zeroes them again and the decoder's
cross-attention masks them.

Sizes. A GLU convolution of width 3 has 3·d·2d = 6d² weights, a Transformer encoder layer
4d² (attention) + 2·d·ffn_dim (FFN). The configs take the number of convolutions that matches the
Transformer encoder's weights: 6 for transformer_cpu's 3 layers (FFN 4d: 36d² both), 8 for
transformer_iwslt_de_en's 6 (FFN 2d: 48d² both). No weight normalization (fairseq's fconv has
it): it would add a normalization that the norm under test does not control. Initialization as
ConvS2S: N(0, √(4(1−p)/(k·d))) for a GLU convolution fed through dropout p, zero bias.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from normlab.errors import UserError
from normlab.models import MODELS
from normlab.models.transformer import (
    EncoderOut,
    Transformer,
    TransformerConfig,
    sequence_norm,
    sublayer_factories,
)
from normlab.models.transformer_layers import make_positions
from normlab.norms import NormFactory, NormSpec


class ConvLayer(nn.Module):
    """x + dropout(GLU(conv(norm(x)))), the pads of norm(x) zeroed before the convolution."""

    def __init__(self, d: int, kernel_size: int, dropout: float, norm: NormFactory) -> None:
        super().__init__()
        self.conv_norm = norm(d)
        # "same" padding: a token's output comes from the k tokens centred on it
        self.conv = nn.Conv1d(d, 2 * d, kernel_size, padding=kernel_size // 2)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        h = self.conv_norm(x, pad_mask).masked_fill(pad_mask.unsqueeze(-1), 0.0)
        h = F.glu(self.conv(h.transpose(1, 2)), dim=1).transpose(1, 2)  # (B, T, C)
        return x + F.dropout(h, self.dropout, self.training)


class ConvEncoderTransformer(Transformer):
    """The Transformer with its self-attention encoder replaced by `ConvLayer`s."""

    def __init__(
        self,
        cfg: TransformerConfig,
        norms: Mapping[str, NormFactory],
        encoder_norm: NormFactory,
        kernel_size: int,
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise UserError(
                f"model.kernel_size={kernel_size} is not an odd positive width; a centred "
                "convolution needs one, e.g. model.kernel_size=3"
            )
        super().__init__(dataclasses.replace(cfg, encoder_layers=0), norms)
        self.cfg = cfg
        # Assigned to the attention stack's (empty) slot, so the registration order, which is the
        # order a batch meets the norms, stays embed → encoder → encoder final norm → decoder.
        self.encoder_layers = nn.ModuleList(
            ConvLayer(cfg.d_model, kernel_size, cfg.dropout, encoder_norm)
            for _ in range(cfg.encoder_layers)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()  # embedding and decoder, as the Transformer's
        for layer in self.encoder_layers:  # still empty when Transformer.__init__ calls this
            fan_in = layer.conv.weight[0].numel()  # k·d
            nn.init.normal_(layer.conv.weight, std=math.sqrt(4 * (1 - self.cfg.dropout) / fan_in))
            nn.init.zeros_(layer.conv.bias)

    def encode(self, src_tokens: torch.Tensor) -> EncoderOut:
        self._check_length(src_tokens)
        pad_mask = src_tokens.eq(self.pad_idx)
        x = self.embed(src_tokens, make_positions(src_tokens, self.pad_idx))
        for layer in self.encoder_layers:
            x = layer(x, pad_mask)
        return EncoderOut(self.encoder_final_norm(x, pad_mask), pad_mask)


@MODELS.register("conv_transformer")
def build_conv_transformer(
    norm: NormSpec,
    *,
    kernel_size: int = 3,
    encoder_layers: int = 8,
    decoder_norm: str | Mapping[str, Any] | None = "ln",
    norm_for: Callable[[Mapping[str, Any]], NormFactory] = sequence_norm,
    **options: Any,
) -> ConvEncoderTransformer:
    """`norm` (the run's, built for the "sequence" layout) goes in the encoder's convolution layers
    and final norm; the decoder's norms follow `decoder_norm` as in the Transformer (LN by default).
    `options` are TransformerConfig's fields but normalize_before: the pre-norm form is the point
    (the Transformer's residual wiring), so it is fixed."""
    if "normalize_before" in options:
        raise UserError(
            "model.normalize_before is fixed to true for conv_transformer (pre-norm residual "
            "blocks); remove the override"
        )
    cfg = TransformerConfig(encoder_layers=encoder_layers, normalize_before=True, **options)
    run_norm = sequence_norm(norm)
    norms = sublayer_factories(run_norm, norm_for, decoder_norm, None)
    return ConvEncoderTransformer(cfg, norms, run_norm, kernel_size)
