# Two commands do all set-up on a fresh machine (Python 3.11+, make):
#   make quickstart   -> builds .venv and runs studies/quickstart.yaml
#   make test         -> builds .venv and runs lint, format check and the test suite
#   make test-fast    -> the same without the tests marked slow (processes, servers): for day-to-day work
PYTHON ?= python3
VENV ?= .venv
# torch is installed first so the rest of the install finds it satisfied. Override, e.g.
# `make TORCH=torch setup` for the newest release or a CUDA build from your own index.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup quickstart test test-fast lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

quickstart: setup
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m sweep.run studies/quickstart.yaml

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest

test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -m "not slow"

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .sweep mlflow.db mlartifacts
