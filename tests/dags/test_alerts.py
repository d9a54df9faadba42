"""Failure alerts (music_elt_airflow.alerts): a log record always, Slack and PagerDuty through
their Airflow providers when their connections exist, naming the task and the failing dbt nodes
as dbt's run_results recorded them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.dags.helpers import self_signed_certificate, webhook_server

RUN_RESULTS = {
    "results": [
        {"unique_id": "model.music_elt.stg_rds__users", "status": "success", "message": "OK"},
        {
            "unique_id": "test.music_elt.unique_stg_rds__users_user_id.1a2b",
            "status": "fail",
            "message": "Got 1 result, configured to fail if != 0",
        },
        {
            "unique_id": "model.music_elt.dim_users",
            "status": "error",
            "message": "Runtime Error in model dim_users\n  Conversion Error: bad",
        },
        {"unique_id": "test.music_elt.accepted_range_x", "status": "warn", "message": "Got 3"},
    ]
}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def alert_log(dag_env: Path) -> Iterator[_Records]:
    records = _Records()
    logger = logging.getLogger("music_elt.alerts")
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


class _TaskInstance(SimpleNamespace):
    """The parts of a task instance the alert reads, with an in-memory XCom."""

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        assert task_ids == self.task_id
        return self.xcom.get(key)


def _context(task_id: str, error: BaseException | None) -> dict[str, Any]:
    ti = _TaskInstance(
        task_id=task_id, dag_id="music_streaming_pipeline", map_index=-1, try_number=1, xcom={}
    )
    return {"ti": ti, "dag_run": SimpleNamespace(run_id="manual__2026-01-05"), "exception": error}


def test_the_message_names_the_failing_dbt_nodes_from_run_results(
    alert_log: _Records, tmp_path: Path
) -> None:
    from music_elt_airflow.alerts import failure_message, record_dbt_results

    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "run_results.json").write_text(json.dumps(RUN_RESULTS))
    context = _context("dbt.dbt_producer_watcher", RuntimeError("dbt build failed"))
    record_dbt_results(str(tmp_path), context=context)  # Cosmos's callback, after dbt
    message = failure_message(context)
    assert message.startswith(
        "music_streaming_pipeline: task dbt.dbt_producer_watcher failed (run manual__2026-01-05"
    )
    assert "unique_stg_rds__users_user_id: Got 1 result, configured to fail if != 0" in message
    assert "dim_users: Runtime Error in model dim_users Conversion Error: bad" in message
    assert "accepted_range_x" not in message  # a warning is no failure

    plain = failure_message(_context("load", ConnectionError("S3 access denied\nmore")))
    assert plain.endswith("error: ConnectionError: S3 access denied")


def test_without_connections_the_alert_is_a_log_record(alert_log: _Records) -> None:
    from music_elt_airflow.alerts import PipelineAlert

    PipelineAlert().notify(_context("load", ValueError("boom")))
    assert len(alert_log.messages) == 1
    assert alert_log.messages[0].endswith("error: ValueError: boom")


def test_slack_and_pagerduty_through_their_providers(
    alert_log: _Records, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Both providers send real HTTPS requests, to a server on loopback with a self-signed
    certificate (PagerDuty's client is pointed there: its events API cannot be reached here)."""
    import pagerduty

    from music_elt_airflow.alerts import PipelineAlert

    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # PagerDuty's client (requests)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # slack_sdk (urllib)
    with webhook_server(tls=(cert, key)) as (url, received):
        base = url.split("/services/")[0]
        monkeypatch.setattr(pagerduty.EventsApiV2Client, "default_base_url", base)
        monkeypatch.setenv(
            "AIRFLOW_CONN_SLACK_WEBHOOK",
            json.dumps({"conn_type": "slackwebhook", "password": url}),
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_PAGERDUTY_EVENTS",
            json.dumps({"conn_type": "pagerduty_events", "password": "routing-key-0123456789"}),
        )
        PipelineAlert().notify(_context("archive", OSError("s3 down")))
    slack = [body for path, body in received if path.startswith("/services/")]
    pager = [body for path, body in received if path == "/v2/enqueue"]
    assert len(slack) == 1 and slack[0]["text"].endswith("error: OSError: s3 down")
    assert len(pager) == 1
    assert pager[0]["routing_key"] == "routing-key-0123456789"
    assert pager[0]["payload"]["severity"] == "error"
    assert "task archive failed" in pager[0]["payload"]["summary"]
    assert len(alert_log.messages) == 1  # the log record is always written too


def test_a_failing_channel_does_not_hide_the_others(
    alert_log: _Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    from music_elt_airflow.alerts import PipelineAlert

    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_WEBHOOK",
        json.dumps({"conn_type": "slackwebhook", "password": "http://127.0.0.1:9/hook"}),
    )
    PipelineAlert().notify(_context("x", OSError("disk")))
    assert alert_log.messages[0].endswith("error: OSError: disk")
    assert any(m.startswith("Slack alert failed") for m in alert_log.messages)


def test_a_warning_of_a_successful_task_reaches_the_alert(alert_log: _Records) -> None:
    """A re-delivered file that could not be loaded: the load task succeeds, and its warning
    goes out through the same alert (a log record here, no channel configured)."""
    from music_elt_airflow.alerts import PipelineAlert

    PipelineAlert().warn(_context("load", None), ["a new version of streams/k.csv.gz could not"])
    assert len(alert_log.messages) == 1
    assert alert_log.messages[0].startswith("music_streaming_pipeline: task load warns")
    assert alert_log.messages[0].endswith("warning: a new version of streams/k.csv.gz could not")
