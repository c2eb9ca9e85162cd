"""ResNet-20 for CIFAR-10 (He et al. 2016, §4.2).

A 3×3 conv stem, then 3 stages × 3 BasicBlocks with 16, 32, 64 channels (stride 2 when the width
doubles), global average pooling and a linear classifier: 6n+2 = 20 layers with n = 3, 0.27M
parameters. Shortcuts are "option A": identity, subsampled and zero-padded in channels when the
shape changes, so the shortcut adds no parameters — that is what makes the count 0.27M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlab.models import MODELS
from normlab.norms import NormFactory, NormSpec, resolve_norm


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by a norm (or by nothing, for norm=none, as in the paper).
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: take every other pixel and pad the new channels with zeros."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.pad = c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        half = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad - half))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.norm1 = norm(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.norm2 = norm(c_out)
        self.shortcut = ZeroPadShortcut(c_in, c_out) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class ResNetCifar(nn.Module):
    def __init__(
        self, norm: NormFactory, blocks_per_stage: int = 3, widths=(16, 32, 64), num_classes=10
    ) -> None:
        super().__init__()
        self.stem = conv3x3(3, widths[0])
        self.stem_norm = norm(widths[0])  # "the first BN layer" of the paper's Figure 2
        stages, c_in = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(BasicBlock(c_in, width, stride, norm))
                c_in = width
        self.blocks = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He et al.: Kaiming-normal convs; norms start at weight 1, bias 0 (their own defaults).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def scale_metrics(self) -> dict[str, torch.Tensor]:
        """The scale of what the first BN sees: its input is the stem convolution of normalized
        images, so its batch variance moves with this weight's norm (logged per step)."""
        return {"stem_weight_norm": torch.linalg.vector_norm(self.stem.weight)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_norm(self.stem(x)))
        x = self.blocks(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


@MODELS.register("resnet20")
def build_resnet20(norm: NormSpec, num_classes: int = 10, blocks_per_stage: int = 3) -> nn.Module:
    """Every norm sees feature maps (N, C, H, W): `norm` is built for the "image" layout."""
    factory = resolve_norm(norm, "image")
    return ResNetCifar(factory, blocks_per_stage=blocks_per_stage, num_classes=num_classes)


# PowerNorm (Algorithm 2) was measured on the CIFAR-10 subset at the cpu recipe (lr 0.1, batch
# 128): NaN at step 3 without a warmup (its first forward divides by the initial running psi = 1,
# i.e. the net is unnormalized, as with norm=none); NaN at step 13 after a 10-step batch-statistics
# warmup (the stem's psi^2 grows 25x in those steps and the running value lags it, a lag that
# compounds through 19 stacked norms); no NaN in 160 steps after a 100-step warmup but loss at
# chance (2.25), because the approximate backward, whose nu starts at 0, adds a radial gradient
# that inflates the conv weights 6x in 30 steps (BN: 2x) and so divides the effective lr by ~36;
# with a linear LR warmup as well (as the official code always has): NaN at step 113, just after
# a 100-step warmup, trained to step 170 after a 50-step one. Not reliable, hence refused.
build_resnet20.refused_norms = {
    "pn": (
        "norm=pn cannot train model=resnet20: PowerNorm's forward divides by the previous step's "
        "running psi, which through ResNet-20's 19 stacked norms lags the fast-moving convolution "
        "statistics at lr 0.1 until the loss becomes NaN, even after a batch-statistics and an "
        "LR warmup (the official PowerNorm has no image version); use norm=pnv, PowerNorm with "
        "batch statistics, for images"
    )
}

# Without any norm, ResNet-20's residual branches add up unnormalized (the activations' scale
# doubles per block at He et al.'s init), so the recipe's lr 0.1, which assumes BN, gives a NaN
# loss at step 4 on the CIFAR-10 subset at smoke scale; lr 0.01, 0.02 and 0.05 did not diverge.
build_resnet20.norm_notes = {
    "none": (
        0.05,
        "norm=none leaves ResNet-20 without normalization, and lr 0.1 (He et al.'s, which "
        "assumes BN) makes its loss NaN within a few steps; if it does, rerun with a smaller lr, "
        "e.g. optim.lr=0.02",
    )
}
