"""A terminal error fails its task at once; a transient one keeps the task's retries.

Two ``dag.test()`` runs of the DAG with one retry per task, the RDS check marked done, so that
``extract`` (mapped over users and songs) is the first task to fail: on a connection that names
no database (ConfigError, terminal) and on one where nothing listens (ServiceOutage, transient).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tests.dags.helpers import load_dag


def _extract_tries(dag_run: Any) -> list[tuple[str, int]]:
    """(state, try number) of each mapped ``extract`` task instance of the run."""
    instances = [ti for ti in dag_run.get_task_instances() if ti.task_id == "extract"]
    return sorted((str(ti.state), ti.try_number) for ti in instances)


def test_a_terminal_error_fails_at_once_and_a_transient_one_is_retried(
    dag_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSIC_ELT_TASK_RETRIES", "1")
    monkeypatch.setenv("MUSIC_ELT_RETRY_DELAY_SECONDS", "0.1")
    monkeypatch.setenv("MUSIC_ELT_RDS_WAIT_SECONDS", "0")  # a refused connection fails at once
    dag = load_dag()
    assert dag.task_dict["extract"].retries == 1

    monkeypatch.setenv("AIRFLOW_CONN_AWS_RDS_CONNECTION", "postgres://reader@127.0.0.1:5432")
    configured_wrong = dag.test(mark_success_pattern="check_rds_available")
    assert _extract_tries(configured_wrong) == [("failed", 1), ("failed", 1)]

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_RDS_CONNECTION", f"postgres://reader@127.0.0.1:{port}/music"
    )
    unreachable = dag.test(mark_success_pattern="check_rds_available")
    assert _extract_tries(unreachable) == [("failed", 2), ("failed", 2)]
