"""Run several `normlab-train` command lines in one Python process, as the console script would.

    python tests/cli_batch.py CASES.json RESULTS.json

CASES.json is a list of {"argv": [...], "env": {...}, "watch": [paths]}; RESULTS.json gets one
{"rc", "stdout", "stderr", "unchanged"} per case, "unchanged" telling whether every file and folder
under the watched paths is byte for byte as before the case. Each case calls `normlab.cli.main()` (what the `normlab-train` entry point
runs) with its own argv and environment, stdout and stderr captured at the file-descriptor level,
and an exception that escapes is printed as the interpreter would ("Traceback ..."), so a test sees
what a user's terminal would show. Paying Python's and torch's start-up once per batch instead of
once per command keeps the bad-input battery fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path


def _call_main(argv: list[str], env: dict[str, str]) -> int:
    """`normlab-train ARGV` in this process; the exit status a shell would see."""
    from hydra.core.global_hydra import GlobalHydra

    from normlab import cli

    saved_env, saved_argv = dict(os.environ), sys.argv
    os.environ.update(env)
    sys.argv = ["normlab-train", *argv]
    try:
        cli.main()
        return 0
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter would print, then exit 1
        traceback.print_exc()
        return 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        GlobalHydra.instance().clear()


def digest(paths: list[str]) -> str:
    """A hash of every path under `paths` with its mode and bytes (absent paths count too)."""
    h = hashlib.sha256()
    for root in map(Path, paths):
        for path in sorted([root, *root.rglob("*")]) if root.exists() else [root]:
            h.update(str(path).encode() + b"\0")
            if path.exists():
                h.update(str(path.lstat().st_mode).encode())
                if path.is_file() and not path.is_symlink():
                    h.update(path.read_bytes())
    return h.hexdigest()


def _run(argv: list[str], env: dict[str, str]) -> dict:
    """One case with fd 1 and 2 captured (Hydra, warnings and tqdm write there too)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
        try:
            rc = _call_main(argv, env)
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
    return {"rc": rc, "stdout": texts[0], "stderr": texts[1]}


def main(cases_path: str, results_path: str) -> None:
    with open(cases_path) as f:
        cases = json.load(f)
    results = []
    for case in cases:
        watch = case.get("watch", [])
        before = digest(watch)
        result = _run(case["argv"], case.get("env", {}))
        result["unchanged"] = digest(watch) == before
        results.append(result)
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
