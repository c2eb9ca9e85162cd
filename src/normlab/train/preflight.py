"""Checks of a run directory made before anything is written into it.

A command that is refused (its run directory is read-only, locked by another process, or holds a
run made with another config) must leave that directory byte for byte as it was, so the CLI runs
these checks before Hydra starts the job and again inside the job (a --multirun checks each job
here): they only read. The training loop repeats the config checks under its lock.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from normlab.errors import UserError
from normlab.train.checkpoint import config_differences, load_checkpoint
from normlab.train.distributed import launched_rank
from normlab.train.run_dir import in_use_error, lock_holder

IN_PLACE = ("metrics.csv", "eval.csv", "run.lock")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _where_runs_go() -> str:
    runs = os.environ.get("NORMLAB_RUNS")
    where = f"NORMLAB_RUNS={shlex.quote(runs)} is" if runs else "runs/ is"
    return f"{where} where runs go; point NORMLAB_RUNS at a writable folder or make it writable"


def check_writable(run_dir: Path) -> None:
    """The run directory (or the folder it will be created in) accepts new files."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        if not run_dir.is_dir():
            raise UserError(f"run directory {run_dir} is a file; remove it or pick another run")
        # Folders take new files (every file but these is replaced atomically, by rename);
        # these are opened in place.
        paths = [run_dir, *(p for p in run_dir.rglob("*") if p.is_dir() and not p.is_symlink())]
        paths += [run_dir / name for name in IN_PLACE if (run_dir / name).exists()]
        for path in paths:
            mode = os.W_OK | (os.X_OK if path.is_dir() else 0)
            if not os.access(path, mode):
                raise UserError(
                    f"cannot write into the run directory {run_dir}: {path} is read-only; make "
                    f"it writable (chmod -R u+w {shlex.quote(str(run_dir))}) or start the run "
                    "elsewhere with hydra.run.dir=<a writable folder>"
                )
        return
    parent = _nearest_existing(run_dir)
    if not parent.is_dir():
        raise UserError(
            f"cannot create the run directory {run_dir}: {parent} is a file, not a folder; "
            f"move it away, or {_where_runs_go()}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot create the run directory {run_dir}: {parent} is read-only; {_where_runs_go()}"
        )


def _saved_config(ckpt_path: Path) -> dict[str, Any]:
    """The config stored in a checkpoint, read without loading its tensors (memory-mapped)."""
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: the full loader explains what is wrong
        ckpt = load_checkpoint(ckpt_path)
    return ckpt.get("config", {})


def different_config_error(where: Path, diffs: list[str]) -> UserError:
    return UserError(
        f"{where} was made with a different config ({'; '.join(diffs)}); refusing to resume it: "
        "undo those overrides, or start a new run with hydra.run.dir=..."
    )


def check_same_config(saved: dict[str, Any], config: dict[str, Any], where: Path) -> None:
    """Refuse to reuse or resume `where` when its run was made with another config."""
    if diffs := config_differences(saved, config):
        raise different_config_error(where, diffs)


def check_run_dir(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """Refuse (UserError) what the training loop would refuse after writing into `run_dir`;
    return the summary of a run that is complete with this config (nothing to do), else None."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        check_writable(run_dir)
        return None
    # Under torchrun every rank runs these checks, but only rank 0 takes the lock: the others
    # would find it held by their own rank 0.
    holder = lock_holder(run_dir) if launched_rank() == 0 else None
    if holder is not None:
        raise in_use_error(run_dir, holder)
    config = OmegaConf.to_container(cfg, resolve=True)
    ckpt = run_dir / "checkpoints" / "last.pt"
    summary_path = run_dir / "summary.json"
    if cfg.get("resume") == "never" and ckpt.exists():
        raise UserError(
            f"{ckpt} exists and resume=never; delete the run directory or drop resume=never"
        )
    if summary_path.exists() and cfg.get("resume") != "never":
        try:
            summary = json.loads(summary_path.read_text())
        except ValueError as err:
            raise UserError(
                f"{summary_path} is not valid JSON ({err.msg}, line {err.lineno}); delete it "
                "and rerun the same command to resume from the last checkpoint"
            ) from None
        if summary.get("status") == "complete":
            check_same_config(summary.get("config", {}), config, summary_path)
            return summary  # nothing to do: a read-only copy of a finished run is fine too
    check_writable(run_dir)
    if ckpt.exists():
        check_same_config(_saved_config(ckpt), config, ckpt)
    return None
