"""Average the weights of several checkpoints, as fairseq's scripts/average_checkpoints.py.

The paper evaluates the average of the last 5 epoch checkpoints. Every floating-point tensor of the
model's state_dict (parameters and buffers such as BN running statistics) becomes the arithmetic
mean over the checkpoints, accumulated in float64 and stored back in its own dtype. Integer and
bool buffers (e.g. `num_batches_tracked`) are counters, not estimates: the last checkpoint's value
is kept.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from normlab.errors import UserError


def _load_model_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only=False: our checkpoints also hold RNG states (numpy arrays), not only tensors.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist; check the paths to average") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise UserError(f"cannot read checkpoint {path} ({err.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"checkpoint {path} has no 'model' entry; is it a normlab checkpoint?")
    return ckpt["model"]


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> OrderedDict[str, torch.Tensor]:
    """The averaged model state_dict of `paths` (files saved with a "model" state_dict)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no checkpoints to average; give at least one path")
    first = _load_model_state(paths[0])
    dtypes = {k: v.dtype for k, v in first.items()}
    sums = OrderedDict(
        (k, v.to(torch.float64) if v.is_floating_point() else v.clone()) for k, v in first.items()
    )
    for path in paths[1:]:
        state = _load_model_state(path)
        if state.keys() != sums.keys():
            diff = sorted(set(state) ^ set(sums))
            raise UserError(
                f"checkpoint {path} has different weights from {paths[0]} (e.g. {diff[0]!r}); "
                "average checkpoints of one model only"
            )
        for key, value in state.items():
            if value.shape != sums[key].shape:
                raise UserError(
                    f"weight {key!r} has shape {tuple(value.shape)} in {path} but "
                    f"{tuple(sums[key].shape)} in {paths[0]}; average one model's checkpoints"
                )
            if dtypes[key].is_floating_point:
                sums[key] += value.to(torch.float64)
            else:
                sums[key] = value.clone()  # a counter: the last checkpoint's value wins
    return OrderedDict(
        (k, (v / len(paths)).to(dtypes[k]) if dtypes[k].is_floating_point else v)
        for k, v in sums.items()
    )
