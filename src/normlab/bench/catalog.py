"""The names the benchmark's modules share: its cases, the Transformer sizes, the scaling points."""

from __future__ import annotations

SIZES = {  # d_model, ffn, heads, layers (enc = dec); batch ~ tokens per side
    "smoke": (32, 64, 2, 1),
    "cpu": (256, 1024, 4, 3),
    "paper": (512, 1024, 4, 6),
}
SCALING_BATCHES = (32, 64, 128, 256)  # ResNet-20 model step
SCALING_D_MODELS = (128, 256, 512)  # LN Transformer, ffn = 4 * d_model, same token batch
BF16 = "@bf16"  # suffix of a case measured under bf16 autocast when --amp both
CASES = [
    "resnet_pipeline",
    "resnet_reference",
    "resnet_model",
    "probe_first",
    "probe_all",
    "tf_ln",
    "tf_bn",
    "tf_pn",
    "tf_reference",
    "vit_ln",
    "vit_bn",
    "vit_pn",
    "vit_probe_all",
]


def is_image_case(case: str) -> bool:
    """Whether `case` (a ResNet-20, probe or ViT case) counts images; the others count tokens."""
    return case.startswith(("resnet", "probe", "vit"))
