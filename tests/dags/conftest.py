"""Fixtures for the DAG tests: an Airflow home with a migrated SQLite metadata DB, the dbt
manifest the DAG renders from, and a parsed DagBag for a given work directory.

Airflow reads ``AIRFLOW_HOME`` when it is first imported, so :func:`airflow_home` sets the
environment before any Airflow import; test modules here import Airflow inside tests only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dags.helpers import DAGS, DBT_PROJECT, POOL, load_dag


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """AIRFLOW_HOME in a temporary folder, metadata DB migrated, the DuckDB pool created."""
    if "airflow.configuration" in sys.modules:
        pytest.fail("Airflow was imported before the airflow_home fixture set AIRFLOW_HOME")
    home = tmp_path_factory.mktemp("airflow-home")
    wanted = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos-cache"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
    }
    saved = {name: os.environ.get(name) for name in wanted}
    root_handlers = logging.root.handlers[:]
    os.environ.update(wanted)

    from airflow.models.pool import Pool
    from airflow.utils import db

    db.initdb()
    Pool.create_or_update_pool(POOL, 1, "one DuckDB writer at a time", include_deferred=False)
    yield home
    # Airflow pointed the root logger at this session's captured output; later log records
    # (e.g. pgserver stopping at interpreter exit) must not go to a closed stream.
    logging.root.handlers[:] = root_handlers
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Undo what a DAG run leaves in ``os.environ``: Airflow's PythonOperator exports
    ``AIRFLOW_CTX_*`` and Cosmos copies each dbt task's environment into it (for OpenLineage),
    ``MUSIC_ELT_DUCKDB_PATH`` included, which would steer later tests in this process."""
    saved = dict(os.environ)
    yield
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    os.environ.update(saved)


@pytest.fixture(scope="session")
def dbt_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dbt parse`` of the project into a temporary target path: what `make manifest` builds."""
    target = tmp_path_factory.mktemp("dbt-manifest")
    dbt = Path(sys.executable).parent / "dbt"
    env = {
        **os.environ,
        "MUSIC_ELT_DUCKDB_PATH": str(target / "unused.duckdb"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    }
    result = subprocess.run(
        [
            *(str(dbt), "parse", "--quiet", "--profiles-dir", ".", "--target", "duckdb"),
            *("--target-path", str(target), "--log-path", str(target / "logs")),
        ],
        cwd=DBT_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"dbt parse failed:\n{result.stdout}\n{result.stderr}"
    return target / "manifest.json"


@pytest.fixture
def dag_env(
    airflow_home: Path, dbt_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The environment the DAG reads when parsed: embedded stack in a fresh work directory, no
    retries (a failure fails at once). Returns the work directory."""
    workdir = tmp_path / "work"
    for name in list(os.environ):
        if name.startswith(("MUSIC_ELT_", "WAREHOUSE_", "AIRFLOW_CONN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MUSIC_ELT_WORKDIR", str(workdir))
    monkeypatch.setenv("MUSIC_ELT_DBT_MANIFEST", str(dbt_manifest))
    monkeypatch.setenv("MUSIC_ELT_TASK_RETRIES", "0")
    return workdir


@pytest.fixture
def pipeline_dag(dag_env: Path) -> Any:
    """The parsed DAG for the work directory of :func:`dag_env`."""
    return load_dag()
