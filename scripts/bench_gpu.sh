#!/usr/bin/env bash
# `make bench-gpu`: on one CUDA GPU (about 10 minutes on an H100-class card),
#   1. scripts/bench.py --device cuda --size paper --amp bf16: images/s, tokens/s, peak memory
#      -> results/bench/bench_gpu.{json,md}
#   2. the paper-scale ResNet-20 / CIFAR-10 BN run (160 epochs, batch-statistics probe on, bf16
#      autocast) -> runs/cifar10_resnet20/paper/norm=bn,trainer.amp=bf16 (resumed if cut off,
#      skipped if complete)
#   3. its Figure 2 statistics (the paper-scale ResNet-20 half) -> results/fig2/paper_resnet
# DRY=1 checks the same sequence on the CPU: bench.py --dry-run, 20 training steps and the figure,
# both into a fresh temporary folder (nothing under runs/ or results/ is written).
#
# Environment: VENV (.venv), SHARED (../shared/data), CIFAR10 (Hydra data overrides; default: the
# JPEG copy under SHARED when present, else torchvision's download), AMP (bf16; empty: fp32),
# BENCH_GPU_ARGS (more bench.py options, e.g. "--rounds 1 --compile"), TRAIN_ARGS (more Hydra
# overrides for the run, e.g. "probe.layers=first"; `make bench-gpu ARGS=...`), RUN_DIR (default:
# the directory training names from these overrides: `python -m normlab.run_dir`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=$VENV/bin/python
SHARED=${SHARED:-../shared/data}
AMP=${AMP-bf16}
if [[ -z ${CIFAR10+set} ]]; then
    CIFAR10=""
    [[ -d $SHARED/cifar10-jpeg ]] && CIFAR10="data.source=imagefolder data.root=$SHARED/cifar10-jpeg"
fi
read -r -a cifar10 <<<"$CIFAR10"
read -r -a bench_extra <<<"${BENCH_GPU_ARGS:-}"
# The probe on the first BN layer (Figure 2's) by default: all 19 layers every step would make the
# 62,560 tiny steps launch-bound (~17-20 min estimated on an H100, over the 10-minute budget).
read -r -a train_extra <<<"${TRAIN_ARGS-probe.layers=first}"
amp_bench=() amp_train=()
if [[ -n $AMP ]]; then
    amp_bench=(--amp "$AMP")
    amp_train=("trainer.amp=$AMP")
fi

if [[ ${DRY:-0} != 0 ]]; then
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/normlab-bench-gpu-dry.XXXXXX")
    device=cpu
    bench_mode=(--dry-run --device cpu)
    run_dir=$tmp/run
    fig_out=$tmp/fig2
    train_mode=(device=cpu trainer.max_steps=20)
    echo "bench-gpu DRY=1: the code path on the CPU, a few steps each, into $tmp"
else
    device=cuda
    bench_mode=(--device cuda)
    run_dir=${RUN_DIR:-}
    fig_out=results/fig2/paper_resnet
    train_mode=(device=cuda)
fi
train=(experiment=cifar10_resnet20 scale=paper norm=bn "${train_mode[@]}" "${amp_train[@]}"
    trainer.progress=false "${cifar10[@]}" "${train_extra[@]}")
if [[ -z $run_dir ]]; then
    # Named as training names it (normlab.run_dir composes the config as Hydra does), TRAIN_ARGS
    # included: e.g. runs/cifar10_resnet20/paper/norm=bn,probe.layers=first,trainer.amp=bf16.
    run_dir=$("$PY" -m normlab.run_dir "${train[@]}")
fi

t0=$SECONDS
"$PY" scripts/bench.py "${bench_mode[@]}" --size paper "${amp_bench[@]}" \
    --cifar "$SHARED/cifar10-jpeg" --json results/bench/bench_gpu.json "${bench_extra[@]}"
t1=$SECONDS
# The run directory is given (quoted for Hydra: it holds '=' and ','), so the figure reads the one
# trained, RUN_DIR's or DRY=1's too.
"$VENV/bin/normlab-train" "${train[@]}" "hydra.run.dir='$run_dir'"
t2=$SECONDS
"$PY" scripts/plot_batch_stats.py fig2 --run "ResNet-20 / CIFAR-10=$run_dir" --out "$fig_out"
t3=$SECONDS
echo "bench-gpu ($device): bench $((t1 - t0)) s, training $((t2 - t1)) s, figure $((t3 - t2)) s," \
    "total $((t3 - t0)) s; run $run_dir, figure $fig_out"
