"""`normlab-train` / `python -m normlab.train`: the Hydra entry point.

Before Hydra composes anything, the command line is checked, so a mistake fails in one sentence
before any job is launched: a `group=value` naming no file in configs/ (`norm=bnn`), a key that no
config has (`trainer.epochz=1,2`), and a launcher that cannot start (`launcher=slurm` without the
submitit plugin, or without a partition). Then `normlab.launch` checks the run itself (its config's
values, its run directory) before Hydra writes anything, and runs the job.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import itertools
import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from normlab.config import run_name_exclusions
from normlab.errors import UserError


def _config_dir() -> Path:
    """The Hydra configs: the copy a wheel ships inside the package (`pip install .`, see
    setup.py), else the checkout's top-level configs/ (an editable install, `make install`)."""
    here = Path(__file__).resolve().parent
    packaged = here / "configs"
    return packaged if packaged.is_dir() else here.parents[1] / "configs"


CONFIG_DIR = _config_dir()
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

    return max(1, (os.cpu_count() or 1) // max(1, int(n_jobs)))


# run_name_exclusions: configs/hydra/default.yaml's `exclude_keys`, from normlab.config's one list
# of keys that do not change a run (the checkpoint comparison uses the same list).
for _name, _fn in (
    ("run_name", run_name),
    ("threads_per_job", threads_per_job),
    ("run_name_exclusions", run_name_exclusions),
):
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


def _is_multirun(argv: list[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in argv)


def parse_overrides(argv: list[str]) -> list | None:
    """Hydra's own parse of the `key=value` arguments; None if Hydra would reject them anyway."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    try:
        return OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra reports it with its own message
        return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


SUBMITIT_MODULES = ("submitit", "hydra_plugins.hydra_submitit_launcher")


def check_launcher(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """A submitit launcher (launcher=slurm, submitit_local) needs its plugin, and in a --multirun
    every `???` of its file (SLURM's partition) set on the command line."""
    given = {
        o.key_or_group
        for o in parse_overrides(argv) or []
        if not o.is_delete() and o.key_or_group.startswith("hydra.launcher.")
    }
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key != "launcher" or "(" in value:
            continue
        for name in [v.strip() for v in value.split(",") if v.strip()]:
            path = config_dir / "launcher" / f"{name}.yaml"
            if not path.exists():
                continue  # check_group_overrides names the valid launchers
            file = OmegaConf.load(path)
            uses_submitit = "submitit" in str(file.get("defaults", []))
            if uses_submitit and not all(_importable(m) for m in SUBMITIT_MODULES):
                raise UserError(
                    f"launcher={name} needs the submitit launcher plugin, which is not installed; "
                    "install it with `pip install hydra-submitit-launcher` (it brings submitit)"
                )
            launcher = OmegaConf.select(file, "hydra.launcher")
            if not _is_multirun(argv) or launcher is None:
                continue
            for field in launcher:
                setting = f"hydra.launcher.{field}"
                if OmegaConf.is_missing(launcher, field) and setting not in given:
                    raise UserError(
                        f"launcher={name} needs a {field}; add {setting}=<your {field}> to the "
                        f"command line (or set it in configs/launcher/{name}.yaml)"
                    )


def _config_paths(cfg: DictConfig) -> set[str]:
    """Every dotted key of a composed config, intermediate nodes included."""
    paths: set[str] = set()

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                paths.add(prefix + str(k))
                walk(v, f"{prefix}{k}.")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return paths


def nearest_keys(key: str, paths: set[str], n: int = 3) -> list[str]:
    """Valid keys most like `key`: a similar name beside it (`trainer.epochz` finds
    `trainer.epochs`), else the same name elsewhere (`epochs` finds `trainer.epochs`), else the
    keys beside it (at most 8)."""

    def last(path: str) -> str:
        return path.rpartition(".")[2]

    parent = key.rpartition(".")[0]
    while parent and parent not in paths:
        parent = parent.rpartition(".")[0]
    prefix = f"{parent}." if parent else ""
    siblings = sorted(p for p in paths if p.startswith(prefix) and "." not in p[len(prefix) :])
    near = [prefix + m for m in difflib.get_close_matches(last(key), map(last, siblings), n, 0.6)]
    if not near:
        names = difflib.get_close_matches(last(key), sorted({last(p) for p in paths}), 1, 0.8)
        near = sorted(p for p in paths if names and last(p) == names[0])[:n]
    return near or siblings[:8]


def check_override_keys(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Fail early, in one sentence, on `key=value` (a sweep too) naming a key no config has.

    The config is composed once per chosen value of each config group (the other groups at their
    first value), so a key that only some norm or experiment has passes; Hydra itself reports a
    job whose combination lacks it.
    """
    overrides = parse_overrides(argv)
    if overrides is None or any(a.startswith(("-cn", "--config", "-cp", "-cd")) for a in argv):
        return
    groups: dict[str, list[str]] = {}
    keys: list[str] = []
    for o in overrides:
        key = o.key_or_group
        if o.is_add() or o.is_force_add() or o.is_delete() or o.package or "/" in key:
            continue  # `+key` adds a key, `~key` deletes one, `hydra/x=` picks a Hydra plugin
        if key == "hydra" or key.startswith("hydra."):
            continue  # Hydra's own settings: Hydra checks them
        if (config_dir / key).is_dir():
            try:
                values = (
                    list(o.sweep_string_iterator())
                    if o.is_sweep_override()
                    else [o.get_value_element_as_str()]
                )
            except Exception:  # noqa: BLE001 - glob() etc.: cannot tell which configs apply
                return
            groups[key] = values
        else:
            keys.append(key)
    if not keys:
        return
    from hydra import compose, initialize_config_dir

    base = {g: v[0] for g, v in groups.items()}
    choices = [base] + [base | {g: v} for g, vs in groups.items() for v in vs[1:]]
    paths: set[str] = set()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            for choice in itertools.islice(choices, 32):
                overrides = [f"{g}={v}" for g, v in choice.items()]
                paths |= _config_paths(compose(config_name="train", overrides=overrides))
    except Exception:  # noqa: BLE001 - Hydra reports whatever keeps it from composing
        return
    for key in keys:
        if key in paths:
            continue
        if key.startswith("launcher."):
            hint = f"a launcher's settings are Hydra's: write hydra.{key}=..."
        else:
            hint = f"nearest valid keys: {', '.join(nearest_keys(key, paths))}"
        raise UserError(f"no config key {key!r} to set; {hint} (or +{key}=... to add a new key)")


def _fail(err: UserError) -> None:
    print(f"normlab: error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from normlab.launch import report, run_job, shown, storage_error

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        try:
            summary = run_job(cfg, run_dir)
        except OSError as os_err:
            err = storage_error(os_err, run_dir)
            if err is None:
                raise
            raise err from None
    except UserError as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # One failing job (a diverged BN Transformer, say) must not stop the rest of a sweep.
            print(f"normlab: job {shown(run_dir)} failed: {err}", file=sys.stderr)
            return
        _fail(err)
        return
    if summary is None:
        return
    if summary["status"] == "interrupted":
        ckpt = shown(run_dir / "checkpoints" / "last.pt")
        print(f"interrupted; rerun the same command to resume from {ckpt}")
        sys.exit(143)
    report(summary, run_dir)


def main() -> None:
    from normlab.launch import check_sweep_writable, preflight, quote_path_overrides

    argv = quote_path_overrides(sys.argv[1:])
    sys.argv[1:] = argv  # what Hydra parses
    try:
        check_group_overrides(argv)
        check_launcher(argv)
        check_override_keys(argv)
        if _is_multirun(argv):
            check_sweep_writable(argv)
        elif preflight(argv):
            return
    except UserError as err:
        _fail(err)
    _hydra_main()


if __name__ == "__main__":
    main()
