"""A grid of runs that completes across machines and working periods.

A study such as Table 1 (4 norms x 3 seeds) outlasts one working period, and the next period may
be on a fresh machine without the last one's runs/. So every finished run's small outputs are
exported at once under a committed folder (results/runs/<experiment>/<scale>/<name>/), and a run
whose committed summary exists is skipped. The others train `parallel` at a time, each on
`threads` threads (two runs with one thread each use a 2-core machine best), each resuming its own
checkpoint if it was cut off on this machine.

    python -m normlab.committed_sweep multi30k_transformer --scale cpu \
        --grid norm=ln,bn,pnv,pn --grid seed=0,1,2 --parallel 2 -- data.dir=...

--grid gives every combination of its values; --variant "norm=bn norm.momentum=0.05" one run with
exactly those overrides (repeatable), for a set of runs that is no product. Both may be combined.
A run's name is the folder `normlab-train` with the same overrides writes into (normlab.run_dir).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from normlab.errors import UserError
from normlab.run_dir import run_dir
from normlab.tracking.run_export import export_run


@dataclass(frozen=True)
class Job:
    name: str  # the run folder's name, as Hydra names it (hydra_job)
    overrides: tuple[str, ...]


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values or "" in values.split(","):
            raise UserError(
                f"--grid {spec!r} is not KEY=V1,V2,...; write e.g. --grid norm=ln,bn,pnv,pn"
            )
        if key in grid:
            raise UserError(f"--grid names {key!r} twice; give each key's values once")
        grid[key] = values.split(",")
    return grid


def hydra_job(experiment: str, scale: str, overrides: Sequence[str]) -> Job:
    """One run, named by Hydra itself: normlab.run_dir composes the config and reads the folder, so
    the committed copy sits under the name `normlab-train` with the same overrides would use (its
    rule sorts the whole `key=value` strings, which puts `norm.momentum=...` before `norm=...`)."""
    from normlab.cli import check_group_overrides

    argv = [f"experiment={experiment}", f"scale={scale}", *overrides]
    check_group_overrides(argv)  # an unknown norm=... in one sentence, before Hydra's longer one
    return Job(run_dir(argv).name, tuple(overrides))


def grid_jobs(grid: dict[str, list[str]], experiment: str, scale: str) -> list[Job]:
    """Every combination, in the grid's order (the first key varies slowest)."""
    jobs = []
    for values in itertools.product(*grid.values()):
        pairs = sorted(zip(grid, values, strict=True))
        jobs.append(hydra_job(experiment, scale, [f"{k}={v}" for k, v in pairs]))
    return jobs


def variant_jobs(specs: list[str], experiment: str, scale: str) -> list[Job]:
    """One job per --variant, its overrides split as a shell would ("a=1 b='x y'")."""
    jobs = []
    for spec in specs:
        try:
            overrides = shlex.split(spec)
        except ValueError:  # an unclosed quote
            overrides = []
        if not overrides or not all("=" in o for o in overrides):
            raise UserError(
                f"--variant {spec!r} is not a list of KEY=VALUE overrides; write e.g. "
                '--variant "norm=bn norm.momentum=0.05"'
            )
        jobs.append(hydra_job(experiment, scale, overrides))
    return jobs


def all_jobs(grid: list[str], variants: list[str], experiment: str, scale: str) -> list[Job]:
    """The grid's jobs, then the variants'; the same run asked for twice is refused."""
    if not grid and not variants:
        raise UserError('give the runs with --grid KEY=V1,V2 and/or --variant "KEY=V KEY=V"')
    jobs = grid_jobs(parse_grid(grid), experiment, scale) if grid else []
    jobs += variant_jobs(variants, experiment, scale)
    seen: set[str] = set()
    for j in jobs:
        if j.name in seen:
            raise UserError(f"the run {j.name!r} is asked for twice; give each run once")
        seen.add(j.name)
    return jobs


