"""Helpers shared by the tests: config composition and a synthetic CIFAR-like image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from normlab.cli import CONFIG_DIR  # also registers the run_name resolver
from normlab.data.cifar10 import CLASSES

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def image_smoke_overrides(image_folder: Path) -> list[str]:
    """A ResNet-20 smoke run on a tiny CIFAR-like image folder, one thread, no progress bar."""
    return [
        "experiment=cifar10_resnet20",
        "scale=smoke",
        "data.source=imagefolder",
        f"data.root={image_folder}",
        "trainer.progress=false",
        "trainer.batch_size=32",
        "trainer.threads=1",
    ]


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


def run_cli_batch(cases: list[dict], env: dict[str, str], prefix: list[str] = ()) -> list[dict]:
    """`normlab-train` command lines (each {"argv": [...], "env": {...}}) run one after the other
    in one Python process (tests/cli_batch.py), optionally inside `prefix` (an `unshare` that mounts
    something first); returns {"rc", "stdout", "stderr"} per case, as a terminal would show them."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cases_path, results_path = os.path.join(tmp, "cases.json"), os.path.join(tmp, "out.json")
        with open(cases_path, "w") as f:
            json.dump(cases, f)
        cmd = [*prefix, sys.executable, str(REPO / "tests" / "cli_batch.py"), cases_path]
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
        proc = subprocess.run(
            [*cmd, results_path], capture_output=True, text=True, cwd=REPO, env=full_env
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(results_path) as f:
            return json.load(f)


def can_unshare() -> bool:
    """Whether this machine lets us make a private mount namespace (user namespaces), in which a
    folder can be mounted read-only or a tiny tmpfs can fill up, for root and non-root alike."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def namespace(read_only: tuple = (), tmpfs: tuple = ()) -> list[str]:
    """A command prefix: a private mount namespace where each folder of `read_only` is mounted
    read-only over itself and each (folder, size) of `tmpfs` is an empty tmpfs of that size."""
    import shlex

    mounts = [f"mount --bind -o ro {shlex.quote(str(p))} {shlex.quote(str(p))}" for p in read_only]
    mounts += [f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(p))}" for p, size in tmpfs]
    return ["unshare", "-Urm", "sh", "-c", " && ".join([*mounts, 'exec "$@"']), "sh"]


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under `roots` with its mode and, for files, its bytes: equal snapshots mean
    nothing was created, deleted or changed."""
    state: dict[str, tuple] = {}
    for root in roots:
        if not root.exists():
            state[str(root)] = ("absent",)
            continue
        for path in sorted([root, *root.rglob("*")]):
            mode = path.lstat().st_mode
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            state[str(path)] = (mode, data)
    return state


# Word-for-word toy languages for raw parallel text: diacritics, ligatures, Greek and Cyrillic.
def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


LEXICON = {
    "fr": _words("élève garçon œuvre naïve château façade où déjà très noël forêt cœur"),
    "el": _words("μαθητής αγόρι έργο αφελής κάστρο πρόσοψη πού ήδη πολύ χριστούγεννα δάσος καρδιά"),
    "ru": _words("ученик мальчик работа наивный замок фасад где уже очень рождество лес сердце"),
    "en": _words("pupil boy work naive castle facade where already very christmas forest heart"),
}


def make_raw_corpus(root: Path, src: str, tgt: str, sizes: dict[str, int], seed: int = 0) -> Path:
    """Raw `{split}.{src,tgt}` text: capitalized sentences with punctuation, untokenized."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        lines = {src: [], tgt: []}
        for _ in range(n):
            idx = rng.integers(0, len(LEXICON["en"]), size=int(rng.integers(3, 9)))
            for lang in (src, tgt):
                words = [LEXICON[lang][i] for i in idx]
                lines[lang].append(" ".join(words).capitalize() + ("?" if idx[0] % 2 else "."))
        for lang in (src, tgt):
            (root / f"{split}.{lang}").write_text("\n".join(lines[lang]) + "\n", encoding="utf-8")
    return root


# Multi30K's layout with toy captions: word-for-word German/English, so that every pair survives
# cleaning and split sizes are exact.
M30K_DE = _words("ein mann eine frau hund spielt im park auf der straße mit einem ball")
M30K_EN = _words("a man a woman dog plays in the park on the street with a ball")


def write_gz(path: Path, lines: list[str]) -> None:
    """Lines, each ended by "\\n", gzipped (UTF-8)."""
    import gzip

    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))


def make_multi30k_like(folder: Path, sizes: dict[str, int]) -> Path:
    """`{stem}.{de,en}.gz` with `sizes[stem]` capitalized toy caption pairs each (stems as
    Multi30K's: train, val, test_2016_flickr, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, (stem, n) in enumerate(sizes.items()):
        rows = [[(i * 7 + j * 3 + k) % len(M30K_DE) for j in range(3 + i % 6)] for i in range(n)]
        for lang, words in (("de", M30K_DE), ("en", M30K_EN)):
            lines = [" ".join(words[w] for w in row).capitalize() + "." for row in rows]
            write_gz(folder / f"{stem}.{lang}.gz", lines)
    return folder


TOKEN_PAD, TOKEN_EOS, TOKEN_VOCAB = 1, 2, 40


def token_batch(lengths: list[int], width: int, seed: int, left: bool = False) -> torch.Tensor:
    """Rows of random real tokens (ids 4..TOKEN_VOCAB-1) ending in EOS, padded to `width`."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full((len(lengths), width), TOKEN_PAD)
    for i, n in enumerate(lengths):
        ids = torch.randint(4, TOKEN_VOCAB, (n - 1,), generator=g)
        row = torch.cat([ids, torch.tensor([TOKEN_EOS])])
        if left:
            out[i, width - n :] = row
        else:
            out[i, :n] = row
    return out


def assert_cached_decoding_matches(model: torch.nn.Module, src_lengths: list[int]) -> None:
    """Decoding step by step with the cache gives the full decoder's outputs, position by
    position, and so does each step recomputed without a cache."""
    src, prev = token_batch(src_lengths, 6, 0), token_batch([6] * len(src_lengths), 6, 1)
    enc, cache = model.encode(src), model.new_cache()
    full = model.decode(prev, enc)
    for t in range(1, 7):
        step = model.decode_step(prev[:, :t], enc, cache)
        torch.testing.assert_close(step, full[:, t - 1], rtol=0, atol=1e-5)
        torch.testing.assert_close(step, model.decode_step(prev[:, :t], enc), rtol=0, atol=1e-5)
    assert cache.steps == 6
