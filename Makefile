# music-elt: each target installs into .venv the locked profile it needs (requirements/*.lock).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
WORKDIR ?= .music-elt
export AIRFLOW__COSMOS__ENABLE_TELEMETRY ?= False
export DO_NOT_TRACK ?= 1
export DBT_SEND_ANONYMOUS_USAGE_STATS ?= False

.PHONY: help install demo test lint format lock manifest docs dashboard clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Profiles (requirements/<profile>.lock, written by `make lock`): core = the package alone (what
# production runs), airflow = core + the airflow extra (the Airflow image), embedded = core +
# pgserver (the demo stack), dev = every extra + tests and lint (CI, `make test`). dev is
# resolved first and the others are constrained to its pins, so every profile is a subset of
# the tested set. A stamp per profile records that its lock is installed in .venv: dev syncs
# .venv to its lock exactly; the others only add what is missing, so they never downgrade dev.
# Installs compile every module to bytecode, as pip does: each Airflow task is a new process that
# imports Airflow, Cosmos and dbt, and compiling them from source on each import (uv's default,
# or PYTHONDONTWRITEBYTECODE) made the DAG parse of a task 1.9 s instead of 0.3 s (task logs of
# bench/dag_bench.py and bench/freshness_bench.py).
CORE     := $(VENV)/.installed-core
AIRFLOW  := $(VENV)/.installed-airflow
EMBEDDED := $(VENV)/.installed-embedded
DEV      := $(VENV)/.installed-dev

$(UV):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv>=0.5'

$(DEV): requirements/dev.lock pyproject.toml | $(UV)
	@echo "==> $(VENV): sync to requirements/dev.lock"
	@$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python requirements/dev.lock
	@$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

$(VENV)/.installed-%: requirements/%.lock pyproject.toml | $(UV)
	@echo "==> $(VENV): install requirements/$*.lock"
	@$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python --excludes requirements/excludes.txt -r $<
	@$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

install: $(DEV)  ## create or refresh .venv with everything (requirements/dev.lock)

demo: $(EMBEDDED)  ## generate data, seed the embedded stack, run the pipeline, print the KPIs
	$(BIN)/music-elt demo --workdir $(WORKDIR)

test: $(DEV) lint  ## lint, then the whole test suite (starts PostgreSQL and S3 itself)
	$(BIN)/pytest -n 2

lint: $(DEV)  ## ruff, mypy, sqlfluff on the SQL dbt renders (dbt templater, in-memory DuckDB)
	$(BIN)/ruff check loaders dags dashboard tests bench deploy
	$(BIN)/ruff format --check loaders dags dashboard tests bench deploy
	$(BIN)/mypy
	cd dbt_project && MUSIC_ELT_DUCKDB_PATH=:memory: ../$(BIN)/sqlfluff lint models tests

format: $(DEV)  ## apply ruff's formatter and fixes
	$(BIN)/ruff format loaders dags dashboard tests bench deploy
	$(BIN)/ruff check --fix loaders dags dashboard tests bench deploy

# Re-resolve the locks (Python 3.11), keeping existing pins unless pyproject.toml needs others;
# `make lock UPGRADE=--upgrade` moves everything to the newest allowed versions.
LOCK = $(UV) pip compile pyproject.toml --python-version 3.11 --quiet $(UPGRADE) \
	--excludes requirements/excludes.txt \
	--custom-compile-command 'make lock' --annotation-style line
lock: | $(UV)  ## re-resolve requirements/*.lock from pyproject.toml (dev first, the rest within it)
	$(LOCK) --extra airflow --extra embedded --extra dashboard --extra dev -o requirements/dev.lock
	$(LOCK) -c requirements/dev.lock -o requirements/core.lock
	$(LOCK) -c requirements/dev.lock --extra airflow -o requirements/airflow.lock
	$(LOCK) -c requirements/dev.lock --extra embedded -o requirements/embedded.lock
	$(LOCK) -c requirements/dev.lock --extra dashboard -o requirements/dashboard.lock

docs: $(CORE)  ## serve the dbt docs site of WORKDIR on 127.0.0.1:8081 (regenerated only when stale)
	@MUSIC_ELT_WORKDIR=$(abspath $(WORKDIR)) $(BIN)/python -m loaders.docs_site || \
		(cd dbt_project && MUSIC_ELT_DUCKDB_PATH=$(abspath $(WORKDIR))/warehouse.duckdb \
		../$(BIN)/dbt docs generate --profiles-dir . --target duckdb --target-path $(abspath $(WORKDIR))/dbt/target)
	cd dbt_project && MUSIC_ELT_DUCKDB_PATH=$(abspath $(WORKDIR))/warehouse.duckdb \
		../$(BIN)/dbt docs serve --profiles-dir . --target-path $(abspath $(WORKDIR))/dbt/target \
		--host 127.0.0.1 --port 8081 --no-browser

DASHBOARD_PORT ?= 8501
dashboard: $(VENV)/.installed-dashboard  ## serve the KPI dashboard of WORKDIR on http://127.0.0.1:8501 (DASHBOARD_PORT)
	MUSIC_ELT_WORKDIR=$(abspath $(WORKDIR)) $(BIN)/python -m loaders.serving --if-stale
	@echo "KPI dashboard: http://127.0.0.1:$(DASHBOARD_PORT)"
	MUSIC_ELT_WORKDIR=$(abspath $(WORKDIR)) $(BIN)/streamlit run dashboard/app.py \
		--server.address 127.0.0.1 --server.port $(DASHBOARD_PORT) --server.headless true \
		--browser.gatherUsageStats false --client.toolbarMode viewer

clean:  ## remove the demo work directory, dbt build output and bundles
	rm -rf $(WORKDIR) dbt_project/target dbt_project/logs dist

# ---- Airflow (issue 3) ----
# The DAG (dags/music_streaming_pipeline.py) on the embedded stack in WORKDIR: Airflow's home,
# metadata DB and Cosmos cache live in WORKDIR/airflow. The DAG loads the dbt graph from a
# manifest built ahead of time (DBT_MANIFEST), never by running dbt ls/deps while parsing.
# One manifest per dbt target (its adapter shapes the graph the DAG renders): `make manifest
# DBT_TARGET=redshift` (or TARGET=redshift) parses into dbt_project/target/airflow-redshift/.
DBT_TARGET   ?= $(or $(TARGET),$(MUSIC_ELT_TARGET),duckdb)
DBT_MANIFEST ?= dbt_project/target/airflow-$(DBT_TARGET)/manifest.json
AIRFLOW_HOME_DIR = $(abspath $(WORKDIR))/airflow
AIRFLOW_ENV = AIRFLOW_HOME=$(AIRFLOW_HOME_DIR) \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__COSMOS__CACHE_DIR=$(AIRFLOW_HOME_DIR)/cosmos-cache \
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080 \
	MUSIC_ELT_WORKDIR=$(abspath $(WORKDIR)) \
	MUSIC_ELT_DBT_MANIFEST=$(abspath $(DBT_MANIFEST)) \
	PATH=$(CURDIR)/$(BIN):$$PATH
AIRFLOW_DB_STAMP = $(AIRFLOW_HOME_DIR)/.music-elt-migrated
DBT_SOURCES := $(shell find dbt_project -type f \( -name '*.sql' -o -name '*.yml' -o -name '*.md' \) \
	-not -path '*/target/*' -not -path '*/logs/*')

.PHONY: airflow airflow-setup dag-run bundle

# the manifest of a target is rebuilt only when the dbt project changed
$(DBT_MANIFEST): $(CORE) $(DBT_SOURCES)
	@echo "==> dbt parse --target $(DBT_TARGET): the DAG's manifest (the dbt project changed)"
	@cd dbt_project && MUSIC_ELT_DUCKDB_PATH=$(abspath $(dir $(DBT_MANIFEST)))/parse.duckdb \
		../$(BIN)/dbt parse --quiet --profiles-dir . --target $(DBT_TARGET) \
		--target-path $(abspath $(dir $(DBT_MANIFEST)))
	@echo "manifest: $(DBT_MANIFEST)"

manifest: $(DBT_MANIFEST)  ## dbt parse for DBT_TARGET (default duckdb): the DAG's manifest, when the project changed

# What an Airflow deployment installs for one target (dags/README.md, "Deploy"): the wheel, a
# requirements.txt / constraints.txt pair from requirements/airflow.lock, the DAG folder with
# the dbt project and that target's manifest, a Dockerfile and an MWAA layout.
BUNDLE_DIR ?= dist/music-elt-$(DBT_TARGET)
bundle: $(DBT_MANIFEST) requirements/airflow.lock | $(UV)  ## TARGET=duckdb|postgres|redshift: the deployable bundle in dist/music-elt-<TARGET>
	@wheel=$$(mktemp -d) && trap 'rm -rf "$$wheel"' EXIT && \
		$(UV) build --quiet --out-dir "$$wheel" . && \
		$(BIN)/python deploy/bundle.py --target $(DBT_TARGET) --manifest $(DBT_MANIFEST) \
		--wheel "$$wheel"/*.whl --lock requirements/airflow.lock --out $(BUNDLE_DIR)

# the metadata DB is migrated once per Airflow home and installed Airflow version
$(AIRFLOW_DB_STAMP): $(AIRFLOW)
	@mkdir -p $(AIRFLOW_HOME_DIR)
	@echo "==> Airflow metadata DB in $(AIRFLOW_HOME_DIR): migrate, pool music_elt_duckdb"
	@$(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	@$(AIRFLOW_ENV) $(BIN)/airflow pools set music_elt_duckdb 1 "one DuckDB writer at a time" >/dev/null
	@touch $@

airflow-setup: $(DBT_MANIFEST) $(AIRFLOW_DB_STAMP) $(EMBEDDED)  ## manifest + Airflow metadata DB and pool, each only when needed

airflow: airflow-setup  ## airflow standalone with the DAG on WORKDIR's embedded stack (UI 127.0.0.1:8080); Ctrl-C stops it
	@test -d $(WORKDIR)/landing || echo "note: $(WORKDIR) is not seeded yet: make demo, or music-elt seed --workdir $(WORKDIR) --from-dir DIR"
	@$(AIRFLOW_ENV) AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin $(BIN)/python -m music_elt_airflow.standalone

dag-run: airflow-setup  ## run the DAG once (airflow dags test) on WORKDIR; fails when the run fails
	$(AIRFLOW_ENV) $(BIN)/airflow dags test music_streaming_pipeline
