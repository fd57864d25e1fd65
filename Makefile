# provision: make targets. `make` alone lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install postgres test lint bench demo clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/provision: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/provision ## Create .venv and install provision with its test tools

postgres: ## PostgreSQL 16, 17 and 18 for the local Azure stack, into .cache/postgres (15: the machine's)
	@scripts/require-postgres
	@scripts/install-postgres

test: install postgres ## Run the test suite on every installed PostgreSQL (loopback-only network namespace when possible)
	@scripts/isolated $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff and mypy
	$(BIN)/ruff check provision tests scripts
	$(BIN)/ruff format --check provision tests
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install ## Measure speed targets against the local Azure stack
	@scripts/require-postgres
	@scripts/isolated $(BIN)/python scripts/bench.py

demo: install ## The whole walkthrough against the local Azure stack
	@scripts/require-postgres
	@scripts/isolated scripts/demo

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache build *.egg-info
