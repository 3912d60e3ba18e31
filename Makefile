# rsjax: two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
REF_VENV ?= .venv-ref
MG_VENV ?= .venv-mg
PY := $(VENV)/bin/python
PARITY_DIR ?= build/parity
# pip on this kind of machine warns about every missing local index; keep the real messages.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
# Exact versions live in lock files only (pyproject.toml declares ranges): LOCK for .venv, and
# REF_LOCK for the reference-only stack of the timm parity checks (torch, timm: never an rsjax
# dependency). LOWEST: pyproject.toml's base dependencies at their lower bounds.
LOCK := requirements/lock.txt
REF_LOCK := requirements/reference-lock.txt
# MG_LOCK: TF Model Garden (tf-models-official) for the 3D ResNet fixture, installed without
# dependency resolution (the package pins far more than its backbones import).
MG_LOCK := requirements/mg-reference-lock.txt
COMPAT_VENV ?= build/venv-compat
LOWEST = $$($(PYTHON) -c 'import tomllib; print(" ".join(r.replace(">=", "==") for r in \
  tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')

FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_DIR ?= runs/demo
# XLA:CPU frees and re-faults every step's buffers; jemalloc (or glibc's huge pages where it is
# missing) keeps them (rsjax/malloc_tuning.py). The rsjax command sets this up itself; pytest runs
# in-process, so the Makefile does it there.
PYTEST = env $$($(PY) -m rsjax.malloc_tuning) $(PY) -m pytest

.PHONY: help venv jemalloc shellcheck test test-slow parity parity-slow lint format demo fixtures fixtures-3d fashion-mnist clean lock compat

help:
	@echo "make demo         create $(VENV), install rsjax, run a 12-run Fashion-MNIST sweep, collect, plot Figure 3, report"
	@echo "make test         create $(VENV) if needed (and install libjemalloc2 and shellcheck when root) and run the default test suite"
	@echo "make test-slow    the second tier: kill/resume subprocesses, 8-device sharding, notebooks,"
	@echo "                  mock ImageNet, checkpoint fallback, the models-only wheel (CI runs both tiers)"
	@echo "make parity       live timm comparison for resnetrs50 and tf_efficientnet_b0 (creates $(REF_VENV) with torch)"
	@echo "make parity-slow  the same for resnetrs50, resnetrs152, tf_efficientnet_b0 and b3"
	@echo "make compat       the model tests in a models-only install at the lowest declared jax/flax/numpy"
	@echo "make lock         write $(VENV)'s versions to $(LOCK) (after make test passes with them)"
	@echo "make lint         ruff check"
	@echo "make fixtures     regenerate the timm fixtures in tests/fixtures/ with timm"
	@echo "make fixtures-3d  regenerate the Model Garden 3D ResNet fixture (creates $(MG_VENV))"

# The locked set plus rsjax itself (editable, every extra): pip fails if pyproject's ranges and the
# lock disagree, and tests/test_packaging.py checks that nothing outside the lock got in.
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$$(grep '^pip==' $(LOCK))" 2>&1 | $(QUIET_PIP)
	$(VENV)/bin/pip install -q -r $(LOCK) -e '.[all,test]' 2>&1 | $(QUIET_PIP)
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

# The TPU startup script is checked with shellcheck (tests/test_slices.py), from apt when root.
shellcheck:
	@if ! command -v shellcheck >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck; \
	  else echo "the tests need shellcheck: sudo apt-get install shellcheck"; exit 1; fi; \
	fi

test: venv jemalloc shellcheck
	$(PYTEST) -q

test-slow: venv jemalloc
	$(PYTEST) -q -m slow

$(REF_VENV)/.installed: $(REF_LOCK)
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/pip install -q -r $(REF_LOCK) 2>&1 | $(QUIET_PIP)
	touch $@

# After changing versions in a working .venv (and passing make test): write them to the lock.
lock: venv
	{ sed -n '/^#/p' $(LOCK); $(VENV)/bin/pip freeze --all --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

# The built wheel without extras in a fresh venv at the lowest jax/flax/numpy pyproject.toml
# declares, running the model tests against the installed wheel (the venv's pytest, so the
# checkout is not on sys.path first). The newest versions are the lock's: make test runs them, and
# tests/test_packaging.py installs the wheel models-only at those.
MODEL_TESTS := tests/test_batch_norm.py tests/test_conv.py tests/test_convert.py \
  tests/test_efficientnet.py tests/test_models.py tests/test_models_only.py tests/test_profiling.py \
  tests/test_scan_remat.py tests/test_resnet3d.py
compat:
	rm -rf $(COMPAT_VENV) build/wheel
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install -q "$$(grep '^pip==' $(LOCK))" 2>&1 | $(QUIET_PIP)
	$(COMPAT_VENV)/bin/pip wheel -q --no-deps -w build/wheel . 2>&1 | $(QUIET_PIP)
	$(COMPAT_VENV)/bin/pip install -q build/wheel/rsjax-*.whl $(LOWEST) \
	  "$$(grep '^pytest==' $(LOCK))" 2>&1 | $(QUIET_PIP)
	$(COMPAT_VENV)/bin/pip list 2>/dev/null | grep -E '^(jax|jaxlib|flax|numpy) '
	RSJAX_EXPECT_INSTALLED=1 $(COMPAT_VENV)/bin/pytest -q -p no:cacheprovider \
	  --import-mode=append $(MODEL_TESTS)

PARITY_MODELS ?= resnetrs50 tf_efficientnet_b0
parity: venv $(REF_VENV)/.installed
	mkdir -p $(PARITY_DIR)
	refs=""; for m in $(PARITY_MODELS); do \
	  $(REF_VENV)/bin/python tests/parity/timm_reference.py --model $$m --out $(PARITY_DIR)/$$m.npz; \
	  refs="$${refs}$(PARITY_DIR)/$$m.npz,"; \
	done; \
	RSJAX_TIMM_REFERENCES=$${refs} $(PYTEST) -q -s -m parity tests/test_timm_parity.py

parity-slow:
	$(MAKE) parity PARITY_MODELS="resnetrs50 resnetrs152 tf_efficientnet_b0 tf_efficientnet_b3"

fixtures: $(REF_VENV)/.installed
	$(REF_VENV)/bin/python tests/parity/timm_reference.py --tiny --out tests/fixtures/timm_tiny_resnetrs.npz
	$(REF_VENV)/bin/python tests/parity/timm_reference.py --tiny tiny_scan \
	  --out tests/fixtures/timm_tiny_scan_resnetrs.npz
	for size in even odd; do $(REF_VENV)/bin/python tests/parity/timm_reference.py \
	  --tiny tiny_efficientnet_$$size --out tests/fixtures/timm_tiny_efficientnet_$$size.npz; done

$(MG_VENV)/.installed: $(MG_LOCK)
	$(PYTHON) -m venv $(MG_VENV)
	$(MG_VENV)/bin/pip install -q --no-deps -r $(MG_LOCK) 2>&1 | $(QUIET_PIP)
	touch $@

fixtures-3d: $(MG_VENV)/.installed
	$(MG_VENV)/bin/python tests/parity/mg_resnet3d_reference.py \
	  --out tests/fixtures/mg_tiny_resnet3d.npz --params

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
