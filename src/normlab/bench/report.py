"""The benchmark's numbers turned into results: ratios against their targets, bf16 speed-ups,
the scaling fits, and the markdown tables printed and written next to the JSON."""

from __future__ import annotations

import argparse
import math
import statistics
from typing import Any

from normlab.bench.catalog import BF16, is_image_case


def header(info: dict[str, Any], args: argparse.Namespace) -> str:
    """The tables' first line: the machine (machine.machine()) and the settings measured."""
    bf16 = info.get("cpu_bf16", {})
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}"
        + f" (CPU bf16: AMX {'yes' if bf16.get('amx_bf16') else 'no'}, "
        + f"AVX512-BF16 {'yes' if bf16.get('avx512_bf16') else 'no'}; "
        + f"trainer.amp=auto picks {info.get('auto_precision', '?')})"
        + (f", {info['gpu']}" if "gpu" in info else "")
        + f"; device {args.device}, amp {args.amp}, compile {args.compile}"
        + f"; commit {str(info.get('git_commit'))[:10]}"
    )


def memory(res: dict[str, Any]) -> str:
    """A case's peak memory, as the progress lines print it."""
    out = f"peak RSS {res['peak_rss_mb']:,.0f} MB"
    if "peak_gpu_mb" in res:
        out += f", peak GPU {res['peak_gpu_mb']:,.0f} MB"
    return out


