"""Event-driven runs end to end: the landing zone on moto's S3 server, which notifies an SQS
queue (moto too) of new stream files; a real Airflow (scheduler, triggerer, API server:
tests/dags/scheduler.py) whose asset watcher reads the queue. No run is triggered by hand and
the DAG has no time schedule here: every run comes from a notification.

1. a message that is no S3 notification is dropped (logged by the triggerer), never a run;
2. one file PUT into S3: one run, and the published marts contain its plays;
3. a burst of 100 files: one run or a few, never 100, and every play published;
4. a duplicated notification: the run it wakes finds nothing new; the marts do not change.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from loaders.config import Settings
from loaders.demo.generate import generate
from loaders.demo.seed import seed
from tests.dags.helpers import DAG_ID, assert_marts_match_reference
from tests.dags.scheduler import TERMINAL, Airflow, airflow_instance
from tests.dags.test_events import PREFIX, aws_conn, notified_queue
from tests.dags.test_scheduler_runs import DAG_ENV, RUN_TIMEOUT, _stop_embedded_rds, published_marts

pytestmark = pytest.mark.slow

BURST = 100


def _runs(airflow: Airflow) -> list[dict[str, Any]]:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100&order_by=run_after"
    runs: list[dict[str, Any]] = airflow.get(path)["dag_runs"]
    return runs


def _asset_events(airflow: Airflow) -> list[dict[str, Any]]:
    """The newest asset events (a trigger's event carries its payload: the stream file keys)."""
    events: list[dict[str, Any]] = airflow.get(
        "/api/v2/assets/events?limit=100&order_by=-timestamp"
    )["asset_events"]
    return events


def _settle(airflow: Airflow, before: int, done: Any, timeout: float) -> list[dict[str, Any]]:
    """Wait until ``done()`` holds and every run is over; the runs created since ``before``."""

    def settled() -> list[dict[str, Any]] | None:
        runs = _runs(airflow)
        new = runs[before:]
        if new and all(r["state"] in TERMINAL for r in runs) and done():
            return new
        return None

    return airflow.wait_until(settled, timeout, "the event-driven runs did not settle", interval=2)


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as stream:
        header, *rows = list(csv.reader(stream))
    return header, rows


def _split(files: list[Path], out: Path, parts: int) -> list[Path]:
    """The plays of ``files`` in ``parts`` new CSV files (a burst of small deliveries)."""
    header: list[str] = []
    rows: list[list[str]] = []
    for path in files:
        header, more = _rows(path)
        rows += more
    out.mkdir()
    paths = []
    for n in range(parts):
        path = out / f"listens_burst_part-{n:03d}.csv"
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *rows[n::parts]])
        path.write_text(buffer.getvalue())
        paths.append(path)
    return paths


