"""Failure alerts: a log record always; Slack and PagerDuty through their Airflow providers,
each when its connection exists. The message names the task and, for dbt, the failing nodes as
dbt's run_results recorded them (pushed to XCom by :func:`record_dbt_results`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from airflow.sdk import BaseNotifier

from loaders.errors import one_line
from loaders.manifest import failed_nodes
from music_elt_airflow.connections import connection

log = logging.getLogger("music_elt.alerts")
DBT_FAILURES_XCOM_KEY = "dbt_failures"
SLACK_CONN_ID = "slack_webhook"
PAGERDUTY_CONN_ID = "pagerduty_events"


def record_dbt_results(project_dir: str, **kwargs: Any) -> None:
    """Cosmos callback, run after dbt in the task's copy of the project (also when dbt failed):
    push the failed nodes of ``target/run_results.json`` to XCom for the alert."""
    path = Path(project_dir) / "target" / "run_results.json"
    if not path.is_file():
        return
    failures = failed_nodes(json.loads(path.read_text()))
    if failures:
        kwargs["context"]["ti"].xcom_push(key=DBT_FAILURES_XCOM_KEY, value=failures)


def failure_message(context: Any) -> str:
    """One alert text from a task's failure context."""
    ti = context.get("ti") or context.get("task_instance")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    where = f"{task_id}[{map_index}]" if map_index is not None and map_index >= 0 else task_id
    dag_run = context.get("dag_run")
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id", "?")
    dag_id = getattr(ti, "dag_id", "?")
    lines = [f"{dag_id}: task {where} failed (run {run_id}, try {getattr(ti, 'try_number', '?')})"]
    failures = ti.xcom_pull(task_ids=task_id, key=DBT_FAILURES_XCOM_KEY) if ti else None
    if failures:
        lines.append("failing dbt nodes: " + "; ".join(failures))
    elif (error := context.get("exception")) is not None:
        lines.append(f"error: {one_line(error, 500, lines=1, with_type=True)}")
    return "\n".join(lines)


class PipelineAlert(BaseNotifier):
    """Log the failure; post it to Slack (connection ``slack_webhook``, an incoming webhook)
    and PagerDuty (connection ``pagerduty_events``, an Events API v2 integration key) when those
    connections exist. A failing channel is logged and does not hide the others."""

    def __init__(
        self, slack_conn_id: str = SLACK_CONN_ID, pagerduty_conn_id: str = PAGERDUTY_CONN_ID
    ) -> None:
        super().__init__()
        self.slack_conn_id = slack_conn_id
        self.pagerduty_conn_id = pagerduty_conn_id

    def notify(self, context: Any) -> None:
        message = failure_message(context)
        log.error("%s", message)
        self._dispatch(message, context, "error")

    def warn(self, context: Any, warnings: list[str]) -> None:
        """Alert on a task that succeeded with warnings (a re-delivered file that could not be
        loaded): a warning log record, and the same channels as a failure. No warnings, no
        alert."""
        if not warnings:
            return
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        run_id = getattr(dag_run, "run_id", None) or context.get("run_id", "?")
        head = (
            f"{getattr(ti, 'dag_id', '?')}: task {getattr(ti, 'task_id', '?')} warns (run {run_id})"
        )
        message = "\n".join([head, *(f"warning: {line}" for line in warnings)])
        log.warning("%s", message)
        self._dispatch(message, context, "warning")

    def _dispatch(self, message: str, context: Any, severity: str) -> None:
        if connection(self.slack_conn_id) is not None:
            from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

            self._send(
                "Slack",
                SlackWebhookNotifier(slack_webhook_conn_id=self.slack_conn_id, text=message),
                context,
            )
        if connection(self.pagerduty_conn_id) is not None:
            from airflow.providers.pagerduty.notifications.pagerduty import PagerdutyNotifier

            notifier = PagerdutyNotifier(
                pagerduty_events_conn_id=self.pagerduty_conn_id,
                summary=message.splitlines()[0][:1024],
                severity=severity,
                source="music-elt",
                custom_details={"message": message},
            )
            self._send("PagerDuty", notifier, context)

    @staticmethod
    def _send(channel: str, notifier: BaseNotifier, context: Any) -> None:
        try:
            notifier.notify(context)
        except Exception as exc:  # an alert channel down must not hide the others
            log.error("%s alert failed: %s: %s", channel, type(exc).__name__, exc)