def committed(job: Job, committed_dir: Path) -> bool:
    summary = committed_dir / job.name / "summary.json"
    return summary.exists() and json.loads(summary.read_text()).get("status") == "complete"


def _train_command(experiment: str, scale: str, job: Job, run_dir: Path, threads: int) -> list[str]:
    exe = Path(sys.executable).with_name("normlab-train")
    return [
        str(exe) if exe.exists() else "normlab-train",
        f"experiment={experiment}",
        f"scale={scale}",
        *job.overrides,
        f"hydra.run.dir={run_dir}",
        f"trainer.threads={threads}",
        "trainer.progress=false",
    ]


def run_grid(
    experiment: str,
    scale: str,
    jobs: list[Job],
    extra: list[str],
    runs_dir: Path,
    committed_dir: Path,
    parallel: int,
    threads: int,
) -> int:
    """Train the jobs not yet committed, `parallel` at a time; export each as it completes.
    Returns the number of jobs that failed."""
    todo = [j for j in jobs if not committed(j, committed_dir)]
    for j in jobs:
        if j not in todo:
            print(f"{j.name}: committed in {committed_dir / j.name}, skipped", flush=True)
    running: dict[subprocess.Popen, tuple[Job, Path, float]] = {}
    failed = 0

    def stop_all(signum: int, _frame: object) -> None:
        for proc in running:
            proc.send_signal(signal.SIGTERM)  # each saves its checkpoint and exits
        for proc in running:
            proc.wait()
        print("sweep stopped; rerun the same command to resume", flush=True)
        sys.exit(128 + signum)

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while todo or running:
            while todo and len(running) < parallel:
                job = todo.pop(0)
                run_dir = runs_dir / job.name
                log = runs_dir / f"{job.name}.log"
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                cmd = _train_command(experiment, scale, job, run_dir, threads) + extra
                with open(log, "a") as out:
                    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
                running[proc] = (job, log, time.time())
                print(f"{job.name}: training (log: {log})", flush=True)
            time.sleep(1.0)
            for proc in [p for p in running if p.poll() is not None]:
                job, log, started = running.pop(proc)
                minutes = (time.time() - started) / 60
                if proc.returncode != 0:
                    failed += 1
                    print(
                        f"{job.name}: FAILED (exit {proc.returncode}) after {minutes:.1f} min; "
                        f"see {log}",
                        flush=True,
                    )
                    continue
                dest = export_run(runs_dir / job.name, committed_dir / job.name)
                print(f"{job.name}: complete in {minutes:.1f} min, exported to {dest}", flush=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return failed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    ap = argparse.ArgumentParser(
        prog="committed_sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("experiment")
    ap.add_argument("--scale", required=True)
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar='"KEY=V KEY=V"',
        help="one run with exactly these overrides (repeatable)",
    )
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time (default 2)")
    ap.add_argument(
        "--threads", type=int, default=None, help="threads per run (default cores/parallel)"
    )
    ap.add_argument("--runs", default=os.environ.get("NORMLAB_RUNS", "runs"))
    ap.add_argument("--committed", default="results/runs", help="where finished runs are exported")
    args = ap.parse_args(argv)
    try:
        if args.parallel < 1:
            raise UserError(f"--parallel {args.parallel} must be at least 1")
        jobs = all_jobs(args.grid, args.variant, args.experiment, args.scale)
    except UserError as err:
        print(f"committed_sweep: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - Hydra refuses an override (unknown key, bad value)
        message = " ".join(str(err).split())
        print(f"committed_sweep: error: {message}", file=sys.stderr)
        return 2
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.parallel)
    where = Path(args.experiment) / args.scale
    failed = run_grid(
        args.experiment,
        args.scale,
        jobs,
        extra,
        Path(args.runs) / where,
        Path(args.committed) / where,
        args.parallel,
        threads,
    )
    if failed:
        print(f"committed_sweep: {failed} of {len(jobs)} runs failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
