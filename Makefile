# normlab — `make help` lists the targets. Every target sets up .venv itself on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCALE ?= cpu
# Where this team's environment keeps CIFAR-10 (a lossy JPEG copy); elsewhere torchvision downloads it.
SHARED ?= ../shared/data
CIFAR10 ?= $(if $(wildcard $(SHARED)/cifar10-jpeg),data.source=imagefolder data.root=$(SHARED)/cifar10-jpeg,)
# IWSLT14: fairseq's prepared files where this environment has them, else data/iwslt14.tokenized.de-en
# (made by `make data-iwslt14`, which downloads de-en.tgz unless ARCHIVE=path/to/de-en.tgz).
IWSLT14_DIR ?= $(if $(wildcard $(SHARED)/iwslt14/fairseq-reference),$(SHARED)/iwslt14/fairseq-reference,data/iwslt14.tokenized.de-en)
IWSLT14 ?= data.prepared_dir=$(IWSLT14_DIR)
# glibc keeps freed memory instead of returning it page by page: +10-17% step rate on these VMs.
export MALLOC_MMAP_THRESHOLD_ := 1000000000000
export MALLOC_TRIM_THRESHOLD_ := 100000000000

.PHONY: help install test test-slow lint format cifar10 iwslt14 cifar10-vit iwslt14-conv multi30k data-iwslt14 fig-runs fig2 fig3 fig4 fig2-multi30k fig3-multi30k fig4-multi30k fig2-bn-variants fig2x2 table1 table1-multi30k wandb-sync bench bench-probe bench-gpu clean-runs inference-stats export-runs

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: SCALE=smoke|cpu|cpu_long|long|paper (default cpu), NORM=bn|ln|gn|none, SHARED=path to local data"

install: $(STAMP) ## create .venv with the pinned dependencies (idempotent)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

test: install ## fast test suite (< 10 min on 2 cores)
	$(PY) -m pytest -m "not slow" -q

test-slow: install ## the slow tests too
	$(PY) -m pytest -q

lint: install ## ruff check + format check
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: install ## apply ruff format and safe fixes
	$(VENV)/bin/ruff format src tests scripts
	$(VENV)/bin/ruff check --fix src tests scripts

NORM ?= bn
cifar10: install ## train ResNet-20 on CIFAR-10 (NORM=bn|ln|gn|none, SCALE=smoke|cpu|paper)
	$(VENV)/bin/normlab-train experiment=cifar10_resnet20 scale=$(SCALE) norm=$(NORM) $(CIFAR10) $(ARGS)

iwslt14: install ## train a Transformer on IWSLT14 de-en (NORM=ln|bn, SCALE=smoke|cpu|paper)
	$(VENV)/bin/normlab-train experiment=iwslt14_transformer scale=$(SCALE) norm=$(NORM) $(IWSLT14) $(ARGS)

cifar10-vit: install ## train a ViT on CIFAR-10 (NORM=bn|ln|..., SCALE=smoke|cpu|paper)
	$(VENV)/bin/normlab-train experiment=cifar10_vit scale=$(SCALE) norm=$(NORM) $(CIFAR10) $(ARGS)

iwslt14-conv: install ## train the convolutional text encoder on IWSLT14 de-en (NORM=bn|ln|..., SCALE=smoke|cpu|paper)
	$(VENV)/bin/normlab-train experiment=iwslt14_conv scale=$(SCALE) norm=$(NORM) $(IWSLT14) $(ARGS)

MULTI30K ?= $(if $(wildcard $(SHARED)/multi30k),data.dir=$(SHARED)/multi30k,)
multi30k: install ## train the Transformer on Multi30K de-en (NORM=ln|bn|pnv|pn, SCALE=smoke|cpu|paper)
	$(VENV)/bin/normlab-train experiment=multi30k_transformer scale=$(SCALE) norm=$(NORM) $(MULTI30K) $(ARGS)

ARCHIVE ?=
data-iwslt14: install ## prepare IWSLT14 exactly as fairseq's prepare-iwslt14.sh (ARCHIVE=de-en.tgz or download)
	$(PY) scripts/prepare_iwslt14.py $(if $(ARCHIVE),--archive $(ARCHIVE),--download) --out data/iwslt14.tokenized.de-en

