"""Probe rows on disk: one row per (step, layer), Parquet parts in the run's `probe/` folder.

Rows are buffered and written as a new part file (atomically) at every checkpoint and every
`flush_every` steps, so nothing is rewritten. On resume, parts holding steps after the checkpoint
are cut back, and the folder reads as if the run had never stopped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from normlab.io_utils import atomic_write

PART_GLOB = "part-*.parquet"


def plain_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with each tensor value replaced by the Python number `.item()` would give, copied
    from each device in one transfer: every copy from a GPU waits for it, so one wait for all the
    numbers of many steps instead of one per number.

    The numbers travel as float64, which holds every float32/float16/bfloat16 value and every
    integer below 2**53 exactly; integer and bool tensors come back as int and bool.
    """
    out = [dict(r) for r in rows]
    slots: dict[torch.device, list[tuple[dict[str, Any], str, torch.Tensor]]] = {}
    for row in out:
        for key, value in row.items():
            if isinstance(value, torch.Tensor):
                slots.setdefault(value.device, []).append((row, key, value.detach()))
    for device, items in slots.items():
        if device.type == "mps":  # no float64 there: one copy per number, as before
            values = [t.item() for _, _, t in items]
        else:
            values = torch.stack([t.reshape(()).double() for _, _, t in items]).tolist()
        for (row, key, t), value in zip(items, values, strict=True):
            if t.dtype == torch.bool:
                row[key] = bool(value)
            elif not t.dtype.is_floating_point:
                row[key] = int(value)
            else:
                row[key] = value
    return out


class ProbeStore:
    def __init__(self, folder: str | Path, flush_every: int = 1000) -> None:
        self.folder = Path(folder)
        self.flush_every = flush_every
        self.rows: list[Mapping[str, Any]] = []

    def add(self, rows: list[Mapping[str, Any]]) -> None:
        self.rows.extend(rows)
        if self.rows and self.rows[-1]["step"] - self.rows[0]["step"] >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        records = plain_rows(self.rows)
        columns = sorted({k for r in records for k in r})
        table = pa.table({c: [r.get(c, math.nan) for r in records] for c in columns})
        first, last = records[0]["step"], records[-1]["step"]
        path = self.folder / f"part-{first:010d}-{last:010d}.parquet"
        atomic_write(path, lambda f: pq.write_table(table, f))
        self.rows = []

    def truncate_after(self, step: int) -> None:
        """Drop every stored row with a step greater than `step` (resume from a checkpoint)."""
        self.rows = [r for r in self.rows if r["step"] <= step]
        for part in sorted(self.folder.glob(PART_GLOB)):
            first, last = (int(s) for s in part.stem.split("-")[1:3])
            if first > step:
                part.unlink()
            elif last > step:
                table = pq.read_table(part)
                kept = table.filter(pa.compute.less_equal(table["step"], step))
                new = part.with_name(f"part-{first:010d}-{step:010d}.parquet")
                atomic_write(new, lambda f, t=kept: pq.write_table(t, f))
                part.unlink()


def read_probe(run_dir: str | Path, rank: int = 0) -> pa.Table:
    """Every probe row of a run, in step order (a pyarrow Table; `.to_pandas()` for pandas).

    `rank`: of a multi-process run with per-rank BN statistics, that rank's own rows."""
    folder = Path(run_dir) / "probe"
    parts = sorted((folder / f"rank{rank}" if rank else folder).glob(PART_GLOB))
    if not parts:
        raise FileNotFoundError(f"{run_dir} has no probe data (probe/{PART_GLOB})")
    tables = [pq.read_table(p) for p in parts]
    return pa.concat_tables(tables, promote_options="default")


def probe_layers(run_dir: str | Path) -> list[tuple[str, str]]:
    """(layer, kind) of every layer in a run's probe rows, in the model's order (`layer_index`);
    the names are the layers' module names, as logged to wandb (`probe/<layer>/<column>`). Reads
    only those columns; [] when the run has no probe rows yet."""
    parts = sorted((Path(run_dir) / "probe").glob(PART_GLOB))
    columns = ["layer", "layer_index", "kind"]
    seen: dict[str, tuple[int, str]] = {}
    for part in parts:
        for row in pq.read_table(part, columns=columns).group_by(columns).aggregate([]).to_pylist():
            seen.setdefault(row["layer"], (row["layer_index"], row["kind"]))
    return [(name, kind) for name, (_, kind) in sorted(seen.items(), key=lambda item: item[1][0])]
