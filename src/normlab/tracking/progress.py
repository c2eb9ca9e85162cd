"""The progress bar a training run shows: steps, and every 10 steps its epoch, loss and speed."""

from __future__ import annotations

import time
from typing import Any

from tqdm import tqdm


class ProgressBar:
    def __init__(
        self, setting: Any, total: int, initial: int, show: bool, desc: str, unit: str
    ) -> None:
        """`setting`: trainer.progress (auto: only on a terminal | true | false); `show`: whether
        this process may show one at all (rank 0); `unit`: what the speed counts (img, tok)."""
        off = None if setting in ("auto", None) else not bool(setting)  # None: tqdm asks the tty
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="step",
            disable=off or not show,
            dynamic_ncols=True,
            desc=desc,
        )
        self.unit = unit
        self.new_epoch()

    def new_epoch(self) -> None:
        """The speed shown is the current epoch's (a resumed epoch's from where it resumed)."""
        self.t0, self.n0 = time.perf_counter(), 0

    def step(self, step: int, epoch: int, loss: float | None, items: int) -> None:
        """`loss`: the newest loss the host has, which lags the step by up to trainer.sync_every-1
        steps (the bar never waits for the device); None before the first one arrives."""
        self.n0 += items
        self.bar.update(1)
        if step % 10 == 0 or step == self.bar.total:
            rate = self.n0 / max(time.perf_counter() - self.t0, 1e-9)
            shown = "" if loss is None else f" loss {loss:.3f}"
            self.bar.set_postfix_str(f"ep {epoch}{shown} {rate:.0f} {self.unit}/s")

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()