def markdown(results: dict[str, Any], info: dict[str, Any], args: argparse.Namespace) -> str:
    """The cases' medians, the ratios against their targets, and the bf16 speed-ups if any."""
    med = results["median_items_per_s"]
    rss = results["median_peak_rss_mb"]
    gpu = results.get("median_peak_gpu_mb", {})
    lines = [
        header(info, args),
        "",
        "| case | items/s | peak RSS (MB) |" + (" peak GPU (MB) |" if gpu else ""),
        "|---|---|---|" + ("---|" if gpu else ""),
    ]
    for case, v in med.items():
        unit = "img/s" if is_image_case(case) else "tok/s"
        lines.append(
            f"| {case} | {v:,.0f} {unit} | {rss[case]:,.0f} |"
            + (f" {gpu[case]:,.0f} |" if gpu else "")
        )
    lines += ["", "| ratio (float32) | value | target |", "|---|---|---|"]
    for name, (value, target) in results["ratios"].items():
        lines.append(f"| {name} | {value:.3f} | {target} |")
    speedups = precision_speedups(med)
    if speedups:
        lines += [
            "",
            "| case | float32 items/s | bf16 items/s | bf16 speed-up |",
            "|---|---|---|---|",
        ]
        for case, (fp32, bf16, ratio) in speedups.items():
            lines.append(f"| {case} | {fp32:,.0f} | {bf16:,.0f} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def precision_speedups(med: dict[str, float]) -> dict[str, tuple[float, float, float]]:
    """case -> (float32 items/s, bf16 items/s, bf16 / float32) for cases measured both ways."""
    return {
        case: (med[case], med[f"{case}{BF16}"], med[f"{case}{BF16}"] / med[case])
        for case in med
        if f"{case}{BF16}" in med
    }


def ratios(med: dict[str, float]) -> dict[str, tuple[float, str]]:
    """name -> (value, target) for every ratio whose cases were measured (items/s medians)."""
    r = {}

    def add(name, a, b, target):
        if a in med and b in med:
            r[name] = (med[a] / med[b], target)

    add("resnet pipeline / reference loop", "resnet_pipeline", "resnet_reference", ">= 1.3")
    add("resnet pipeline / model-only step", "resnet_pipeline", "resnet_model", ">= 0.9")
    for probe, name, target in (
        ("probe_first", "first layer", "<= 0.03"),
        ("probe_all", "all layers", "<= 0.10"),
    ):
        if probe in med and "resnet_model" in med:
            r[f"probe overhead, {name}"] = (med["resnet_model"] / med[probe] - 1, target)
    if "tf_ln" in med:
        for n in ("tf_bn", "tf_pn"):
            if n in med:
                r[f"{n} step time / tf_ln"] = (med["tf_ln"] / med[n], "<= 1.15")
        add("tf_ln / nn.Transformer reference", "tf_ln", "tf_reference", ">= 1.0")
    if "vit_ln" in med:
        for n in ("vit_bn", "vit_pn"):
            if n in med:
                r[f"{n} step time / vit_ln"] = (med["vit_ln"] / med[n], "<= 1.15")
    if "vit_bn" in med and "vit_probe_all" in med:
        r["probe overhead, ViT all layers"] = (med["vit_bn"] / med["vit_probe_all"] - 1, "<= 0.10")
    return r


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares a, b of y = a + b*x."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def scaling_results(runs: dict[tuple[str, int], list[dict[str, Any]]]) -> dict[str, Any]:
    """Median step time per point, and the fits the cpu scale's budget can be read from."""

    def point(key, name):
        v = runs[key]
        step = statistics.median(x["step_s"] for x in v)
        out = {
            name: key[1],
            "params": v[0]["params"],
            "items_per_step": v[0]["items_per_step"],
            "step_s": step,
            "items_per_s": v[0]["items_per_step"] / step,
            "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in v),
        }
        if "peak_gpu_mb" in v[0]:
            out["peak_gpu_mb"] = statistics.median(x["peak_gpu_mb"] for x in v)
        return out

    resnet = [point(k, "batch") for k in runs if k[0] == "resnet_model"]
    tf = [point(k, "d_model") for k in runs if k[0] == "tf_ln"]
    fit: dict = {}
    if len(resnet) > 1:
        a, b = fit_line([p["batch"] for p in resnet], [p["step_s"] for p in resnet])
        fit["resnet20_step_s"] = {"a_s": a, "b_s_per_image": b, "form": "step_s = a + b * batch"}
    if len(tf) > 1:
        # step time ~ c * params^k: k from the log-log slope over the widths measured
        _, k = fit_line([math.log(p["params"]) for p in tf], [math.log(p["step_s"]) for p in tf])
        fit["transformer_step_s"] = {"k": k, "form": "step_s ~ params^k (same token batch)"}
    return {"resnet20_batch": resnet, "transformer_d_model": tf, "fit": fit}


def scaling_markdown(sc: dict[str, Any], info: dict[str, Any], args: argparse.Namespace) -> str:
    """scaling_results() as tables: ResNet-20 by batch, the Transformer by width, the fits."""
    lines = [
        header(info, args),
        "",
        "| ResNet-20 batch | step (ms) | img/s | ms per image |",
        "|---|---|---|---|",
    ]
    for p in sc["resnet20_batch"]:
        lines.append(
            f"| {p['batch']} | {1e3 * p['step_s']:,.1f} | {p['items_per_s']:,.0f} | "
            f"{1e3 * p['step_s'] / p['batch']:.3f} |"
        )
    tokens = sc["transformer_d_model"][0]["items_per_step"] if sc["transformer_d_model"] else 0
    lines += [
        "",
        f"| Transformer (LN) d_model, {tokens:,} target tokens | params (M) | step (ms) | tok/s |",
        "|---|---|---|---|",
    ]
    for p in sc["transformer_d_model"]:
        lines.append(
            f"| {p['d_model']} | {p['params'] / 1e6:.2f} | {1e3 * p['step_s']:,.1f} | "
            f"{p['items_per_s']:,.0f} |"
        )
    fit = sc["fit"]
    lines.append("")
    if "resnet20_step_s" in fit:
        f = fit["resnet20_step_s"]
        lines.append(
            f"ResNet-20 fit: step = {1e3 * f['a_s']:.1f} ms + {1e3 * f['b_s_per_image']:.3f} ms"
            " x batch"
        )
    if "transformer_step_s" in fit:
        lines.append(f"Transformer fit: step ~ params^{fit['transformer_step_s']['k']:.2f}")
    return "\n".join(lines) + "\n"
