# music-elt: every target creates or refreshes .venv from requirements.lock when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WORKDIR ?= .music-elt
export AIRFLOW__COSMOS__ENABLE_TELEMETRY ?= False
export DO_NOT_TRACK ?= 1
export DBT_SEND_ANONYMOUS_USAGE_STATS ?= False

.PHONY: help install demo test lint format lock bench manifest docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv>=0.5'
	$(BIN)/uv pip sync --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	@touch $@

install: $(STAMP)  ## create or refresh .venv from the lock file

demo: $(STAMP)  ## generate data, seed the embedded stack, run the pipeline, print the KPIs
	$(BIN)/music-elt demo --workdir $(WORKDIR)

test: $(STAMP) lint  ## lint, then the whole test suite (starts PostgreSQL and S3 itself)
	$(BIN)/pytest -n 2 --dist loadgroup

lint: $(STAMP)  ## ruff, mypy and sqlfluff (redshift dialect)
	$(BIN)/ruff check loaders dags tests bench
	$(BIN)/ruff format --check loaders dags tests bench
	$(BIN)/mypy
	cd dbt_project && ../$(BIN)/sqlfluff lint models macros --dialect redshift

format: $(STAMP)  ## apply ruff's formatter and fixes
	$(BIN)/ruff format loaders dags tests bench
	$(BIN)/ruff check --fix loaders dags tests bench

lock:  ## re-resolve requirements.lock from pyproject.toml
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet 'uv>=0.5'; }
	$(BIN)/uv pip compile pyproject.toml --extra airflow --extra dev --python-version 3.11 -o requirements.lock

clean:  ## remove the demo work directory and dbt build output
	rm -rf $(WORKDIR) dbt_project/target dbt_project/logs
