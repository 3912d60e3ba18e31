# rsjax: two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
REF_VENV ?= .venv-ref
PY := $(VENV)/bin/python
PARITY_DIR ?= build/parity
# pip on this kind of machine warns about every missing local index; keep the real messages.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
# Reference-only stack for timm parity (never an rsjax dependency). torch 2.13.0's CPU wheel
# cannot import PyPI's torchvision, which timm imports; this pair installs and runs on CPU.
REF_REQUIREMENTS := torch==2.14.1 torchvision==0.29.1 timm==1.0.31 numpy==2.4.6

FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_DIR ?= runs/demo
# XLA:CPU frees and re-faults every step's buffers; jemalloc (or glibc's huge pages where it is
# missing) keeps them (rsjax/malloc_tuning.py). The rsjax command sets this up itself; pytest runs
# in-process, so the Makefile does it there.
PYTEST = env $$($(PY) -m rsjax.malloc_tuning) $(PY) -m pytest

.PHONY: help venv jemalloc test test-slow parity parity-slow lint format demo fixtures fashion-mnist clean

help:
	@echo "make demo         create $(VENV), install rsjax, run a 12-run Fashion-MNIST sweep, collect, plot Figure 3, report"
	@echo "make test         create $(VENV) if needed (and install libjemalloc2 when root) and run the default test suite"
	@echo "make test-slow    the second tier: kill/resume subprocesses, 8-device sharding, notebooks,"
	@echo "                  mock ImageNet, checkpoint fallback (CI runs both tiers)"
	@echo "make parity       live timm comparison for resnetrs50 (creates $(REF_VENV) with torch)"
	@echo "make parity-slow  the same for resnetrs50 and resnetrs152"
	@echo "make lint         ruff check"
	@echo "make fixtures     regenerate the timm fixtures in tests/fixtures/ with timm"

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(VENV)/bin/pip install -q -e '.[test]' 2>&1 | $(QUIET_PIP)
	touch $@

venv: $(VENV)/.installed

# The allocator the rsjax command preloads on CPU (optional: glibc with huge pages otherwise);
# where it is looked for is rsjax.malloc_tuning.find_jemalloc's business.
jemalloc: venv
	@if ! $(PY) -c 'import sys; from rsjax.malloc_tuning import find_jemalloc; sys.exit(find_jemalloc() is None)'; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2; } \
	      || echo "libjemalloc2 not installed: rsjax falls back to glibc malloc with huge pages"; \
	  else echo "optional, faster CPU steps: sudo apt-get install libjemalloc2"; fi; \
	fi

test: venv jemalloc
	$(PYTEST) -q

test-slow: venv jemalloc
	$(PYTEST) -q -m slow

$(REF_VENV)/.installed:
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/pip install -q $(REF_REQUIREMENTS) 2>&1 | $(QUIET_PIP)
	touch $@

PARITY_MODELS ?= resnetrs50
parity: venv $(REF_VENV)/.installed
	mkdir -p $(PARITY_DIR)
	refs=""; for m in $(PARITY_MODELS); do \
	  $(REF_VENV)/bin/python tests/parity/timm_reference.py --model $$m --out $(PARITY_DIR)/$$m.npz; \
	  refs="$${refs}$(PARITY_DIR)/$$m.npz,"; \
	done; \
	RSJAX_TIMM_REFERENCES=$${refs} $(PYTEST) -q -s -m parity tests/test_timm_parity.py

parity-slow:
	$(MAKE) parity PARITY_MODELS="resnetrs50 resnetrs152"

fixtures: $(REF_VENV)/.installed
	$(REF_VENV)/bin/python tests/parity/timm_reference.py --tiny --out tests/fixtures/timm_tiny_resnetrs.npz
	$(REF_VENV)/bin/python tests/parity/timm_reference.py --tiny tiny_scan \
	  --out tests/fixtures/timm_tiny_scan_resnetrs.npz

lint: venv
	$(VENV)/bin/ruff check .

format: venv
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

# Real data for the demo and the CPU-scale studies: Debian's dataset-fashion-mnist.
fashion-mnist:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST is missing: sudo apt-get install dataset-fashion-mnist"; exit 1; fi; \
	fi

# The main job at CPU scale: a 12-run Figure 3 sweep on Fashion-MNIST (a rerun skips finished
# runs), one results table, the Figure 3 grid and the scaling report.
demo: venv jemalloc fashion-mnist
	$(VENV)/bin/rsjax sweep launch sweeps/fmnist_fig3.py:demo --workdir $(DEMO_DIR) --launcher local
	$(VENV)/bin/rsjax results collect $(DEMO_DIR) -o $(DEMO_DIR)/results.csv
	$(VENV)/bin/rsjax plot fig3 $(DEMO_DIR)/results.csv --out $(DEMO_DIR)/figures
	$(VENV)/bin/rsjax results report $(DEMO_DIR)/results.csv | tee $(DEMO_DIR)/report.txt
	@echo "demo: runs (result.json, metrics.jsonl, TensorBoard) in $(DEMO_DIR)/<run>/; table $(DEMO_DIR)/results.csv;"
	@echo "      figures $(DEMO_DIR)/figures/fig3.png and .pdf; report $(DEMO_DIR)/report.txt"

clean:
	rm -rf build .pytest_cache
