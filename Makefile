# One entry per task. The first run of any target creates .venv and installs callpipe into it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install up test lint format check-contract samples clean

$(BIN)/callpipe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/callpipe

## Bring the whole stack up on embedded defaults and put one sample call through it.
up: install
	$(BIN)/callpipe up --demo

## Lint, type-check, check the published event contract, run every test.
test: lint check-contract
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml deploy/compose.test.yml

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

check-contract: install
	$(BIN)/callpipe schemas

## Regenerate the sample recordings (needs Debian's espeak-ng and sox).
samples:
	scripts/make_samples.sh

clean:
	rm -rf $(VENV) .callpipe .mypy_cache .ruff_cache .pytest_cache
