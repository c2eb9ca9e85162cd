"""`normlab-train` / `python -m normlab.train`: the Hydra entry point.

Before Hydra composes anything, every `group=value` on the command line is checked against the
files in configs/, so a typo such as `norm=bnn` fails in one line that lists the valid names.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from normlab.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
# Groups chosen on the command line; `preset` is picked by experiment+scale, `hydra` by us.
USER_GROUPS = (
    "model",
    "data",
    "norm",
    "optim",
    "logger",
    "scale",
    "experiment",
    "launcher",
    "probe",
)


def run_name(override_dirname: str) -> str:
    """A directory name from the command-line overrides: 'default' if none, no path separators."""
    if not override_dirname:
        return "default"
    name = re.sub(r"[/\\]+", "-", override_dirname).replace("..", "")
    name = name.lstrip(".-") or "default"
    if len(name) > 150:  # file systems cap names at 255 bytes; keep it readable and unique
        name = name[:140] + "-" + hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
    return name


def threads_per_job(n_jobs: int) -> int:
    """Torch threads for each of `n_jobs` parallel jobs on this machine's cores (at least 1)."""
    import os

    return max(1, (os.cpu_count() or 1) // max(1, int(n_jobs)))


for _name, _fn in (("run_name", run_name), ("threads_per_job", threads_per_job)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def check_group_overrides(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Fail early, in one sentence, on `group=value` naming a config file that does not exist."""
    chosen: dict[str, list[str]] = {}
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.lstrip("+").split("=", 1)
        if key not in USER_GROUPS or "(" in value:  # sweep functions (range(), choice()) pass
            continue
        values = [v.strip() for v in value.split(",") if v.strip()]
        valid = group_options(key, config_dir)
        for v in values:
            if v not in valid and v != "null":
                raise UserError(
                    f"unknown {key} {v!r}; valid names: {', '.join(valid)} "
                    f"(add configs/{key}/{v}.yaml to define it)"
                )
        chosen[key] = values
    for experiment in chosen.get("experiment", []):
        presets = group_options(f"preset/{experiment}", config_dir)
        for scale in chosen.get("scale", []):
            if scale not in presets:
                raise UserError(
                    f"experiment {experiment!r} has no {scale!r} scale; its scales are "
                    f"{', '.join(presets)} (add configs/preset/{experiment}/{scale}.yaml)"
                )


def _fail(err: UserError) -> None:
    print(f"normlab: error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from normlab.config import validate_config
    from normlab.train.loop import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        validate_config(cfg)
        summary = train(cfg, run_dir)
    except UserError as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # One failing job (a diverged BN Transformer, say) must not stop the rest of a sweep.
            print(f"normlab: job {run_dir} failed: {err}", file=sys.stderr)
            return
        _fail(err)
        return
    status = summary["status"]
    if status == "interrupted":
        print(f"interrupted; rerun the same command to resume from {run_dir}/checkpoints/last.pt")
        sys.exit(143)
    metrics = ", ".join(
        f"{k}={summary[k]:.4g}"
        for k in ("test_acc", "test_loss", "bleu", "sacrebleu", "valid_loss")
        if k in summary
    )
    print(f"{status}: {run_dir} ({metrics}, {summary['steps']} steps, {summary['wall_s']:.0f} s)")


def main() -> None:
    try:
        check_group_overrides(sys.argv[1:])
    except UserError as err:
        _fail(err)
    _hydra_main()


if __name__ == "__main__":
    main()
