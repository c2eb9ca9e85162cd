"""Checkpoints that restore everything a run needs to continue exactly as if it had not stopped:
model, optimizer, scheduler, RNG states, position in the data order, metric-file offsets, timers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from normlab.config import is_uncomputed
from normlab.errors import TrainingDiverged, UserError
from normlab.io_utils import DiskFullError, atomic_write

FORMAT = 1

# Keys added to the config after runs were made, with the value that reproduces what those runs
# computed: a run saved without the key is the same run as one with this value (older runs stay
# reusable and resumable); any other value is a real difference.
ADDED_KEYS = {
    "trainer.amp": None,
    "trainer.compile": False,
    "distributed.sync_bn": False,
}


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a failed write (disk full) leaves the previous checkpoint as it was."""
    try:
        atomic_write(path, lambda f: torch.save({"format": FORMAT, **payload}, f))
    except DiskFullError as err:
        last = path.parent / "last.pt"
        raise disk_full_error(Path(err.filename or path), last) from None


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """A run's checkpoints/epochNNNN.pt, oldest first (the last epochs, kept for averaging)."""
    return sorted((Path(run_dir) / "checkpoints").glob("epoch*.pt"))


def save_epoch_checkpoint(
    run_dir: Path, model: torch.nn.Module, epoch: int, step: int, keep: int
) -> None:
    """This epoch's weights as checkpoints/epochNNNN.pt, keeping only the last `keep` of them."""
    if keep <= 0:
        return
    path = Path(run_dir) / "checkpoints" / f"epoch{epoch:04d}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "progress": {"epoch": epoch, "step": step}})
    for old in epoch_checkpoints(run_dir)[:-keep]:
        old.unlink()


def checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint was written at, read without loading its tensors; None if absent."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return int(ckpt["progress"]["step"])
    except Exception:  # noqa: BLE001 - absent or unreadable: no step to name
        return None


def kept_checkpoint(last: Path, which: str = "the last checkpoint", kept: str = "is intact") -> str:
    """What a run that stopped still has: `which` checkpoint, at which step; or that there is none."""
    step = checkpoint_step(last)
    return (
        f"{which} {last} (step {step}) {kept}"
        if step is not None
        else "no checkpoint had been written yet"
    )


def disk_full_error(where: Path, last: Path) -> UserError:
    """The sentence for a write that found the disk full, naming what is still intact."""
    return UserError(
        f"disk full at {where}; {kept_checkpoint(last)}; free some space on that disk and rerun "
        "the same command to resume"
    )


def diverged_error(what: str, value: float, step: int, epoch: int, last: Path) -> TrainingDiverged:
    """The sentence for a run stopped by a NaN or infinite `what`, naming the checkpoint it keeps."""
    kept = kept_checkpoint(last, "the last good checkpoint", "is kept")
    return TrainingDiverged(
        f"{what} became {value} at step {step} (epoch {epoch}); training stopped and {kept}; "
        "lower optim.lr or try another norm"
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise UserError(
            f"cannot read checkpoint {path} ({err.__class__.__name__}); delete it to start over"
        ) from None
    if ckpt.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} has format {ckpt.get('format')}, expected {FORMAT}")
    return ckpt


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flatten(value, name + ".")
        else:
            out[name] = value
    return out


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'key: saved -> current' for each setting that changes what the run computes."""
    a, b = flatten(saved), flatten(current)
    for key, neutral in ADDED_KEYS.items():
        if key not in a and key in b and b[key] == neutral:
            a[key] = neutral
    diffs = []
    for key in sorted(set(a) | set(b)):
        if is_uncomputed(key):  # the list the run directory's name leaves out too
            continue
        if key == "trainer.amp" and _same_precision(a.get(key), b.get(key), b.get("device")):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            diffs.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return diffs


def _same_precision(saved: Any, current: Any, device: Any) -> bool:
    """trainer.amp values that compute in the same precision here are the same run: `auto` on a
    CPU without native bf16 is float32, as `null` is (runs made before `auto` existed)."""
    from normlab.train.precision import amp_dtype

    name = str(device or "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    try:
        return amp_dtype(saved, dev) == amp_dtype(current, dev)
    except UserError:
        return False