# Figure 2 / 3: the two BN runs (reused when complete, resumed when cut off), then the plots.
# NLP_NORM=bn_official: the official code's Transformer_BN as the NLP half, into <scale>_bn_official.
NLP_NORM ?= bn
FIG_DIR = $(SCALE)$(if $(filter-out bn,$(NLP_NORM)),_$(NLP_NORM),)
NLP_LABEL = $(if $(filter bn,$(NLP_NORM)),Transformer_BN,Transformer_$(NLP_NORM))
RUNS_ROOT = $(or $(NORMLAB_RUNS),runs)
FIG_RUNS = --run "ResNet-20 / CIFAR-10=$(RUNS_ROOT)/cifar10_resnet20/$(SCALE)/norm=bn" \
	--run "$(NLP_LABEL) / IWSLT14=$(RUNS_ROOT)/iwslt14_transformer/$(SCALE)/norm=$(NLP_NORM)"
# The two runs are independent, so they train side by side on half the cores each (one thread each on
# 2 cores): the ResNet in the foreground with its progress bar, the Transformer in the background
# with its output in FIG_NLP_LOG. Ctrl-C (or a kill) stops both, each saving its checkpoint.
FIG_THREADS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 1 ? n / 2 : 1 )))
FIG_NLP_LOG ?= $(RUNS_ROOT)/fig-runs-$(SCALE)-$(NLP_NORM).log
fig-runs: install
	@mkdir -p $(dir $(FIG_NLP_LOG))
	@echo "make fig-runs: Transformer_$(NLP_NORM) trains in the background ($(FIG_THREADS) threads), output in $(FIG_NLP_LOG)"
	@$(VENV)/bin/normlab-train experiment=iwslt14_transformer scale=$(SCALE) norm=$(NLP_NORM) $(IWSLT14) \
		trainer.threads=$(FIG_THREADS) trainer.progress=false $(ARGS) > $(FIG_NLP_LOG) 2>&1 & nlp=$$!; \
	trap 'kill -TERM $$nlp 2>/dev/null' INT TERM; \
	$(VENV)/bin/normlab-train experiment=cifar10_resnet20 scale=$(SCALE) norm=bn $(CIFAR10) \
		trainer.threads=$(FIG_THREADS) $(ARGS); image=$$?; \
	wait $$nlp; text=$$?; \
	if [ $$text -ne 0 ]; then echo "make fig-runs: the Transformer run failed (exit $$text); the end of $(FIG_NLP_LOG):" >&2; \
		tail -n 5 $(FIG_NLP_LOG) >&2; fi; \
	[ $$image -eq 0 ] && [ $$text -eq 0 ]

fig2: fig-runs ## Figure 2 (batch vs running statistics) at SCALE into results/fig2/SCALE (NLP_NORM=bn|bn_official)
	$(PY) scripts/plot_batch_stats.py fig2 $(FIG_RUNS) --out results/fig2/$(FIG_DIR)

fig3: fig-runs ## Figure 3 (gradients of the batch statistics) at SCALE into results/fig3/SCALE (NLP_NORM=bn|bn_official)
	$(PY) scripts/plot_batch_stats.py fig3 $(FIG_RUNS) --out results/fig3/$(FIG_DIR)

fig4: install ## BN vs PN-V statistics (Transformer encoder, first layer) at SCALE into results/fig4/SCALE
	$(MAKE) --no-print-directory iwslt14 NORM=bn SCALE=$(SCALE)
	$(MAKE) --no-print-directory iwslt14 NORM=pnv SCALE=$(SCALE)
	$(PY) scripts/plot_batch_stats.py fig4 --run "Transformer_BN=$(RUNS_ROOT)/iwslt14_transformer/$(SCALE)/norm=bn" \
		--run "Transformer_PN-V=$(RUNS_ROOT)/iwslt14_transformer/$(SCALE)/norm=pnv" --out results/fig4/$(SCALE)

# Figures 2-4 with the converged Multi30K Transformers (Table 1's seed-0 runs, trained by
# make table1-multi30k) as the NLP half, read from their committed copies in COMMITTED, next to the
# committed ResNet-20 BN run of the same scale. Nothing is trained here; a missing run is named.
# FIGURES: where results/figN/multi30k_SCALE go (results).
FIGURES ?= results
M30K_RUN = $(COMMITTED)/multi30k_transformer/$(SCALE)/norm=$(1),seed=0
M30K_FIG_RUNS = --run "ResNet-20 / CIFAR-10=$(COMMITTED)/cifar10_resnet20/$(SCALE)/norm=bn" \
	--run "Transformer_BN / Multi30K=$(call M30K_RUN,bn)"
