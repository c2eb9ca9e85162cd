"""BN's inference statistics: one trained BN model tested with three sets of statistics.

Wang et al. (NeurIPS 2022) argue that BN fails in NLP because the statistics it is tested with (the
EMA running statistics) differ from those it trained with (each batch's own). To test that directly,
the weights a run was tested with are evaluated by the run's own task (test accuracy and loss; valid
loss, beam search and BLEU) in three modes:

- `ema`: the running statistics, as BN is always tested;
- `precise`: population statistics of those weights ("PreciseBN", Wu & Johnson 2021): one pass over
  training batches with every BN layer normalizing by its batch's statistics, as in training, and
  every other module in eval mode (no dropout), summing per feature Σx and Σx² over every real
  (non-pad) position in float64; mean Σx/n and biased variance Σx²/n − mean² become running_mean and
  running_var, then the model is evaluated as in `ema`;
- `batch`: every BN layer normalizes each evaluation batch with that batch's own statistics (pads
  left out), dropout off, running buffers untouched. (A BN layer in a Transformer's decoder, in the
  BN-everywhere variant, sees during beam search one new token per live hypothesis per step: its
  batch statistics are those tokens'.)

`evaluate_inference_modes(run_dir)` does this for a finished run; `record_in_summary` and
`write_results` store it (summary.json's `inference_stats`, and a table with its provenance).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from normlab.errors import UserError
from normlab.eval.bn_statistics import (
    batch_statistics,
    bn_buffers,
    bn_layers,
    collect_population_stats,
    ema_vs_population,
    install_population_stats,
    restore_bn_buffers,
    values_per_batch,
)
from normlab.io_utils import atomic_write_json

MODES = ("ema", "precise", "batch")
MIN_VALUES = 100_000  # default values per feature for the population statistics


def check_run(run_dir: str | Path) -> dict[str, Any]:
    """The summary of a complete run in `run_dir`, or a UserError saying what is missing."""
    run_dir = Path(run_dir)
    retrain = "train it first (make cifar10 NORM=bn or make iwslt14 NORM=bn, with the same SCALE)"
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; {retrain}")
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise UserError(
            f"{run_dir} holds no finished run (no summary.json: still training or cut off); "
            "rerun its training command to finish it"
        )
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{summary_path} is not valid JSON; rerun its training command") from None
    if summary.get("status") != "complete":
        raise UserError(
            f"{run_dir} is not a complete run (summary.json has status={summary.get('status')!r}); "
            "rerun its training command to finish it"
        )
    for needed in ("config.yaml", "checkpoints/last.pt"):
        if not (run_dir / needed).exists():
            raise UserError(f"{run_dir} has no {needed}; {retrain} in a new run directory")
    return summary


def check_options(modes: Sequence[str], batches: int | None) -> None:
    """A UserError for a mode that does not exist or a number of batches below 1."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        what = f"unknown mode {unknown[0]!r}" if unknown else "no mode given"
        raise UserError(f"{what}; choose modes from {', '.join(MODES)}")
    if batches is not None and batches < 1:
        raise UserError(f"batches={batches} is not a number of training batches; give 1 or more")


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} was asked for but no CUDA GPU is visible; use cpu")
    return torch.device(name)


def _training_batches(task: Any, max_batches: int | None) -> Iterator[Any]:
    """The training loop's batches from epoch 0 (its shuffle and augmentation, seeded by the run's
    seed): one epoch at most by default, as many epochs as `max_batches` needs otherwise."""
    epoch = 0
    while True:
        empty = True
        for batch in task.train_batches(epoch, 0):
            empty = False
            yield batch
        epoch += 1
        if empty or max_batches is None:
            return


