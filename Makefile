# Fine-tune Chinese BERT on THUCNews: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python
PROFILE ?= demo
TORCH_VERSION ?= 2.13.0
# Offline machines read datasets and the vocabulary from a local mirror; folders that do not
# exist are simply not searched (see docs/running.md, "Offline").
NBUTILS_DATA_MIRROR ?= $(abspath ../shared/data):$(abspath ../shared/models)
export NBUTILS_DATA_MIRROR

.DEFAULT_GOAL := help
.PHONY: help setup browser browser-check git-filter data demo smoke full run report figures test test-fast lint format bench gpu-check clean-runs

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## install torch (pinned), nbutils with dev tools (editable), the git filter, a browser for the tests
	$(PYTHON) -m pip install "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -e ".[dev]"
	@$(MAKE) --no-print-directory git-filter
	@$(MAKE) --no-print-directory browser || echo "setup done without a browser: make test will stop and say how to install one"

# As root with apt-get: Debian's chromium + fonts-noto-cjk; otherwise Playwright's own Chromium.
browser: ## install a headless browser for tests/test_browser.py (JupyterLab), unless one starts already
	@$(PYTHON) tests/jupyterlab_driver.py install

git-filter: ## strip notebook outputs on `git add` (.gitattributes names the filter): save notebooks freely
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		$(PYTHON) -m nbstripout --install --attributes .gitattributes && \
		echo "nbstripout git filter installed: notebook outputs stay out of diffs and commits"; \
	else echo "not a git clone: no git filter installed"; fi

data: ## fetch THUCNews titles + the bert-base-chinese vocabulary into data/raw
	nbutils data fetch thucnews-titles
	nbutils data fetch bert-base-chinese-vocab

demo: data ## run every notebook with the demo profile (offline, 2-core CPU, <= 10 min)
	nbutils run --profile demo

smoke: data ## run every notebook with the seconds-long smoke profile
	nbutils run --profile smoke

full: data ## the real experiment (bert-base-chinese, GPU box)
	nbutils run --profile full

run: ## run a profile with overrides: make run PROFILE=demo ARGS="-p finetune_epochs=2 --only 04"
	nbutils run --profile $(PROFILE) $(ARGS)

report: ## rebuild the HTML report of a run: make report RUN=runs/<run-dir>
	@test -n "$(RUN)" || { echo "usage: make report RUN=runs/<run-dir>"; exit 2; }
	nbutils report $(RUN)

# The newest demo run unless RUN is given.
FIGURES_RUN ?= $(or $(RUN),$(lastword $(sort $(wildcard runs/*-demo))))
figures: ## redraw the README figures in figures/ from a run, and screenshot its notebook 04 in JupyterLab: make figures RUN=runs/<run-dir>
	@test -n "$(FIGURES_RUN)" || { echo "no demo run in runs/: make demo first, or make figures RUN=runs/<run-dir>"; exit 2; }
	nbutils figures $(FIGURES_RUN)
	$(PYTHON) tests/jupyterlab_driver.py screenshot $(FIGURES_RUN) --out figures/jupyterlab.png

# Two pytest workers, one test file each at a time (a module's shared fixture, such as the smoke
# run, is built once), in collection order, where tests/conftest.py puts the longest files first (by
# default xdist starts the files with the most tests first, which leaves the one-test browser check
# for last): the notebook runs wait on kernels and subprocesses, so two workers keep both cores
# busy. Beside each other they run the fixed thread policy (all CPUs but one per process, the
# notebook kernels included): with the adaptive one, each worker's threads spin on the cores the
# other needs (the suite took 333-412 s against 310-349 s on a quiet 2-core CPU, docs/testing.md).
# `make test PYTEST_WORKERS=0` runs everything in one process, with the default policy.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)
PYTEST_THREADS = $(if $(filter 0,$(PYTEST_WORKERS)),,NBUTILS_THREAD_POLICY=fixed)

# The browser check comes first: without one, make test stops at once and says how to install it.
test: browser-check data ## run the test suite (unit + end-to-end smoke run) on the real data (fetched by `make data`)
	$(PYTEST_THREADS) $(PYTHON) -m pytest $(PYTEST_PARALLEL)

browser-check:
	@$(PYTHON) tests/jupyterlab_driver.py check

test-fast: ## unit tests only (no slow end-to-end/multi-process checks); offline: falls back to tests/fixtures
	$(PYTEST_THREADS) $(PYTHON) -m pytest $(PYTEST_PARALLEL) -m "not slow"

lint: ## ruff + notebooks committed without outputs
	ruff check .
	nbstripout --verify notebooks/*.ipynb

format: ## fix what ruff can fix and strip notebook outputs
	ruff check --fix .
	nbstripout notebooks/*.ipynb

bench: ## run the benchmarks (each prints a ratio of two ways of doing the same work)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

# cuda: the check on one GPU (<= 8 min; results in benchmarks/results/); cpu: its rehearsal at smoke sizes
DEVICE ?= cuda
gpu-check: data ## every notebook + MFU on one GPU, one results file: make gpu-check [DEVICE=cpu] (docs/gpu.md)
	$(PYTHON) benchmarks/gpu_check.py --device $(DEVICE)

clean-runs: ## list run directories (delete them yourself: runs are never removed automatically)
	@ls -1d runs/*/ 2>/dev/null || echo "no runs"
