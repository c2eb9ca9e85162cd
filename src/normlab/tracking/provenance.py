"""What produced a result: git commit and dirty flag, software versions, hardware."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any


def git_info(cwd: str | os.PathLike | None = None) -> dict[str, Any]:
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                # results/ holds outputs (figures, tables, exported runs), not code: a figure
                # rewriting its own tracked files does not make the code that made it dirty.
                ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)"]
                + [":(top,exclude)results"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The feature flags /proc/cpuinfo lists for the first core (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_capability(flags: set[str] | None = None) -> dict[str, bool]:
    """Which bfloat16 instructions the CPU has: AMX tiles (amx_bf16: fast bf16 matmuls) and
    AVX512-BF16 (avx512_bf16: dot-product instructions only)."""
    flags = cpu_flags() if flags is None else flags
    return {"amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}


def environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_bf16_capability(),
        "torch_threads": torch.get_num_threads(),
        "hostname": platform.node(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def now() -> str:
    """The local time as the run's records write it (ISO 8601 with the UTC offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run_provenance(git_segments: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """summary.json's provenance: when the run finished, the commit and dirty flag it started from
    (git_info() plus its start time, one entry per segment: resuming adds one) and the machine."""
    return {
        "finished_at": now(),
        **{k: git_segments[0][k] for k in ("git_commit", "git_dirty")},
        "git_segments": git_segments,
        **environment(device),
    }
