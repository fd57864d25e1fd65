# provision: make targets. `make` alone lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install postgres az azpgauth test lint bench demo clean

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

# The real Azure CLI, pinned, in its own environment (never a dependency of provision): the tests and the
# benchmark run it against the local Azure stack. Rebuilt only when the pin changes.
AZ_CLI_VERSION := 2.91.0
AZ_VENV := .cache/venv-az
AZ_STAMP := $(AZ_VENV)/.azure-cli-$(AZ_CLI_VERSION)

$(AZ_STAMP):
	rm -rf $(AZ_VENV)
	$(PYTHON) -m venv $(AZ_VENV)
	$(AZ_VENV)/bin/pip install --quiet --disable-pip-version-check 'azure-cli==$(AZ_CLI_VERSION)'
	$(AZ_VENV)/bin/python -c 'import azure.cli.core'
	@touch $@

az: $(AZ_STAMP) ## The pinned Azure CLI in .cache/venv-az (for the tests and make bench)

# Microsoft's azure-postgresql-auth, pinned, in a virtual environment of its own (never a dependency of
# provision): the tests log in with it and `make bench` compares with it. Rebuilt only when the pin changes.
AZPGAUTH_VERSION := 1.1.0
AZPGAUTH := .cache/venv-azpgauth
AZPGAUTH_STAMP := $(AZPGAUTH)/.azure-postgresql-auth-$(AZPGAUTH_VERSION)

$(AZPGAUTH_STAMP):
	rm -rf $(AZPGAUTH)
	$(PYTHON) -m venv $(AZPGAUTH)
	$(AZPGAUTH)/bin/pip install --quiet --disable-pip-version-check \
		'azure-postgresql-auth[psycopg3]==$(AZPGAUTH_VERSION)' 'azure-identity>=1.27.0' aiohttp
	$(AZPGAUTH)/bin/python -c 'import azure_postgresql_auth.psycopg3'
	@touch $@

azpgauth: $(AZPGAUTH_STAMP) ## The pinned azure-postgresql-auth in .cache/venv-azpgauth (for the tests and make bench)

test: install postgres az azpgauth ## Run the test suite on every installed PostgreSQL (loopback-only network namespace when possible)
	@scripts/isolated $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff and mypy
	$(BIN)/ruff check provision tests scripts
	$(BIN)/ruff format --check provision tests
	$(BIN)/mypy
	$(BIN)/lint-imports

# provision as users install it (from its wheel, in a virtual environment of its own, as azure-postgresql-auth
# is) for the side by side of the libraries: the development install's editable finder costs each process.
# Its dependencies are installed when pyproject.toml changes; provision itself, from the tree, at every bench.
BENCH_VENV := .cache/venv-bench
BENCH_STAMP := $(BENCH_VENV)/.dependencies

$(BENCH_STAMP): pyproject.toml
	rm -rf $(BENCH_VENV)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check .
	@touch $@

bench: install az azpgauth $(BENCH_STAMP) ## Measure speed targets against the local Azure stack
	@scripts/require-postgres
	@$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall .
	@scripts/isolated $(BIN)/python scripts/bench.py

demo: install postgres ## The whole walkthrough against the local Azure stack (on the newest PostgreSQL)
	@scripts/require-postgres
	@scripts/isolated scripts/demo

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache build *.egg-info