@pytest.fixture
def event_stack(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    with ExitStack() as stop:
        airflow = stop.enter_context(airflow_instance(tmp_path / "airflow"))  # migrates meanwhile:
        dbt_manifest = request.getfixturevalue("dbt_manifest")
        workdir = tmp_path / "work"
        landing = f"s3://{s3_bucket}/{PREFIX}"
        settings = Settings.from_env({"MUSIC_ELT_LANDING": landing}, workdir=workdir).model_copy(
            update={"s3_endpoint_url": s3_endpoint}
        )
        stop.callback(_stop_embedded_rds, settings)
        data = tmp_path / "data"
        generate(data, streams=3000, days=2, seed=11)
        seed_dir = tmp_path / "seed"
        (seed_dir / "streams").mkdir(parents=True)
        for name in ("users.csv", "songs.csv"):
            shutil.copy(data / name, seed_dir / name)
        seed(settings, seed_dir, progress=lambda _line: None)  # the RDS tables, no stream file
        queue = notified_queue(s3_endpoint, s3_bucket, f"q-{s3_bucket}")
        airflow.start(
            {
                **DAG_ENV,
                "MUSIC_ELT_WORKDIR": str(workdir),
                "MUSIC_ELT_DBT_MANIFEST": str(dbt_manifest),
                "MUSIC_ELT_LANDING": landing,
                "MUSIC_ELT_SQS_QUEUE_URL": queue,
                "AIRFLOW_CONN_AWS_CONN": aws_conn(s3_endpoint),
                # Airflow registers a watcher when it parses the file of an unpaused DAG
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            }
        )
        yield {
            "airflow": airflow,
            "settings": settings,
            "data": data,
            "files": sorted((data / "streams").iterdir()),
            "queue": queue,
            "bucket": s3_bucket,
            "endpoint": s3_endpoint,
            "tmp": tmp_path,
        }


def test_new_files_in_s3_run_the_dag_and_reach_the_published_marts(
    event_stack: dict[str, Any],
) -> None:
    import boto3

    airflow: Airflow = event_stack["airflow"]
    settings: Settings = event_stack["settings"]
    bucket, queue = event_stack["bucket"], event_stack["queue"]
    s3 = boto3.client("s3", endpoint_url=event_stack["endpoint"])
    sqs = boto3.client("sqs", endpoint_url=event_stack["endpoint"], region_name="us-east-1")
    first, *rest = event_stack["files"]

    def archived() -> int:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/archive/streams/")
        return int(listed.get("KeyCount", 0))

    # 1 and 2: a message that is no notification, then one file
    sqs.send_message(QueueUrl=queue, MessageBody="not an S3 notification")
    key = f"{PREFIX}/streams/{first.name}"
    s3.upload_file(str(first), bucket, key)
    (run,) = _settle(airflow, 0, lambda: archived() == 1, RUN_TIMEOUT)
    assert (run["state"], run["run_type"]) == ("success", "asset_triggered"), airflow.explain(
        run["dag_run_id"]
    )
    assert_marts_match_reference(published_marts(settings), event_stack["data"], [first])
    triggerer = (airflow.home / "triggerer.log").read_text(errors="replace")
    assert "not an S3 notification" in triggerer and "dropped message" in triggerer

    # 3: a burst of small files
    burst = _split(rest, event_stack["tmp"] / "burst", BURST)
    for path in burst:
        s3.upload_file(str(path), bucket, f"{PREFIX}/streams/{path.name}")
    runs = _settle(airflow, 1, lambda: archived() == 1 + BURST, 3 * RUN_TIMEOUT)
    assert 1 <= len(runs) <= 5, [(r["dag_run_id"], r["run_type"]) for r in runs]
    assert all(r["state"] == "success" for r in runs), airflow.explain(runs[-1]["dag_run_id"])
    marts = published_marts(settings)
    assert_marts_match_reference(marts, event_stack["data"], [first, *burst])

    # 4: the first file's notification again: the plan reads the ledger, not the message. The
    # burst's last notifications may still wake one more run after its files were archived; the
    # duplicate's run is the one its own asset event created, and every run since finds nothing.
    before = len(_runs(airflow))
    last_event = max(event["id"] for event in _asset_events(airflow))
    record = {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": key}}}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"Records": [record]}))

    def woken() -> list[str]:
        """The runs the duplicate's asset event created (empty until it did)."""
        duplicate = [
            event
            for event in _asset_events(airflow)
            if event["id"] > last_event and event["extra"]["payload"]["message_batch"] == [key]
        ]
        return [run["run_id"] for event in duplicate for run in event["created_dagruns"]]

    since = _settle(airflow, before, lambda: bool(woken()), RUN_TIMEOUT)
    (again,) = woken()
    assert again in [run["dag_run_id"] for run in since], since
    for run in since:
        states = airflow.task_states(run["dag_run_id"])
        assert run["state"] == "success", airflow.explain(run["dag_run_id"])
        assert states["load"] == ["skipped"], states  # nothing new: no load, no build
    assert published_marts(settings) == marts
