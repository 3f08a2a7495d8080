# Every target that runs code depends on .venv/.installed, so `make test` and `make ablations` work on a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
BASE    ?= base-model
QUICK   ?= 0

.PHONY: install test lint format base-model ablations tune figures bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c requirements.lock -e ".[dev,ray]"
	touch $(STAMP)

# mypy reads its settings (files: hificl, analysis) from pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check hificl analysis tests
	$(BIN)/ruff format --check hificl analysis tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix hificl analysis tests
	$(BIN)/ruff format hificl analysis tests

test: $(STAMP)
	$(BIN)/ruff check hificl analysis tests
	$(BIN)/mypy
	$(BIN)/pytest -q

base-model: $(BASE)/card.json

# Pretrains the tiny LMM (about 12 min on 2 idle cores) and exports the benchmark beside it; cached by the card file.
$(BASE)/card.json: | $(STAMP)
	$(BIN)/hificl base-model --out $(BASE)

ablations: $(BASE)/card.json
	$(BIN)/hificl ablate --config experiments/ablations.yaml --base-model $(BASE) --workers 2 $(if $(filter 1,$(QUICK)),--quick,)

tune: $(BASE)/card.json
	$(BIN)/hificl tune --config experiments/tune.yaml --base-model $(BASE) --workers 2

figures: $(STAMP)
	$(BIN)/hificl figures --results results

bench: $(BASE)/card.json
	$(BIN)/hificl bench --base-model $(BASE)

clean:
	rm -rf $(VENV) results runs build .mypy_cache
