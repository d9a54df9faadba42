# music-elt: every target creates or refreshes .venv from requirements.lock when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WORKDIR ?= .music-elt
export AIRFLOW__COSMOS__ENABLE_TELEMETRY ?= False
export DO_NOT_TRACK ?= 1
export DBT_SEND_ANONYMOUS_USAGE_STATS ?= False

.PHONY: help install demo test lint format lock bench manifest docs dashboard clean

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
	$(BIN)/pytest -n 2

lint: $(STAMP)  ## ruff, mypy and sqlfluff (redshift dialect)
	$(BIN)/ruff check loaders dags tests bench dashboard
	$(BIN)/ruff format --check loaders dags tests bench dashboard
	$(BIN)/mypy
	cd dbt_project && ../$(BIN)/sqlfluff lint models macros --dialect redshift

format: $(STAMP)  ## apply ruff's formatter and fixes
	$(BIN)/ruff format loaders dags tests bench dashboard
	$(BIN)/ruff check --fix loaders dags tests bench dashboard

lock:  ## re-resolve requirements.lock from pyproject.toml
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet 'uv>=0.5'; }
	$(BIN)/uv pip compile pyproject.toml --extra airflow --extra dev --extra dashboard --python-version 3.11 -o requirements.lock

docs: $(STAMP)  ## serve the dbt docs site of WORKDIR on 127.0.0.1:8081 (regenerated only when stale)
	@MUSIC_ELT_WORKDIR=$(abspath $(WORKDIR)) $(BIN)/python -m loaders.docs_site || \
		(cd dbt_project && MUSIC_ELT_DUCKDB_PATH=$(abspath $(WORKDIR))/warehouse.duckdb \
		../$(BIN)/dbt docs generate --profiles-dir . --target-path $(abspath $(WORKDIR))/dbt/target)
	cd dbt_project && MUSIC_ELT_DUCKDB_PATH=$(abspath $(WORKDIR))/warehouse.duckdb \
		../$(BIN)/dbt docs serve --profiles-dir . --target-path $(abspath $(WORKDIR))/dbt/target \
		--host 127.0.0.1 --port 8081 --no-browser

DASHBOARD_PORT ?= 8501
dashboard: $(STAMP)  ## serve the KPI dashboard of WORKDIR on http://127.0.0.1:8501 (DASHBOARD_PORT)
	MUSIC_ELT_WORKDIR=$(abspath $(WORKDIR)) $(BIN)/python -m loaders.serving --if-stale
	@echo "KPI dashboard: http://127.0.0.1:$(DASHBOARD_PORT)"
	MUSIC_ELT_WORKDIR=$(abspath $(WORKDIR)) $(BIN)/streamlit run dashboard/app.py \
		--server.address 127.0.0.1 --server.port $(DASHBOARD_PORT) --server.headless true \
		--browser.gatherUsageStats false --client.toolbarMode viewer

clean:  ## remove the demo work directory and dbt build output
	rm -rf $(WORKDIR) dbt_project/target dbt_project/logs

# ---- Airflow (issue 3) ----
# The DAG (dags/music_streaming_pipeline.py) on the embedded stack in WORKDIR: Airflow's home,
# metadata DB and Cosmos cache live in WORKDIR/airflow. The DAG loads the dbt graph from a
# manifest built ahead of time (DBT_MANIFEST), never by running dbt ls/deps while parsing.
DBT_MANIFEST ?= dbt_project/target/airflow/manifest.json
DBT_TARGET   ?= $(or $(MUSIC_ELT_TARGET),duckdb)
AIRFLOW_HOME_DIR = $(abspath $(WORKDIR))/airflow
AIRFLOW_ENV = AIRFLOW_HOME=$(AIRFLOW_HOME_DIR) \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__COSMOS__CACHE_DIR=$(AIRFLOW_HOME_DIR)/cosmos-cache \
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080 \
	MUSIC_ELT_WORKDIR=$(abspath $(WORKDIR)) \
	MUSIC_ELT_DBT_MANIFEST=$(abspath $(DBT_MANIFEST)) \
	PATH=$(CURDIR)/$(BIN):$$PATH
AIRFLOW_SETUP = $(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null && \
	$(AIRFLOW_ENV) $(BIN)/airflow pools set music_elt_duckdb 1 "one DuckDB writer at a time" >/dev/null

.PHONY: airflow dag-run

manifest: $(STAMP)  ## dbt parse: the manifest the DAG renders its dbt tasks from
	cd dbt_project && MUSIC_ELT_DUCKDB_PATH=$(abspath $(WORKDIR))/warehouse.duckdb \
		../$(BIN)/dbt parse --quiet --profiles-dir . --target $(DBT_TARGET) \
		--target-path $(abspath $(dir $(DBT_MANIFEST)))
	@echo "manifest: $(DBT_MANIFEST)"

airflow: manifest  ## airflow standalone with the DAG on the embedded stack in WORKDIR (UI 127.0.0.1:8080)
	@test -d $(WORKDIR)/landing || echo "note: $(WORKDIR) is not seeded yet: make demo, or music-elt seed --workdir $(WORKDIR) --from-dir DIR"
	$(AIRFLOW_SETUP)
	@echo "Airflow UI: http://127.0.0.1:8080  user: admin"
	@echo "  password: printed below by 'standalone', and kept in $(AIRFLOW_HOME_DIR)/simple_auth_manager_passwords.json.generated"
	@echo "  the DAG is music_streaming_pipeline (paused: unpause it or press Trigger)"
	$(AIRFLOW_ENV) AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin $(BIN)/airflow standalone

dag-run: manifest  ## run the DAG once (airflow dags test) on WORKDIR; fails when the run fails
	$(AIRFLOW_SETUP)
	$(AIRFLOW_ENV) $(BIN)/airflow dags test music_streaming_pipeline