M30K_NEEDS = @for r in $(1); do test -f "$$r/summary.json" || { echo "make $@: $$r has no summary.json; \
	train and export it first (make table1-multi30k / make cifar10 + make export-runs)" >&2; exit 2; }; done
fig2-multi30k fig3-multi30k: install ## Figure 2 / 3 with Multi30K's Transformer_BN (committed runs) into results/fig2|fig3/multi30k_SCALE
	$(call M30K_NEEDS,"$(COMMITTED)/cifar10_resnet20/$(SCALE)/norm=bn" "$(call M30K_RUN,bn)")
	$(PY) scripts/plot_batch_stats.py $(@:-multi30k=) $(M30K_FIG_RUNS) --out $(FIGURES)/$(@:-multi30k=)/multi30k_$(SCALE)

fig4-multi30k: install ## BN vs PN-V (Multi30K, committed seed-0 runs) into results/fig4/multi30k_SCALE
	$(call M30K_NEEDS,"$(call M30K_RUN,bn)" "$(call M30K_RUN,pnv)")
	$(PY) scripts/plot_batch_stats.py fig4 --run "Transformer_BN=$(call M30K_RUN,bn)" \
		--run "Transformer_PN-V=$(call M30K_RUN,pnv)" --out $(FIGURES)/fig4/multi30k_$(SCALE)

# Which of the official Transformer_BN's three differences from our masked BN (LayerScaling,
# mean-filled pads, momentum 0.05) moves Figure 2's distances: six IWSLT14 runs through the committed
# sweep (as table1-multi30k: a run committed in COMMITTED is skipped, one cut off resumes, JOBS at a
# time), then their first BN's window medians against norm=bn's, its seed-1 twin as the yardstick,
# into FIGURES/fig2/SCALE_bn_variants. NOTRAIN=1 trains nothing: it compares the committed copies.
BNV_DIR = $(COMMITTED)/iwslt14_transformer/$(SCALE)
BNV_SWEEP = --variant "norm=bn" --variant "norm=bn seed=1" --variant "norm=bn norm.layer_scaling=true" \
	--variant "norm=bn norm.momentum=0.05" --variant "norm=bn norm.layer_scaling=true norm.momentum=0.05" \
	--variant "norm=bn_official"
# The folders are Hydra's names of the runs above (the sweep names them with normlab.run_dir).
BNV_RUNS = --base "bn=$(BNV_DIR)/norm=bn" --twin "bn seed 1=$(BNV_DIR)/norm=bn,seed=1" \
	--variant "LayerScaling=$(BNV_DIR)/norm.layer_scaling=true,norm=bn" \
	--variant "momentum 0.05=$(BNV_DIR)/norm.momentum=0.05,norm=bn" \
	--variant "LayerScaling+momentum=$(BNV_DIR)/norm.layer_scaling=true,norm.momentum=0.05,norm=bn" \
	--variant "bn_official=$(BNV_DIR)/norm=bn_official" \
	--effect "LayerScaling=LayerScaling/bn" --effect "momentum=momentum 0.05/bn" \
	--effect "pads=bn_official/LayerScaling+momentum"
NOTRAIN ?=
fig2-bn-variants: install ## which of bn_official's differences moves Fig. 2: 6 IWSLT14 runs (committed sweep), then results/fig2/SCALE_bn_variants (NOTRAIN=1: compare the committed runs only)
	$(if $(filter-out 0,$(NOTRAIN)),,$(PY) -m normlab.committed_sweep iwslt14_transformer --scale $(SCALE) \
		$(BNV_SWEEP) --parallel $(JOBS) --runs $(RUNS_ROOT) --committed $(COMMITTED) -- $(IWSLT14) $(ARGS))
	$(PY) scripts/compare_bn_variants.py $(BNV_RUNS) --out $(FIGURES)/fig2/$(SCALE)_bn_variants