def evaluate_inference_modes(
    run_dir: str | Path,
    modes: Sequence[str] = MODES,
    batches: int | None = None,
    *,
    min_values: int = MIN_VALUES,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate the weights a finished run was tested with, in each of `modes` (see the module's
    docstring). `batches`: training batches for `precise` (default: enough for `min_values`
    values per feature in every BN layer, at most one epoch). A model without BN layers that keep
    running statistics gives {"skipped": reason}."""
    from omegaconf import OmegaConf

    # Tasks own evaluation (the loop calls task.evaluate and task.finalize): build the run's.
    from normlab.train.tasks import TASKS

    check_options(modes, batches)
    run_dir = Path(run_dir)
    summary = check_run(run_dir)
    t0 = time.perf_counter()
    cfg = OmegaConf.load(run_dir / "config.yaml")
    dev = _device(device)
    task = TASKS.get(str(cfg.task))(cfg, dev)
    model = task.model
    info: dict[str, Any] = {
        "run_dir": str(run_dir),
        "experiment": summary.get("experiment"),
        "scale": summary.get("scale"),
        "norm": str(cfg.norm.name),
    }
    layers = bn_layers(model)
    if not layers:
        if str(cfg.norm.name) in ("pn", "pnv"):
            why = (
                "PowerNorm keeps a running quadratic mean (running_phi), not BN's mean and variance"
            )
        else:
            why = "the model has no BN layer with running statistics"
        return info | {"skipped": f"norm={cfg.norm.name}: {why}; nothing to compare, skipped"}
    info["weights"] = task.load_final_weights(run_dir)
    saved = bn_buffers(model)
    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        t = time.perf_counter()
        if mode == "ema":
            entry = {"statistics": f"EMA running statistics (momentum {layers[0][1].momentum})"}
            entry |= task.evaluate_final()
        elif mode == "batch":
            entry = _batch_mode(task, saved)
        else:
            entry = _precise_mode(task, saved, batches, min_values)
        entry["wall_s"] = round(time.perf_counter() - t, 2)
        results[mode] = entry
    return info | {
        "modes": results,
        "device": str(dev),
        "wall_s": round(time.perf_counter() - t0, 2),
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _batch_mode(task: Any, saved: dict[str, torch.Tensor]) -> dict[str, Any]:
    model = task.model
    counts: list[int] = []  # how many values per feature the first BN layer normalized with

    def count(module: nn.Module, args: tuple, kwargs: dict) -> None:
        counts.append(values_per_batch(module, args, kwargs))

    hook = bn_layers(model)[0][1].register_forward_pre_hook(count, with_kwargs=True)
    try:
        with batch_statistics(model):
            metrics = task.evaluate_final(batch_statistics=True)
    finally:
        hook.remove()
    changed = [k for k, v in bn_buffers(model).items() if not torch.equal(v, saved[k])]
    if changed:  # a bug here would silently mix two modes: refuse to report them
        raise RuntimeError(f"batch mode changed the running buffers {changed}")
    return {
        "statistics": "each evaluation batch's own",
        "first_layer_values_per_batch": {
            "min": min(counts),
            "mean": round(sum(counts) / len(counts), 1),
            "max": max(counts),
            "batches": len(counts),
        },
        **metrics,
    }


def _precise_mode(
    task: Any, saved: dict[str, torch.Tensor], batches: int | None, min_values: int
) -> dict[str, Any]:
    model = task.model
    stats, used = collect_population_stats(
        model,
        _training_batches(task, batches),
        task.train_loss,  # the task's training forward; its loss is not used
        max_batches=batches,
        min_values=None if batches is not None else min_values,
    )
    fewest = min(s.count for s in stats.values())
    gaps = ema_vs_population(model, stats)
    install_population_stats(model, stats)
    try:
        metrics = task.evaluate_final()
    finally:
        restore_bn_buffers(model, saved)  # the other modes see the run's own running statistics
    return {
        "statistics": f"population of {used} training batches (>= {fewest:,} values per feature)",
        "batches": used,
        "min_values_per_feature": fewest,
        "source": "the training loop's batches from epoch 0 (its shuffle and augmentation, "
        "seeded by the run's seed), BN on batch statistics, no dropout",
        "ema_vs_population": gaps,
        **metrics,
    }


def record_in_summary(result: dict[str, Any]) -> None:
    """Store a run's result in its summary.json under `inference_stats` (atomic rewrite)."""
    path = Path(result["run_dir"]) / "summary.json"
    summary = json.loads(path.read_text())
    summary["inference_stats"] = {k: v for k, v in result.items() if k != "run_dir"}
    atomic_write_json(path, summary)
