# wpfleet: `make up` then `make test`. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DB     ?= sqlite
PYTEST_ARGS ?=

.PHONY: help up down status test test-unit bench lab venv clean-sites

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: DB=sqlite|mariadb (make test), QUICK=1 (make bench), PYTEST_ARGS=..."

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@mkdir -p var/log && $(PY) -m pip install -q -e '.[dev]' >var/log/pip-install.log 2>&1 || { cat var/log/pip-install.log; exit 1; }
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv and install the Python dependencies

lab: ## install system packages, start dockerd, build the lab images, start MariaDB and Caddy
	@lab/up.sh

up: lab venv ## bring up the lab, migrate, and start the panel (web on 127.0.0.1:8000) and the worker cluster
	@scripts/panel.sh up

down: ## stop the panel, the worker and the lab's MariaDB and Caddy (sites and data survive)
	@scripts/panel.sh down
	@lab/down.sh

status: ## show what is running
	@lab/status.sh || true
	@scripts/panel.sh status

test: lab venv ## run every test (unit, integration, reliability, browser) on DB=sqlite (default) or DB=mariadb
	@scripts/test.sh $(DB) $(PYTEST_ARGS)

test-unit: venv ## run only the tests that need no lab
	@scripts/test.sh $(DB) -m "not integration and not browser" $(PYTEST_ARGS)

bench: lab venv ## run the benchmarks against the lab (QUICK=1 for a short run); results in bench/results/
	@QUICK=$(QUICK) $(PY) -m bench $(BENCH_ARGS)

clean-sites: venv ## remove zombie sites and leftovers (dry run: ./cleanup.sh --dry-run)
	@./cleanup.sh
