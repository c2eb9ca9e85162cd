"""The run directory a training command would use, found the way training finds it.

    python -m normlab.run_dir experiment=cifar10_resnet20 scale=paper norm=bn trainer.amp=bf16
    runs/cifar10_resnet20/paper/norm=bn,trainer.amp=bf16

Hydra names a run by configs/hydra/default.yaml's `hydra.run.dir`: NORMLAB_RUNS (or runs/), the
experiment and scale, then the overrides as Hydra's override_dirname (sorted, joined by ','),
less normlab.config.run_name_exclusions(), through normlab.cli.run_name. This composes that config
with the given overrides, as normlab.launch.preflight does before a run, and reads the path, so a
script that needs the name (scripts/bench_gpu.sh) never spells the rule out again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from normlab.errors import UserError


def run_dir(overrides: Sequence[str]) -> Path:
    """The directory `normlab-train <overrides>` (one run, not a --multirun) would write into."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from normlab.cli import CONFIG_DIR  # also registers the run_name resolvers
    from normlab.launch import quote_path_overrides

    argv = quote_path_overrides(list(overrides))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=argv, return_hydra_config=True)
    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    hydra_config.set_config(cfg)  # what ${hydra:...} in hydra.run.dir reads
    try:
        return Path(str(cfg.hydra.run.dir))
    finally:
        hydra_config.cfg = before


def main(argv: list[str] | None = None) -> int:
    """Print the run directory of the overrides in `argv`; 2 and one sentence if they are wrong."""
    from normlab.cli import check_group_overrides

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    if any(a.startswith("-") for a in argv):
        print(
            "usage: python -m normlab.run_dir KEY=VALUE ... (the overrides of one normlab-train "
            "run); prints its run directory",
            file=sys.stderr,
        )
        return 2
    try:
        check_group_overrides(argv)
        path = run_dir(argv)
    except UserError as err:
        print(f"run_dir: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - Hydra's own refusal (syntax, a sweep), in one line
        message = " ".join(str(err).split())
        print(f"run_dir: error: {message}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
