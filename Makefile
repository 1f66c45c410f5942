# Entry points. `make test` and `make demo` set themselves up from nothing (.venv + install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# The one command (infra/cli.py, installed as the package `layerflow`); `python -m <package>` runs the same code.
LAYERFLOW := $(BIN)/layerflow
# torch/torchvision pinned: these releases install from the local wheel cache; anything else downloads GBs.
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
# Exact versions of every other dependency that the suite last passed with; `make upgrade-deps` refreshes them.
CONSTRAINTS := constraints.txt
CONFIG ?=
STAGE ?= 1
ARGS ?=
export PYTHONUNBUFFERED := 1

.PHONY: help install upgrade-deps test test-all demo dataset train precompute generate eval bench weights clean

help:
	@echo "make demo      end-to-end demo on built-in synthetic videos (tiny preset, CPU, < 10 min)"
	@echo "make test      the test suite (offline, CPU)"
	@echo "make dataset   build layered shards (CONFIG=<name> or a YAML path, ARGS='--limit 10')"
	@echo "make train     train a stage (STAGE=1|2|3, CONFIG=..., ARGS=...)"
	@echo "make precompute cache VAE latents + T5 embeddings for a stage (STAGE=, CONFIG=, ARGS=)"
	@echo "make generate  generate / decompose layered videos (ARGS=...)"
	@echo "make eval      VBench-style evaluation per layer of what make generate wrote (or TASK=generation|decomposition|score|compare ARGS=...)"
	@echo "make bench     the benchmark scripts (figures go in BENCHMARKS.md)"
	@echo "make weights   check which model weights are present under LAYERFLOW_WEIGHTS"
	@echo "make upgrade-deps  newest dependencies, run the tests, then pin them in constraints.txt"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) $(TORCH)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[all,dev]"
	touch $@

install: $(STAMP)

# Upgrades everything but the pinned torch in place, and rewrites the constraints only if the suite passes.
upgrade-deps: $(STAMP)
	$(PY) -m pip install --quiet --upgrade --upgrade-strategy eager $(TORCH) -e ".[all,dev]"
	$(PY) -m pytest -q -m "not slow"
	{ echo "# Exact versions the test suite last passed with (make upgrade-deps rewrites this file)."; \
	  $(PY) -m pip freeze --exclude-editable; } > $(CONSTRAINTS)
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

demo: $(STAMP)
	$(LAYERFLOW) demo $(ARGS)

dataset: $(STAMP)
	$(LAYERFLOW) dataset $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

train: $(STAMP)
	$(LAYERFLOW) train --stage $(STAGE) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

precompute: $(STAMP)
	$(LAYERFLOW) precompute --stage $(STAGE) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

generate: $(STAMP)
	$(LAYERFLOW) generate --config $(or $(CONFIG),tiny) $(ARGS)

# Without TASK: scores what `make generate` wrote.
eval: $(STAMP)
	$(LAYERFLOW) eval $(or $(TASK),score outputs/generate/tiny/generate) $(ARGS)

weights: $(STAMP)
	$(LAYERFLOW) weights check $(ARGS)

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf outputs/demo .pytest_cache
