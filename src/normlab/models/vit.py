"""Vision Transformer for 32×32 images (Dosovitskiy et al. 2021), with a norm from the factory.

The image cell of the {CNN, Transformer} × {images, text} design: the same pre-norm residual
stream as the IWSLT14 Transformer's encoder, fed with image patches instead of words.

    image (B, 3, 32, 32)
    → patch embedding: a 4×4 convolution with stride 4, i.e. one linear map per patch → (B, 64, d)
    → + learned positions, dropout
    → `layers` × [x + attn(norm(x)), x + mlp(norm(x))]      (multi-head self-attention, GELU MLP)
    → final norm → mean over the 64 tokens → linear head → logits (B, num_classes)

Mean pooling, not a class token: a class token would be 1 of 65 positions in every BN layer with a
distribution of its own, mixed into the per-feature statistics of the patch tokens; with mean
pooling every token the norms see is a patch, as every position a ResNet's BN sees is a pixel, and
the head reads a global average as ResNet-20's does. (Beyer et al. 2022, "Better plain ViT
baselines", also found mean pooling as good as a class token.)

Norms: every norm is built by the factory for the "sequence" layout and called with the tokens
(B, 64, d) and no padding mask, so `bn` is BatchNorm over batch × tokens per feature
(`nn.BatchNorm1d` on the (B·64, d) matrix of tokens), `ln` normalizes each token, `pnv`/`pn` take
their quadratic mean over batch × tokens. The first norm (`blocks.0.attn_norm`) sees patch
embedding + positions, the image analogue of the Transformer's √d·embedding + positions.

Initialization (timm's ViT): truncated-normal(0.02) for linear weights and positions, zero biases;
the patch embedding is LeCun-normal (std 1/√(3·p²)), so that, on normalized pixels, the first
norm's input has a per-feature scale of order 1 at the start, as the Transformer's first norm's
input (√d · N(0, 1/d) embeddings) has.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from normlab.errors import UserError
from normlab.models import MODELS
from normlab.models.transformer_layers import Attention
from normlab.norms import NormFactory, NormSpec, resolve_norm


class MLP(nn.Module):
    def __init__(self, d: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.dropout(F.gelu(self.fc1(x)), self.dropout, self.training))


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x)); dropout on each sublayer's output."""

    def __init__(
        self, d: int, heads: int, mlp_dim: int, dropout: float, attention_dropout: float,
        norm: NormFactory,
    ) -> None:  # fmt: skip
        super().__init__()
        self.attn_norm = norm(d)
        self.attn = Attention(d, heads, attention_dropout)
        self.mlp_norm = norm(d)
        self.mlp = MLP(d, mlp_dim, dropout)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attn_norm(x)
        h = self.attn(h, *self.attn.keys_values(h), None)  # every patch sees every patch
        x = x + F.dropout(h, self.dropout, self.training)
        return x + F.dropout(self.mlp(self.mlp_norm(x)), self.dropout, self.training)


class VisionTransformer(nn.Module):
    def __init__(
        self,
        norm: NormFactory,
        num_classes: int = 10,
        image_size: int = 32,
        patch_size: int = 4,
        d_model: int = 256,
        layers: int = 7,
        heads: int = 4,
        mlp_dim: int = 512,
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise UserError(
                f"model.patch_size={patch_size} does not divide model.image_size={image_size}; "
                "choose a divisor, e.g. model.patch_size=4 for 32×32 images"
            )
        self.tokens = (image_size // patch_size) ** 2
        # Registered in execution order, so `model.modules()` meets the norms as a batch does.
        self.patch_embed = nn.Conv2d(3, d_model, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.tokens, d_model))
        self.dropout = dropout
        self.blocks = nn.ModuleList(
            Block(d_model, heads, mlp_dim, dropout, attention_dropout, norm) for _ in range(layers)
        )
        self.final_norm = norm(d_model)  # pre-norm leaves the residual stream unnormalized
        self.head = nn.Linear(d_model, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.patch_embed.weight[0].numel()  # 3·p² pixel values per patch
        nn.init.normal_(self.patch_embed.weight, std=fan_in**-0.5)
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def scale_metrics(self) -> dict[str, torch.Tensor]:
        """The scale of what the first norm sees, patch embedding + positions: its batch variance
        moves with the RMS of the patch-embedding weight (and of the positions). Logged per step."""
        return {
            "patch_embed_rms": self.patch_embed.weight.pow(2).mean().sqrt(),
            "pos_embed_rms": self.pos_embed.pow(2).mean().sqrt(),
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, d, 8, 8) -> (B, 64, d)
        # Tokens contiguous: every residual add keeps its first operand's layout, so a transposed
        # view here would make each norm and add of every block work on strided (B, d, 64) memory.
        x = x.contiguous()
        x = F.dropout(x + self.pos_embed, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x).mean(dim=1))


@MODELS.register("vit")
def build_vit(norm: NormSpec, **options: Any) -> VisionTransformer:
    """The norms see tokens (B, T, C), not feature maps, although the task feeds images: `norm` is
    built for the "sequence" layout. The options and their defaults are VisionTransformer's."""
    return VisionTransformer(resolve_norm(norm, "sequence"), **options)
