"""Mirror of the local metric files to Weights & Biases; a wandb failure only ever warns.

Offline unless the user is logged in (WANDB_API_KEY set or a `wandb login` entry in ~/.netrc), so a
run never blocks on the network; `wandb sync` uploads offline runs later.
"""

from __future__ import annotations

import os
import secrets
import string
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from normlab.io_utils import atomic_write_text


def logged_in() -> bool:
    """A wandb login is available (WANDB_API_KEY, or a `wandb login` entry in ~/.netrc): runs go
    online by default; without one they stay offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.path.expanduser("~/.netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


ID_FILE = "wandb_id"  # in the run directory: a resumed run continues the same wandb run


def run_id(cfg: Mapping[str, Any], run_dir: Path) -> str:
    """`logger.id` if given, else the id saved in the run directory, else a new one saved there
    (so that rerunning a cut-off command resumes its wandb run instead of starting a second)."""
    if cfg.get("id"):
        return str(cfg["id"])
    path = Path(run_dir) / ID_FILE
    if path.exists():
        saved = path.read_text().strip()
        if saved:
            return saved
    # wandb's own ids: 8 characters of [a-z0-9] (its helper for them moved between versions)
    new = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    atomic_write_text(path, new + "\n")
    return new


class WandbMirror:
    def __init__(self, cfg: Mapping[str, Any], run_dir: Path, config: dict, name: str) -> None:
        self.run = None
        mode = cfg.get("mode") or ("online" if logged_in() else "offline")
        try:
            import wandb

            self.run = wandb.init(
                project=cfg.get("project", "normlab"),
                entity=cfg.get("entity"),
                group=cfg.get("group"),
                job_type=cfg.get("job_type"),
                tags=list(cfg.get("tags") or []),
                name=name,
                dir=str(run_dir),
                config=config,
                mode=mode,
                resume="allow",
                id=run_id(cfg, run_dir),
            )
            # Every series is plotted against the training step (also after a resume).
            self.run.define_metric("train/step")
            for prefix in ("train/*", "eval/*", "probe/*"):
                self.run.define_metric(prefix, step_metric="train/step")
        except Exception as err:  # noqa: BLE001 - wandb must never stop training
            warnings.warn(
                f"wandb could not start ({err}); continuing with local files only", stacklevel=2
            )

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log({**metrics, "train/step": step}, step=step)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"wandb log failed ({err}); further wandb logging is off", stacklevel=2)
            self.run = None

    def summary(self, metrics: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(dict(metrics))
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"wandb summary failed ({err})", stacklevel=2)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"wandb finish failed ({err})", stacklevel=2)
        self.run = None
