# segwatch: the front door. `make help` lists the targets.
#
# Everything a target needs is installed by the target itself: a virtualenv
# (.venv, or the one already active) for Python, and the local Kafka +
# Elasticsearch stack resolved by Maven into .cache/ (SEGWATCH_CACHE).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(CURDIR)/.venv)
PY := $(VENV)/bin/python
SEGWATCH := $(VENV)/bin/segwatch
STAMP := $(VENV)/.segwatch-installed

# The local stack's ports, and the settings that point segwatch at them.
export SEGWATCH_CACHE ?= $(CURDIR)/.cache
export SEGWATCH_KAFKA_PORT ?= 9092
export SEGWATCH_ES_PORT ?= 9200
export SEGWATCH_KAFKA__BOOTSTRAP_SERVERS ?= 127.0.0.1:$(SEGWATCH_KAFKA_PORT)
export SEGWATCH_ELASTICSEARCH__URL ?= http://127.0.0.1:$(SEGWATCH_ES_PORT)

PYTEST_ARGS ?=

.PHONY: help install services-up services-down services-status services-logs topics run \
        test test-unit test-integration lint typecheck check golden bench dist clean distclean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

install: $(STAMP) ## create the virtualenv and install segwatch with its dev extras

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "segwatch needs Python 3.11+ ($(PYTHON) is older)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

services-up: install ## start Kafka and Elasticsearch (downloads them the first time); waits for health
	$(PY) deploy/local/stack.py up

services-down: ## stop the Kafka and Elasticsearch processes that services-up started
	$(PYTHON) deploy/local/stack.py down

services-status: ## report both services' health (exit 1 if either is down)
	$(PYTHON) deploy/local/stack.py status

services-logs: ## print the last lines of both services' logs
	$(PYTHON) deploy/local/stack.py logs -n 60

topics: services-up ## create the pipeline's topics (idempotent)
	$(SEGWATCH) topics create

run: topics ## the main job: stack, topics, templates, a worker, simulated attacks, live view (Ctrl-C stops)
	$(SEGWATCH) status
	$(SEGWATCH) demo

test: services-up ## install, start the stack, run the whole suite (unit tests over every core, then integration)
	$(PY) -m pytest -m unit -n auto $(PYTEST_ARGS)
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-unit: install ## unit tests only (no services), over every core
	$(PY) -m pytest -m unit -n auto $(PYTEST_ARGS)

test-integration: services-up ## integration tests only (real Kafka and Elasticsearch)
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

lint: install ## ruff (lint + format check) and mypy (strict on the packages)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

typecheck: install ## mypy only
	$(VENV)/bin/mypy

check: lint test ## everything CI cares about

golden: install ## rewrite tests/golden/*/*-expected.json from the current parsers (review the diff)
	$(PY) -m tests.golden.regenerate

bench: services-up ## run the benchmarks under bench/ and print their figures
	$(PY) -m bench $(BENCH_ARGS)

dist: install ## build the wheel (dist/segwatch-*.whl: code, templates, dashboards, rules, example models)
	rm -rf dist build
	$(PY) -m pip wheel -q --no-deps --wheel-dir dist .
	@ls dist/*.whl

clean: ## remove build and test caches (keeps .venv and the stack's .cache)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

distclean: services-down clean ## also remove the virtualenv and the stack's downloads and data
	rm -rf $(CURDIR)/.venv $(SEGWATCH_CACHE)
