# Two commands matter: `make deploy` (the main job) and `make test` (everything, for real).
# `make help` lists the rest.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := .run
INVENTORY ?= ansible/inventories/local
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run stop migrate test lint unit bench deploy testhost testhost-down clean

help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Create .venv with the locked dependencies.

$(VENV)/.installed: requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

run: venv ## Start a throwaway MariaDB and the app on http://127.0.0.1:8000.
	scripts/install-system-deps run
	scripts/run-local start

stop: ## Stop exactly what `make run` started.
	scripts/run-local stop

lint: venv ## ruff and mypy.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: venv ## Fast tests only (no servers).
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test: venv ## Everything: lint, unit, fault, deploy and bench-smoke tests, for real.
	scripts/install-system-deps test
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest $(PYTEST_ARGS)

clean: stop ## Remove .run and caches (keeps .venv).
	rm -rf $(RUN) .pytest_cache .mypy_cache .ruff_cache
