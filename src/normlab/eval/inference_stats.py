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

import contextlib
import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.errors import UserError
from normlab.io_utils import atomic_write_json, atomic_write_text
from normlab.norms.masked_batchnorm import MaskedBatchNorm

MODES = ("ema", "precise", "batch")
MIN_VALUES = 100_000  # default values per feature for the population statistics
TABLE_METRICS = ("test_acc", "test_loss", "valid_loss", "bleu", "sacrebleu")
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def bn_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every BN-family layer that keeps running statistics, in module order:
    PyTorch's BatchNorm (1d/2d/3d, SyncBatchNorm) and normlab's masked sequence BN."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm | MaskedBatchNorm) and m.running_mean is not None
    ]


def _pad_mask(args: tuple, kwargs: dict) -> torch.Tensor | None:
    return kwargs.get("pad_mask", args[1] if len(args) > 1 else None)


def _statistic_rows(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """The (N, C) matrix a layer's batch statistics run over: for the masked BN its real tokens
    (after its layer scaling, if on); for PyTorch's BN every position, features on dim 1."""
    x = args[0]
    if isinstance(module, MaskedBatchNorm):
        return module.statistic_inputs(x, _pad_mask(args, kwargs))
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _batch_forward(module: nn.Module) -> Callable[..., torch.Tensor]:
    own_forward = type(module).forward

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        # The layer's own training-mode forward, so its statistics are exactly training's (pads
        # masked, layer scaling, float32), on scratch copies of its buffers so that the running
        # update it makes is thrown away. `training` is set here, per call, because evaluators
        # (beam search, evaluate_classifier) call model.eval() themselves.
        saved = {k: getattr(module, k) for k in _BUFFERS}
        was_training = module.training
        for k, v in saved.items():
            if v is not None:
                setattr(module, k, v.clone())
        module.training = True
        try:
            return own_forward(module, *args, **kwargs)
        finally:
            module.training = was_training
            for k, v in saved.items():
                setattr(module, k, v)

    return forward


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[list[str]]:
    """Within: every BN-family layer normalizes each batch with that batch's own statistics (pads
    left out) and leaves its running buffers untouched; every other module is in eval mode, and
    stays so whatever an evaluator does with model.eval(). Yields the names of the BN layers."""
    was_training = model.training
    layers = bn_layers(model)
    model.eval()
    for _, m in layers:
        m.forward = _batch_forward(m)  # an instance attribute shadows the class's forward
    try:
        yield [name for name, _ in layers]
    finally:
        for _, m in layers:
            m.__dict__.pop("forward", None)
        model.train(was_training)


@dataclass(frozen=True)
class PopulationStats:
    mean: torch.Tensor  # float64, per feature
    var: torch.Tensor  # float64, biased (divided by count)
    count: int  # values per feature


def collect_population_stats(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[Any], Any] | None = None,
    *,
    max_batches: int | None = None,
    min_values: int | None = None,
) -> tuple[dict[str, PopulationStats], int]:
    """Population mean and biased variance of every BN-family layer's input over `batches`, with
    the model in `batch_statistics` mode (BN on batch statistics as in training, no dropout).

    `forward(batch)` runs the model on a batch (default `model(batch)`). It stops after
    `max_batches`, or once every layer has `min_values` values per feature, or when `batches` ends.
    Returns the statistics by layer name and the number of batches used.
    """
    forward = model if forward is None else forward
    layers = bn_layers(model)
    sums: dict[str, list] = {}  # name -> [Σx, Σx², n], float64

    def accumulate(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            rows = _statistic_rows(module, args, kwargs).detach().double()
            s = sums.setdefault(name, [0.0, 0.0, 0])
            s[0] = s[0] + rows.sum(0)
            s[1] = s[1] + (rows * rows).sum(0)
            s[2] += rows.shape[0]

        return hook

    handles = [m.register_forward_pre_hook(accumulate(n), with_kwargs=True) for n, m in layers]
    used = 0
    try:
        with batch_statistics(model), torch.no_grad():
            for batch in batches:
                forward(batch)
                used += 1
                if max_batches is not None and used >= max_batches:
                    break
                complete = len(sums) == len(layers)
                if (
                    min_values is not None
                    and complete
                    and min(s[2] for s in sums.values()) >= min_values
                ):
                    break
    finally:
        for h in handles:
            h.remove()
    unseen = [name for name, _ in layers if name not in sums]
    if unseen:
        raise ValueError(f"BN layers {unseen} saw no input in {used} batches")
    stats = {}
    for name, (s1, s2, n) in sums.items():
        mean = s1 / n
        stats[name] = PopulationStats(mean, (s2 / n - mean * mean).clamp_min(0), n)
    return stats, used


@torch.no_grad()
def install_population_stats(model: nn.Module, stats: dict[str, PopulationStats]) -> None:
    """Make `stats` the running statistics of the model's BN-family layers."""
    for name, m in bn_layers(model):
        m.running_mean.copy_(stats[name].mean.to(m.running_mean.dtype))
        # The *biased* population variance: in eval mode BN divides by √(running_var + ε) as it
        # is, and in training it divides by the biased variance of the positions it normalizes,
        # so the biased variance of the population is the matching quantity. (PyTorch's EMA stores
        # unbiased batch variances because a batch is a small sample; here the n ≥ 10⁵ positions
        # are the population measured, and n/(n−1) would change it by < 10⁻⁵ anyway.)
        m.running_var.copy_(stats[name].var.to(m.running_var.dtype))


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{k}": getattr(m, k).clone()
        for name, m in bn_layers(model)
        for k in _BUFFERS
        if getattr(m, k, None) is not None
    }


