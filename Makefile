# Two commands matter: `make deploy` (the main job) and `make test` (everything, for real).
# `make help` lists the rest.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := .run
INVENTORY ?= ansible/inventories/local
FLEET_INVENTORY ?= ansible/inventories/fleet
PYTEST_ARGS ?=
BENCH_ARGS ?=
# The idleproof library's wheel, where the app role takes it from.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEEL := ansible/roles/app/files/idleproof-$(VERSION)-py3-none-any.whl

.DEFAULT_GOAL := help
.PHONY: help venv run stop migrate test lint unit bench deploy testhost testhost-down clean \
	wheel collection collections fleet fleet-down

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

lint: collections ## The pre-commit hooks on every file: ruff, mypy, shellcheck, yamllint, ansible-lint.
	scripts/install-system-deps lint
	$(BIN)/pre-commit run --all-files

unit: collections ## Fast tests only (no servers).
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

# Fast first: lint and the tests that need no server stop a broken change in a minute or
# two; then the tests that start servers and test hosts (scripts/run_tests.py).
test: venv ## Everything: lint, unit, fault, deploy and bench-smoke tests, for real.
	scripts/install-system-deps test
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit
	$(BIN)/python scripts/run_tests.py --slow $(PYTEST_ARGS)

bench: venv ## The kit vs its peers, on loopback and across a hop, and the faults (BENCH_ARGS=--help).
	scripts/install-system-deps test
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean: stop ## Remove .run, dist and caches (keeps .venv).
	rm -rf $(RUN) dist .pytest_cache .mypy_cache .ruff_cache

# The local inventory's host is a systemd-nspawn container (scripts/testhost) booted on
# demand; any other INVENTORY is taken as real hosts.
LOCAL_INVENTORY := ansible/inventories/local

wheel: $(WHEEL) ## Build the idleproof library's wheel (into the app role's files/).

$(WHEEL): $(VENV)/.installed pyproject.toml docs/library.md $(shell find src -name '*.py')
	rm -rf ansible/roles/app/files/idleproof-*.whl build
	SOURCE_DATE_EPOCH=315532800 $(BIN)/pip wheel -q --disable-pip-version-check --no-deps \
		-w ansible/roles/app/files .
	rm -rf build

collections: venv $(WHEEL) ## Install the pinned Ansible collections; link ansible/ as idleproof.kit.
	$(BIN)/python scripts/install_collections.py

collection: collections ## Build the collection idleproof.kit (with the wheel) into dist/.
	mkdir -p dist
	cd ansible && ../$(BIN)/ansible-galaxy collection build --force --output-path ../dist .

deploy: collections ## Converge ansible/site.yml on INVENTORY (default: the local test host).
ifeq ($(abspath $(INVENTORY)),$(abspath $(LOCAL_INVENTORY)))
	scripts/install-system-deps test
	scripts/testhost up
endif
	cd ansible && ../$(BIN)/ansible-playbook -i $(abspath $(INVENTORY)) site.yml
ifeq ($(abspath $(INVENTORY)),$(abspath $(LOCAL_INVENTORY)))
	@echo "deployed: try curl --cacert ansible/inventories/local/.tls/ca.crt https://127.0.0.1:8443/ (make testhost-down removes the host)"
endif

testhost: ## Boot the local test host (Debian bookworm, systemd-nspawn, ssh on 127.0.0.1:2222).
	scripts/install-system-deps test
	scripts/testhost up

testhost-down: ## Power off and delete the local test host.
	scripts/testhost down

# The test fleet: FLEET_INVENTORY's hosts (db1, app1, app2, web1) as systemd-nspawn hosts
# on a private bridge (scripts/fleet; FLEET_BRIDGE, FLEET_SUBNET), converged like real ones.
fleet: collections ## Boot the test fleet (4 hosts on a private bridge) and converge site.yml on it.
	scripts/install-system-deps test
	FLEET_INVENTORY=$(abspath $(FLEET_INVENTORY)) scripts/fleet up
	cd ansible && ../$(BIN)/ansible-playbook -i $(abspath $(FLEET_INVENTORY)) site.yml
	@echo "fleet converged: try curl $$(FLEET_INVENTORY=$(abspath $(FLEET_INVENTORY)) scripts/fleet url) (make fleet-down removes the fleet)"

fleet-down: ## Power off the test fleet's hosts, stop its proxy, delete its bridge.
	scripts/fleet down

