"""Helpers shared by the tests: config composition and a synthetic CIFAR-like image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from normlab.cli import CONFIG_DIR  # also registers the run_name resolver
from normlab.data.cifar10 import CLASSES

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def make_image_folder(
    root: Path, per_class: dict[str, int], suffix: str = ".png", seed: int = 0
) -> Path:
    """CIFAR layout with easy images: each class has its own colour plus noise, so a model learns."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for label, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            base = np.array([(label * 25) % 256, (label * 70) % 256, (255 - label * 25) % 256])
            for i in range(n):
                img = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}{suffix}")
    return root


def make_fairseq_layout(root: Path, pairs: dict[str, int], seed: int = 0) -> Path:
    """A tiny fairseq-layout folder ({split}.de/.en, BPE'd text): a word-for-word toy language
    pair, so a small Transformer learns something in seconds."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)]
    root.mkdir(parents=True, exist_ok=True)
    for split, n in pairs.items():
        src, tgt = [], []
        for _ in range(n):
            sent = rng.choice(words, size=int(rng.integers(3, 12)))
            src.append(" ".join(f"{w[:2]}@@ {w[2:]}" if len(w) > 2 else w for w in sent))
            tgt.append(" ".join(f"x{w[1:]}" for w in sent))
        (root / f"{split}.de").write_text("\n".join(src) + "\n")
        (root / f"{split}.en").write_text("\n".join(tgt) + "\n")
    return root


def run_smoke_sweep(image_folder: Path, runs: Path, *overrides: str):
    """`normlab-train -m` at smoke scale on the synthetic image folder, in a subprocess, with the
    run tree under `runs`; returns the CompletedProcess (stdout/stderr as text)."""
    import os
    import subprocess
    import sys

    cmd = [
        sys.executable, "-m", "normlab.train", "-m", "scale=smoke", "data.source=imagefolder",
        f"data.root={image_folder}", "trainer.progress=false", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "NORMLAB_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
