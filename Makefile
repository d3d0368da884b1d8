# baldur-audit developer targets. Local services (no Docker needed):
#   Kafka 4.4.0 KRaft on 127.0.0.1:29092, PostgreSQL 15 on 127.0.0.1:25432; all state in .local/.
# See deploy/*.sh for details. `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Extra arguments of `make bench`, e.g. BENCH_ARGS="--profile bench/results/profiles".
BENCH_ARGS ?=
export PYTHON PYTEST_ARGS

.PHONY: help venv up down env status test unit lint demo wheel-check clean faults bench

help:
	@echo "make venv         create/refresh .venv (editable install, extras ledger+dev)"
	@echo "make up           venv + start Kafka (127.0.0.1:29092) and PostgreSQL (127.0.0.1:25432)"
	@echo "make down         stop both services"
	@echo "make env          print export lines for the services (eval \"\$$(make -s env)\")"
	@echo "make status       show service status (exit 0 when both are healthy)"
	@echo "make test         start missing services, run pytest tests, stop what it started"
	@echo "                  (PYTEST_ARGS='-k foo -x' passes arguments to pytest)"
	@echo "make faults       the whole fault/tamper/soak campaign at full scale (docs/RELIABILITY.md)"
	@echo "make bench        the pipeline benchmark against this machine's limits, targets PASS/MISS"
	@echo "                  (~10-20 min on 2 cores; BENCH_ARGS=\"--quick\" or \"--profile DIR\"; docs/PERFORMANCE.md)"
	@echo "make unit         pytest tests/unit only (no services)"
	@echo "make lint         ruff check, ruff format --check, mypy (strict for schemas/)"
	@echo "make demo         venv + up + deploy/demo.py; leaves the stack running"
	@echo "make wheel-check  build the wheel into .local/dist and check its package data"
	@echo "make clean        down + remove .local and .venv"

# Always delegated: deploy/venv.sh is a no-op (< 0.1 s) unless pyproject.toml or the set of
# package files changed (see the script).
venv:
	@deploy/venv.sh

up: venv
	@deploy/stack.sh up

down:
	@deploy/stack.sh down

env:
	@deploy/stack.sh env

status:
	@deploy/stack.sh status

test: venv
	@deploy/run-tests.sh

faults: venv
	@deploy/run-faults.sh

bench: venv up
	@eval "$$(deploy/stack.sh env)" && $(PY) -m bench.pipeline $(BENCH_ARGS)

unit: venv
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

lint: venv
	@deploy/lint.sh

demo: venv up
	@eval "$$(deploy/stack.sh env)" && $(PY) deploy/demo.py
	@echo "demo: the stack is still running; 'make down' stops it."

wheel-check: venv
	@deploy/check-wheel.sh

clean:
	-@deploy/stack.sh down
	rm -rf .local $(VENV) build/__editable__.* *.egg-info
