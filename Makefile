# The README's commands. Each target installs what it needs first, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run migrate test test-cluster unit lint format bench soak clean clean-data

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: install          ## embedded S3 + migrations + demo key + gateway + consumer
	@$(PY) -m service dev

migrate: install
	$(PY) -m service migrate

test: install         ## the whole suite against the real PostgreSQL, RabbitMQ and S3 server
	$(PY) -m pytest

test-cluster: install ## clusters the tests start and own (3 RabbitMQ nodes; PostgreSQL primary + standby)
	$(PY) -m pytest tests/cluster

unit: install
	$(PY) -m pytest tests/unit

lint: install         ## ruff (lint + format check) and mypy (strict on service/ and consumer/)
	$(VENV)/bin/ruff check service consumer tests bench
	$(VENV)/bin/ruff format --check service consumer tests bench
	$(VENV)/bin/mypy service consumer

format: install
	$(VENV)/bin/ruff check --fix service consumer tests bench
	$(VENV)/bin/ruff format service consumer tests bench

bench: install        ## the benchmarks of benchmarks.md and the fleet of scaling.md; JSON in bench/results/
	$(PY) bench/run.py
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null 2>&1 \
	  || echo "bench: wrk not installed; the gateway bench uses its Python load generator"
	$(PY) bench/gateway.py
	$(PY) bench/recovery.py
	$(PY) bench/scheduler.py
	$(PY) bench/webhooks.py
	$(PY) bench/fleet.py

SOAK_MINUTES ?= 5
soak: install         ## 2 gateways + 2 consumers under random cuts and kills, then the invariants
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) bench/soak.py

clean-data:           ## forget the demo: make run's saved S3 objects, its database and its queues
	rm -rf .data
	$(PY) -m service dev-reset --yes

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
