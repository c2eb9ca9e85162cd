"""Launching one run: the checks made before Hydra writes anything, the launch record, the job.

`normlab.cli` checks the command line; this module takes over once it is well formed. In a single
run, `preflight` composes the config as Hydra will, validates it and checks the run directory
(writable, not locked, not made with another config) before Hydra starts, so a refused command
changes nothing on disk. Inside the job (every job of a --multirun too) `run_job` checks again,
writes .hydra/ only once the run is accepted, and removes the folder Hydra made for a new run that
is refused after all (bad data, a norm the model cannot take).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from normlab.errors import UserError

# Overrides whose value is a path: run names hold '=' and ',' (norm=gn,optim.lr=0.05), which
# Hydra's grammar reads as a nested override and a sweep, so a path pasted as printed is quoted.
PATH_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")
_PLAIN_PATH = re.compile(r"[\w./~@%+-]*")


def quote_path_overrides(argv: list[str]) -> list[str]:
    """`hydra.run.dir=<a path as the CLI printed it>` works: such a value is quoted for Hydra."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        plain = _PLAIN_PATH.fullmatch(value) or value[:1] in ("'", '"') or "${" in value
        if sep and key.lstrip("+") in PATH_KEYS and not plain:
            escaped = value.replace("\\", "\\\\").replace("'", "\\'")
            arg = f"{key}='{escaped}'"
        out.append(arg)
    return out


def shown(path: str | Path) -> str:
    """A path as printed for the user: pasted back into a shell (or into hydra.run.dir=) as is."""
    return shlex.quote(str(path))


def report(summary: dict, run_dir: Path) -> None:
    metrics = ", ".join(
        f"{k}={summary[k]:.4g}"
        for k in ("test_acc", "test_loss", "bleu", "sacrebleu", "valid_loss")
        if k in summary
    )
    wall = summary.get("wall_s", 0)
    print(
        f"{summary['status']}: {shown(run_dir)} ({metrics}, {summary['steps']} steps, {wall:.0f} s)"
    )


def _already_complete(summary: dict, run_dir: Path) -> None:
    print(f"run already complete: {shown(run_dir / 'summary.json')} (nothing to do)")
    report(summary, run_dir)


def _write_launch_record(run_dir: Path, cfg: DictConfig) -> None:
    """What Hydra writes into .hydra/ at launch, written here only once the run is accepted
    (configs/hydra/default.yaml turns Hydra's own copy off: it overwrote refused runs' records)."""
    from hydra.core.hydra_config import HydraConfig

    from normlab.io_utils import atomic_write_text

    hydra_cfg = HydraConfig.instance().cfg
    record = run_dir / ".hydra"
    atomic_write_text(record / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(record / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    atomic_write_text(record / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))


# The nearest folder above the run directory that existed before Hydra made it (set by preflight):
# a run refused inside the job removes what was made for it up to there.
_existed_before: Path | None = None


def _remove_new_run_dir(run_dir: Path) -> None:
    """Undo Hydra's folder for a new run that was refused before it saved anything."""
    import shutil

    if _existed_before is not None and run_dir.absolute() == _existed_before:
        return  # the folder was there before this command: not ours to remove
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    while _existed_before is not None and parent != _existed_before:
        if not parent.is_relative_to(_existed_before):
            break
        try:
            parent.rmdir()  # only an empty folder
        except OSError:
            break
        parent = parent.parent


def run_job(cfg: DictConfig, run_dir: Path) -> dict | None:
    """Checks, then the launch record and the training, under the run directory's lock; None
    when the run was already complete (then nothing is written)."""
    import contextlib

    from normlab.config import validate_config
    from normlab.errors import TrainingDiverged
    from normlab.models import model_norm_note
    from normlab.train import distributed
    from normlab.train.loop import train
    from normlab.train.preflight import check_run_dir
    from normlab.train.run_dir import RunDirLock

    main_rank = distributed.launched_rank() == 0
    # Hydra has just made the folder (and its empty log) for a new run.
    new = main_rank and run_dir.is_dir() and set(os.listdir(run_dir)) <= {"cli.log"}
    try:
        validate_config(cfg)
        done = check_run_dir(cfg, run_dir)
        if done is not None:
            _already_complete(done, run_dir)
            return None
        note = model_norm_note(str(cfg.model.name), str(cfg.norm.name), float(cfg.optim.lr))
        if note and main_rank:
            print(f"normlab: note: {note}", file=sys.stderr)
        with RunDirLock(run_dir, shared=True) if main_rank else contextlib.nullcontext():
            if main_rank:
                _write_launch_record(run_dir, cfg)
            return train(cfg, run_dir)
    except UserError as err:
        saved = (run_dir / "checkpoints" / "last.pt").exists() or (
            run_dir / "summary.json"
        ).exists()
        if new and not saved and not isinstance(err, TrainingDiverged):
            _remove_new_run_dir(run_dir)  # refused (bad data, options...): nothing half-made stays
        raise


def storage_error(err: OSError, run_dir: Path) -> UserError | None:
    """A sentence for a disk that filled up (or went read-only) under a running job."""
    import errno

    from normlab.train.checkpoint import disk_full_error

    where = Path(err.filename) if err.filename else run_dir
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return disk_full_error(where, run_dir / "checkpoints" / "last.pt")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return UserError(
            f"cannot write {where} ({err.strerror}); make it writable and rerun the same command "
            "to resume"
        )
    return None


def preflight(argv: list[str]) -> bool:
    """Before Hydra writes anything: compose the run's config as Hydra will, validate it, and
    check its run directory (writable, not locked, not made with another config). True when
    the run is already complete (nothing to launch)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from normlab.cli import CONFIG_DIR, parse_overrides
    from normlab.config import validate_config
    from normlab.train.preflight import check_run_dir

    if any(a.startswith("-") for a in argv) or parse_overrides(argv) is None:
        return False  # Hydra's own flags (--cfg, --help, -m ...) or its syntax errors: Hydra's
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=argv, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - what keeps Hydra from composing, Hydra reports itself
        return False
    HydraConfig.instance().set_config(cfg)  # what ${hydra:...} in hydra.run.dir reads
    run_dir = Path(str(cfg.hydra.run.dir))
    global _existed_before
    _existed_before = run_dir.absolute()
    while not _existed_before.exists() and _existed_before != _existed_before.parent:
        _existed_before = _existed_before.parent
    with open_dict(cfg):
        del cfg["hydra"]
    validate_config(cfg)
    done = check_run_dir(cfg, run_dir)
    if done is not None:
        _already_complete(done, run_dir.absolute())
    return done is not None


def check_sweep_writable(argv: list[str]) -> None:
    """A --multirun writes under hydra.sweep.dir (default: NORMLAB_RUNS or runs/): writable?"""
    from normlab.train.preflight import check_writable

    given = [a.partition("=")[2].strip("'\"") for a in argv if a.startswith("hydra.sweep.dir=")]
    root = given[-1] if given else os.environ.get("NORMLAB_RUNS", "runs")
    if "${" not in root:
        check_writable(Path(root))
