# wpfleet: `make up` then `make test`. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)
DB     ?= sqlite
PYTEST_ARGS ?=

.PHONY: help up down status test test-unit lint bench lab venv lock clean-sites

# requirements.lock: every package of pyproject.toml (runtime + the dev extra,
# plus setuptools, the build backend) pinned with hashes, for Python 3.11 on
# linux x86_64. The machine's pip config (mirrors, find-links) is ignored so
# the lock only names PyPI's files.
PIP_TOOLS_VERSION := 7.6.2
LOCK_PYTHON ?= python3.11
LOCK_CMD := pip-compile --generate-hashes --allow-unsafe --strip-extras --extra dev --build-deps-for editable --index-url https://pypi.org/simple --no-emit-index-url -o requirements.lock pyproject.toml

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: DB=sqlite|mariadb (make test), QUICK=1, FILL=N, RESTART=1 (make bench), PYTEST_ARGS=..., UPGRADE=1 (make lock)"

# No `pip install --upgrade pip` first: that would fetch whatever pip is
# newest, unpinned and unhashed, before the hashed install. The venv's own pip
# (Python 3.11 bundles pip 22.3 or later; 23.2.1 here) installs the lock with
# --require-hashes and the editable install (PEP 660) as they are.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	@mkdir -p var/log && { $(PY) -m pip install -q --require-hashes -r requirements.lock && \
		$(PY) -m pip install -q --no-deps --no-build-isolation -e .; } >var/log/pip-install.log 2>&1 || { cat var/log/pip-install.log; exit 1; }
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv and install the Python dependencies (from requirements.lock)

lock: ## regenerate requirements.lock from pyproject.toml (keeps current pins; UPGRADE=1 takes the latest)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(LOCK_PYTHON) -m venv "$$tmp/venv" && \
		"$$tmp/venv/bin/pip" install -q 'pip-tools==$(PIP_TOOLS_VERSION)' && \
		env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
		PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND='make lock  # pip-tools $(PIP_TOOLS_VERSION), Python 3.11: $(LOCK_CMD)' \
		"$$tmp/venv/bin/$(firstword $(LOCK_CMD))" -q $(if $(UPGRADE),--upgrade) $(wordlist 2,99,$(LOCK_CMD))

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

lint: venv ## ruff (lint and format check) and mypy with django-stubs and drf-stubs
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy .

bench: lab venv ## run the benchmarks against the lab (QUICK=1: short; FILL=N: the scale section alone, N real sites; RESTART=1: and a dockerd SIGKILL); results in bench/results/
	@QUICK=$(QUICK) $(PY) -m bench $(if $(FILL),--only scale --fill $(FILL) --out bench/results/scale $(if $(filter-out 0,$(RESTART)),--restart)) $(BENCH_ARGS)

clean-sites: venv ## remove zombie sites and leftovers (dry run: ./cleanup.sh --dry-run)
	@./cleanup.sh
