"""BatchNorm (Ioffe & Szegedy 2015): per-feature batch mean/variance, running averages for eval.

Images use `nn.BatchNorm2d` unchanged, so the probe and every public BN recipe see the layer they
expect. (PyTorch stores the *unbiased* batch variance in `running_var`; the forward uses the biased
one — the probe relies on knowing this.)
"""

from __future__ import annotations

from torch import nn

from normlab.norms import NORMS, unsupported_layout


@NORMS.register("bn")
def build_batchnorm(
    num_features: int, layout: str, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True
) -> nn.Module:
    if layout == "image":
        return nn.BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=affine)
    raise unsupported_layout("bn", layout)