@torch.no_grad()
def _restore(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    for name, m in bn_layers(model):
        for k in _BUFFERS:
            if f"{name}.{k}" in saved:
                getattr(m, k).copy_(saved[f"{name}.{k}"])


def _ema_vs_population(model: nn.Module, stats: dict[str, PopulationStats]) -> dict[str, Any]:
    """Per layer, how far the EMA statistics sit from the population's: the probe's D_μ and D_σ²
    ((1/d)‖·‖₂) and the scale-free mean_c |σ²_ema/σ²_pop − 1|."""
    out = {}
    for name, m in bn_layers(model):
        mu, var = m.running_mean.double(), m.running_var.double()
        pop = stats[name]
        d = mu.numel()
        out[name] = {
            "mean_dist": float((mu - pop.mean).norm() / d),
            "var_dist": float((var - pop.var).norm() / d),
            "var_rel": float((var / pop.var.clamp_min(1e-30) - 1).abs().mean()),
        }
    return out


def _values_per_batch(module: nn.Module, args: tuple, kwargs: dict) -> int:
    x, mask = args[0], _pad_mask(args, kwargs)
    if isinstance(module, MaskedBatchNorm):
        return int(x.shape[0] * x.shape[1]) if mask is None else int((~mask).sum())
    return x.numel() // x.shape[1]


# ------------------------------------------------------------------------------ a run's results
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
    saved = _buffers(model)
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
        counts.append(_values_per_batch(module, args, kwargs))

    hook = bn_layers(model)[0][1].register_forward_pre_hook(count, with_kwargs=True)
    try:
        with batch_statistics(model):
            metrics = task.evaluate_final()
    finally:
        hook.remove()
    changed = [k for k, v in _buffers(model).items() if not torch.equal(v, saved[k])]
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
    gaps = _ema_vs_population(model, stats)
    install_population_stats(model, stats)
    try:
        metrics = task.evaluate_final()
    finally:
        _restore(model, saved)  # the other modes see the run's own running statistics
    return {
        "statistics": f"population of {used} training batches (>= {fewest:,} values per feature)",
        "batches": used,
        "min_values_per_feature": fewest,
        "source": "the training loop's batches from epoch 0 (its shuffle and augmentation, "
        "seeded by the run's seed), BN on batch statistics, no dropout",
        "ema_vs_population": gaps,
        **metrics,
    }


# ------------------------------------------------------------------------------ storing results
def record_in_summary(result: dict[str, Any]) -> None:
    """Store a run's result in its summary.json under `inference_stats` (atomic rewrite)."""
    path = Path(result["run_dir"]) / "summary.json"
    summary = json.loads(path.read_text())
    summary["inference_stats"] = {k: v for k, v in result.items() if k != "run_dir"}
    atomic_write_json(path, summary)


def _cell(metric: str, value: Any) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    if metric.endswith("_acc"):
        return f"{100 * value:.2f}%"
    if metric.endswith("_loss"):
        return f"{value:.4f}"
    return f"{value:.2f}"


def table_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run, mode) of the runs that were not skipped."""
    rows = []
    for r in results:
        for mode, entry in r.get("modes", {}).items():
            row = {k: r[k] for k in ("experiment", "scale", "norm", "run_dir", "weights")}
            row |= {"mode": mode, "statistics": entry["statistics"]}
            row |= {m: entry.get(m) for m in TABLE_METRICS}
            rows.append(row)
    return rows


def to_markdown(results: Sequence[dict[str, Any]]) -> str:
    rows = table_rows(results)
    metrics = [m for m in TABLE_METRICS if any(r[m] is not None for r in rows)]
    head = ["run", "mode", "statistics", *metrics]
    lines = [
        "# BN's inference statistics: EMA vs population (PreciseBN) vs batch",
        "",
        "The weights each run was tested with, evaluated with BN's running (EMA) statistics, with",
        "population statistics recomputed over training batches, and with each evaluation batch's",
        "own statistics (dropout off). Made by `make inference-stats` (scripts/inference_stats.py).",
        "A Transformer's valid loss is of its checkpoint average (the weights BLEU is tested with),",
        "so it differs from the valid loss of the run's last epoch in its summary.json.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = [row["experiment"], row["mode"], row["statistics"]]
        cells += [_cell(m, row[m]) for m in metrics]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    for r in results:
        if "skipped" in r:
            lines.append(f"- {r['run_dir']}: {r['skipped']}")
            continue
        line = f"- {r['experiment']} ({r['run_dir']}): weights {r['weights']}"
        gaps = r["modes"].get("precise", {}).get("ema_vs_population")
        if gaps:
            worst = max(gaps, key=lambda k: gaps[k]["var_rel"])
            line += (
                f"; largest EMA vs population variance gap: {worst}, "
                f"mean |σ²_ema/σ²_pop − 1| = {gaps[worst]['var_rel']:.3g}"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def to_csv(results: Sequence[dict[str, Any]]) -> str:
    rows = table_rows(results)
    buf = io.StringIO()
    fields = ["experiment", "scale", "norm", "mode", "statistics", *TABLE_METRICS]
    writer = csv.DictWriter(buf, [*fields, "weights", "run_dir"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_results(
    results: Sequence[dict[str, Any]], out_dir: str | Path, wall_s: float, command: list[str]
) -> Path:
    """table.md, table.csv and provenance.json (code, hardware, runs, wall time) in `out_dir`."""
    from normlab.tracking.provenance import environment, git_info

    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "table.md", to_markdown(results))
    atomic_write_text(out_dir / "table.csv", to_csv(results))
    device = next((r["device"] for r in results if "device" in r), "cpu")
    runs = []
    for r in results:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        keep = ("git_commit", "git_dirty", "data_source", "data_detail", "scale", "steps")
        keep += ("wall_s", "device", "cpu", "gpu", "torch", "config")
        runs.append(
            {"run_dir": r["run_dir"], "weights": r.get("weights"), "skipped": r.get("skipped")}
            | {"run_" + k if k == "wall_s" else k: summary.get(k) for k in keep}
        )
    atomic_write_json(
        out_dir / "provenance.json",
        {
            "made_with": git_info() | {"env": environment(device)},
            "command": command,
            "wall_s": round(wall_s, 2),
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runs": runs,
        },
    )
    return out_dir
