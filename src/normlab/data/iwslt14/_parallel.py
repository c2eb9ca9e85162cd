"""Map a line-transforming task over chunks of lines in worker processes, keeping line order.

Tokenizing and BPE-encoding IWSLT14's 160k training pairs is embarrassingly parallel per line.
Workers are started with "spawn", not "fork": the caller may hold torch or Arrow threads, and a
forked child of a threaded process can deadlock; a hang is worse than the few hundred milliseconds
a fresh worker needs to import sacremoses. One `Workers` pool serves every step of a preparation
run, so that start-up is paid once. Small inputs run inline, where starting processes would cost
more than it saves.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tqdm import tqdm

from normlab.errors import UserError

Task = Callable[[Sequence[str]], list[str]]

MIN_LINES_PER_WORKER = 5000  # below this a worker's start-up outweighs its share of the work
INLINE_CHUNK = 10_000  # inline, chunks only pace the progress bar


def default_workers() -> int:
    """min(4, CPU count): beyond a few workers the single-threaded BPE learning dominates."""
    return max(1, min(4, os.cpu_count() or 1))


class Workers:
    """Up to `n` worker processes, started on first use and shut down on exit."""

    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.n, mp_context=context)
        return self._pool

    def map(
        self,
        task: Task,
        lines: Sequence[str],
        *,
        desc: str | None = None,
        min_lines_per_worker: int | None = None,
    ) -> list[str]:
        """`task(lines)`, computed chunk by chunk; the output keeps the input's line order.

        With `desc`, a progress bar (lines/s) is shown on a terminal; it stays silent otherwise.
        """
        per_worker = MIN_LINES_PER_WORKER if min_lines_per_worker is None else min_lines_per_worker
        parallel = min(self.n, len(lines) // max(1, per_worker)) > 1
        # A few chunks per worker balance the load without much pickling overhead.
        size = -(-len(lines) // (4 * self.n)) if parallel else INLINE_CHUNK
        chunks = [lines[i : i + size] for i in range(0, len(lines), size)]
        out: list[str] = []
        with tqdm(total=len(lines), desc=desc, unit="lines", disable=None if desc else True) as bar:
            if not parallel:
                for chunk in chunks:
                    out.extend(task(chunk))
                    bar.update(len(chunk))
                return out
            try:
                futures: list[Future[list[str]]] = [
                    self._executor().submit(task, chunk) for chunk in chunks
                ]
                for future in futures:
                    result = future.result()
                    out.extend(result)
                    bar.update(len(result))
            except BrokenProcessPool:
                raise UserError(
                    "a worker process stopped unexpectedly (out of memory, or a script that calls "
                    "this without `if __name__ == '__main__':`); rerun with workers=1 "
                    "(--workers 1) or guard the script's entry point."
                ) from None
        return out


@contextlib.contextmanager
def as_workers(workers: int | Workers) -> Iterator[Workers]:
    """Use a caller's pool as is, or a temporary one for an int."""
    if isinstance(workers, Workers):
        yield workers
    else:
        with Workers(workers) as pool:
            yield pool


def map_chunks(
    task: Task,
    lines: Sequence[str],
    *,
    workers: int | Workers = 1,
    desc: str | None = None,
    min_lines_per_worker: int | None = None,
) -> list[str]:
    """`task(lines)` in up to `workers` processes (or in the given pool); order is kept."""
    with as_workers(workers) as pool:
        return pool.map(task, lines, desc=desc, min_lines_per_worker=min_lines_per_worker)
