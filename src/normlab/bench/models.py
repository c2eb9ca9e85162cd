"""The models the benchmark cases train: normlab's ResNet-20, ViT and Transformer, and
torch.nn.Transformer as the reference, each with the optimizer its training uses."""

from __future__ import annotations

import math

import torch
from torch import nn

from normlab.models import build_model
from normlab.norms import norm_factory

# The ViT's cpu preset (configs/preset/cifar10_vit/cpu.yaml) over configs/model/vit.yaml's defaults.
VIT_CPU = {"name": "vit", "d_model": 128, "layers": 4, "heads": 4, "mlp_dim": 256}


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def vit(device: torch.device, norm: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The ViT of `experiment=cifar10_vit scale=cpu` with `norm`, from seed 0, and its SGD."""
    torch.manual_seed(0)
    model = build_model(VIT_CPU, norm_factory({"name": norm}, "sequence")).to(device)
    return model, _sgd(model)


def resnet(
    device: torch.device, channels_last: bool = True
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """ResNet-20 with norm=bn, from seed 0 (channels_last unless told), and its SGD."""
    torch.manual_seed(0)
    model = build_model({"name": "resnet20"}, norm_factory({"name": "bn"}, "image")).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, _sgd(model)


def transformer(
    norm: str, vocab: int, pad: int, d: int, ffn: int, heads: int, layers: int
) -> nn.Module:
    """normlab's Transformer with `norm` (ln, bn, pn) and `layers` encoder and decoder layers."""
    return build_model(
        {
            "name": "transformer",
            "d_model": d,
            "ffn_dim": ffn,
            "heads": heads,
            "encoder_layers": layers,
            "decoder_layers": layers,
        },
        norm_factory({"name": norm}, "sequence"),
        vocab_size=vocab,
        pad_idx=pad,
        norm_for=lambda c: norm_factory(c, "sequence"),
    )


def reference_transformer(
    vocab: int, pad: int, d: int, ffn: int, heads: int, layers: int
) -> nn.Module:
    """torch.nn.Transformer with the same sizes, shared embeddings and sinusoidal positions."""

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, d, padding_idx=pad)
            self.core = nn.Transformer(
                d, heads, layers, layers, ffn, dropout=0.3, batch_first=True, norm_first=True
            )
            pos = torch.arange(1024)[:, None] * torch.exp(
                torch.arange(0, d, 2) * (-math.log(10000.0) / d)
            )
            self.register_buffer("pos", torch.cat([pos.sin(), pos.cos()], 1))

        def forward(self, src, prev):
            def emb(t):
                return self.embed(t) * math.sqrt(d) + self.pos[: t.size(1)]

            mask = self.core.generate_square_subsequent_mask(prev.size(1), device=prev.device)
            h = self.core(
                emb(src),
                emb(prev),
                tgt_mask=mask,
                src_key_padding_mask=src == pad,
                tgt_key_padding_mask=prev == pad,
                memory_key_padding_mask=src == pad,
            )
            return h @ self.embed.weight.t()

    return Reference()
