"""Shared plotting plumbing: a headless pyplot, the run colours, and PNG+SVG saved atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from normlab.io_utils import atomic_write

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (figures are made on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path_stem: Path) -> None:
    """<path_stem>.png (150 dpi) and .svg, each written whole or not at all."""
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150)
        atomic_write(path_stem.with_suffix(f".{ext}"), lambda f, b=buf: f.write(b.getvalue()))
