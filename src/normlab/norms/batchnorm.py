"""BatchNorm (Ioffe & Szegedy 2015): per-feature batch mean/variance, running averages for eval.

Images use `nn.BatchNorm2d` unchanged, so the probe and every public BN recipe see the layer they
expect. (PyTorch stores the *unbiased* batch variance in `running_var`; the forward uses the biased
one — the probe relies on knowing this.) Sequences use `MaskedBatchNorm`: the same statistics, taken
over the non-pad tokens of the batch only. With `sync_stats` (set by a torchrun run with
distributed.sync_bn=true) both take their statistics over the global batch of all processes.
"""

from __future__ import annotations

from torch import nn

from normlab.errors import UserError
from normlab.norms import NORMS, unsupported_layout
from normlab.norms.global_stats import SyncBatchNorm2d
from normlab.norms.masked_batchnorm import MaskedBatchNorm


@NORMS.register("bn")
def build_batchnorm(
    num_features: int,
    layout: str,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    layer_scaling: bool = False,
    sync_stats: bool = False,
) -> nn.Module:
    if layout == "image":
        if layer_scaling:
            raise UserError(
                "norm.layer_scaling=true divides each token by its RMS and exists only for "
                "Transformers; set norm.layer_scaling=false for image models"
            )
        image_bn = SyncBatchNorm2d if sync_stats else nn.BatchNorm2d
        return image_bn(num_features, eps=eps, momentum=momentum, affine=affine)
    if layout == "sequence":
        return MaskedBatchNorm(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            layer_scaling=layer_scaling,
            sync_stats=sync_stats,
        )
    raise unsupported_layout("bn", layout)
