"""What a run's checkpoints/last.pt holds, written and read back in one place so that the two agree.

Its entries: the config, the trained objects (`RunParts.checkpoint_entries`), the progress
(`TrainState.progress`), the RNG states, the metric files' offsets and the last evaluation. Writing
the file, reading it and the RNG states are `normlab.train.checkpoint`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from normlab.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from normlab.train.parts import RunParts
from normlab.train.preflight import check_same_config
from normlab.train.state import TrainState


def save_run(
    path: Path,
    config: dict[str, Any],
    parts: RunParts,
    state: TrainState,
    offsets: dict[str, int] | None,
    last_eval: dict[str, float],
) -> None:
    """Write last.pt: everything the run needs to continue as if it had not stopped."""
    entries = {"config": config, **parts.checkpoint_entries()}
    entries |= {"progress": state.progress(), "rng": rng_state(), "offsets": offsets}
    save_checkpoint(path, entries | {"last_eval": last_eval})


def resume_run(
    path: Path, config: dict[str, Any], parts: RunParts, state: TrainState, *, rank: int, seed: int
) -> tuple[dict[str, int], dict[str, float]]:
    """Continue from last.pt (refused if it was written with another config): restore `parts`,
    `state` and the RNG states; returns the metric files' offsets and the last evaluation."""
    ckpt = load_checkpoint(path)
    check_same_config(ckpt["config"], config, path)
    parts.restore(ckpt)
    state.resume(ckpt["progress"])
    set_rng_state(ckpt["rng"])  # rank 0's: the other ranks reseed their dropout
    if rank:
        torch.manual_seed((seed * 1_000_003 + rank) * 7919 + state.step)
    return ckpt["offsets"], ckpt.get("last_eval", {})