# Architecture or data: the four BN runs of {CNN, Transformer} x {images, text} (reused when complete,
# resumed when cut off), then the 2x2 figures, ratio table and verdict. Every experiment must have
# the scale's preset; checked first, so that no run starts when one of the four cannot.
FIG2X2_EXPERIMENTS = cifar10_resnet20 cifar10_vit iwslt14_transformer iwslt14_conv
FIG2X2_RUNS = $(RUNS_ROOT)
fig2x2: install ## ResNet-20 / ViT on CIFAR-10, conv encoder / Transformer on IWSLT14 (BN) at SCALE, 2x2 into results/fig2x2/SCALE
	@for e in $(FIG2X2_EXPERIMENTS); do test -f configs/preset/$$e/$(SCALE).yaml || \
		{ echo "make fig2x2: experiment $$e has no $(SCALE) scale (no configs/preset/$$e/$(SCALE).yaml)" >&2; exit 2; }; done
	$(MAKE) --no-print-directory cifar10 NORM=bn SCALE=$(SCALE)
	$(MAKE) --no-print-directory cifar10-vit NORM=bn SCALE=$(SCALE)
	$(MAKE) --no-print-directory iwslt14 NORM=bn SCALE=$(SCALE)
	$(MAKE) --no-print-directory iwslt14-conv NORM=bn SCALE=$(SCALE)
	$(PY) scripts/plot_fig2x2.py --runs $(FIG2X2_RUNS) --scale $(SCALE) --out results/fig2x2/$(SCALE)

# BN tested with EMA vs population (PreciseBN) vs batch statistics, on the two BN runs (not retrained).
INFERENCE_RUNS = $(RUNS_ROOT)
inference-stats: install ## BN's inference statistics (ema / precise / batch) of the SCALE BN runs into results/inference_stats/SCALE
	$(PY) scripts/inference_stats.py "$(INFERENCE_RUNS)/cifar10_resnet20/$(SCALE)/norm=bn" \
		"$(INFERENCE_RUNS)/iwslt14_transformer/$(SCALE)/norm=bn" --out results/inference_stats/$(SCALE) $(ARGS)

export-runs: install ## copy the two SCALE BN runs' small outputs (no checkpoints) to results/runs/ to commit
	$(PY) scripts/export_run.py runs/cifar10_resnet20/$(SCALE)/norm=bn runs/iwslt14_transformer/$(SCALE)/norm=bn --out results/runs

table1: install ## Table 1: sweep norm=ln,bn,pnv,pn x 3 seeds at SCALE, then results/table1/SCALE
	$(VENV)/bin/normlab-train -m experiment=table1 scale=$(SCALE) $(IWSLT14) $(ARGS)
	$(PY) scripts/make_table1.py runs/table1/$(SCALE) --out results/table1/$(SCALE)

# Table 1 on Multi30K (converged runs): norm x seed, JOBS at a time. Each finished run's small outputs
# are exported to COMMITTED (results/runs/) at once and a committed run is skipped, so the 12 runs
# complete across machines and working periods; the table reads the committed copies.
TABLE1_GRID ?= --grid seed=0,1,2 --grid norm=ln,bn,pnv,pn
JOBS ?= 2
COMMITTED ?= results/runs
TABLE1_OUT ?= results/table1/multi30k_$(SCALE)
table1-multi30k: install ## Table 1 on Multi30K: norm=ln,bn,pnv,pn x 3 seeds at SCALE, resumable across machines, then results/table1/multi30k_SCALE
	$(PY) -m normlab.committed_sweep multi30k_transformer --scale $(SCALE) $(TABLE1_GRID) --parallel $(JOBS) \
		--runs $(RUNS_ROOT) --committed $(COMMITTED) -- $(MULTI30K) $(ARGS)
	$(PY) scripts/make_table1.py $(COMMITTED)/multi30k_transformer/$(SCALE) --data multi30k --out $(TABLE1_OUT)

wandb-sync: install ## upload offline wandb runs under runs/ (lists them when not logged in)
	$(PY) scripts/wandb_sync.py runs

bench: install ## side-by-side throughput vs reference loops (ResNet-20, Transformer), ratios, memory
	$(PY) scripts/bench.py --cifar $(SHARED)/cifar10-jpeg

bench-probe: install ## probe overhead on a ResNet-20 step, side by side (off / first layer / all)
	$(PY) scripts/bench_probe.py --json results/bench/probe.json

bench-gpu: install ## on a GPU (~10 min): bench --device cuda + paper ResNet-20 BN run + its Fig. 2 (DRY=1: CPU check)
	DRY=$(DRY) SHARED=$(SHARED) CIFAR10="$(CIFAR10)" VENV=$(VENV) BENCH_GPU_ARGS="$(BENCH_GPU_ARGS)" \
		$(if $(ARGS),TRAIN_ARGS="$(ARGS)",) bash scripts/bench_gpu.sh

clean-runs: ## delete runs/ (all local results that are not committed)
	rm -rf runs
