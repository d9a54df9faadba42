"""The failure notifier: names the failed task and, for dbt test tasks, the failing tests."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.dags.helpers import import_dag_module, load_dag, webhook_server

TEST_FAILURE = (
    "dbt invocation completed with errors: "
    "unique_stg_rds__users_user_id: Got 1 result, configured to fail if != 0\n"
    "not_null_stg_rds__users_user_id: Got 2 results, configured to fail if != 0"
)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def alert_log() -> Iterator[_Records]:
    records = _Records()
    logger = logging.getLogger("music_elt.alerts")
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


@pytest.fixture
def dag_module(dag_env: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("MUSIC_ELT_SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_WEBHOOK", raising=False)
    return import_dag_module()


def _context(task: Any, error: BaseException) -> dict[str, Any]:
    ti = SimpleNamespace(task_id=task.task_id, map_index=-1, try_number=1)
    return {
        "ti": ti,
        "task": task,
        "dag_run": SimpleNamespace(run_id="manual__2026-01-05"),
        "exception": error,
    }


def test_message_names_the_task_and_the_failing_tests(dag_module: Any) -> None:
    from cosmos.exceptions import CosmosDbtRunError

    dag = load_dag()
    test_task = dag.task_dict["dbt.stg_rds__users.test"]
    message = dag_module.failure_message(_context(test_task, CosmosDbtRunError(TEST_FAILURE)))
    assert "task dbt.stg_rds__users.test failed" in message
    assert "run manual__2026-01-05" in message
    assert "failing dbt tests: unique_stg_rds__users_user_id: Got 1 result" in message
    assert "not_null_stg_rds__users_user_id: Got 2 results" in message

    run_task = dag.task_dict["dbt.stg_rds__users.run"]
    model_error = CosmosDbtRunError(
        "dbt invocation completed with errors: stg_rds__users: Runtime Error in model "
        "stg_rds__users (models/staging/rds/stg_rds__users.sql)\n  Conversion Error: bad\n"
        "  LINE 10: select ..."
    )
    message = dag_module.failure_message(_context(run_task, model_error))
    assert "dbt errors: stg_rds__users: Runtime Error in model" in message
    assert "LINE 10" not in message

    load_task = dag.task_dict["load_raw"]
    outage = ConnectionError("cannot open the DuckDB warehouse /w/warehouse.duckdb\nmore")
    message = dag_module.failure_message(_context(load_task, outage))
    assert "task load_raw failed" in message
    assert "error: ConnectionError: cannot open the DuckDB warehouse /w/warehouse.duckdb" in message


def test_without_slack_the_alert_is_a_log_record(dag_module: Any, alert_log: _Records) -> None:
    task = SimpleNamespace(task_id="load_raw")
    dag_module.PipelineFailureNotifier().notify(_context(task, ValueError("boom")))
    assert len(alert_log.messages) == 1
    assert "task load_raw failed" in alert_log.messages[0]
    assert alert_log.messages[0].endswith("error: ValueError: boom")


def test_slack_webhook_from_env_or_connection(
    dag_module: Any, alert_log: _Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = SimpleNamespace(task_id="archive_stream_files")
    with webhook_server() as (url, received):
        monkeypatch.setenv("MUSIC_ELT_SLACK_WEBHOOK_URL", url)
        dag_module.PipelineFailureNotifier().notify(_context(task, OSError("s3 down")))
        monkeypatch.delenv("MUSIC_ELT_SLACK_WEBHOOK_URL")
        # an Airflow connection: host + the token in the password field
        base, token = url.split("/services/")
        connection = {"conn_type": "http", "host": f"{base}/services", "password": token}
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_WEBHOOK", json.dumps(connection))
        dag_module.PipelineFailureNotifier().notify(_context(task, OSError("s3 down again")))
    assert [body["text"].splitlines()[-1] for body in received] == [
        "error: OSError: s3 down",
        "error: OSError: s3 down again",
    ]
    assert all("task archive_stream_files failed" in body["text"] for body in received)
    assert len(alert_log.messages) == 2  # the log record is always written too


def test_unreachable_webhook_does_not_raise(
    dag_module: Any, alert_log: _Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSIC_ELT_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    dag_module.PipelineFailureNotifier().notify(_context(SimpleNamespace(task_id="x"), OSError()))
    assert alert_log.messages[0].endswith("error: OSError")
    assert any("Slack webhook failed" in m for m in alert_log.messages)
