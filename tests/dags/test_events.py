"""The SQS watcher of event-driven runs (dags/music_elt_airflow/events.py) against moto's server: S3
notifying an SQS queue of new objects, as a bucket configured per dags/README.md does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from loaders.config import ConfigError

PREFIX = "music"  # MUSIC_ELT_LANDING=s3://<bucket>/music


def notified_queue(endpoint: str, bucket: str, name: str) -> str:
    """An SQS queue that ``bucket`` notifies of objects created under <PREFIX>/streams/ (the
    setup dags/README.md shows); its URL."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    boto3.client("s3", endpoint_url=endpoint).put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": f"{PREFIX}/streams/"}]}
                    },
                }
            ]
        },
    )
    return str(url)


def aws_conn(endpoint: str) -> str:
    """The ``aws_conn`` Airflow connection (JSON) for moto's server."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    )


def _config(bucket: str, queue: str, **env: str) -> Any:
    from music_elt_airflow.runtime import DagConfig

    return DagConfig.from_env(
        {
            "MUSIC_ELT_LANDING": f"s3://{bucket}/{PREFIX}",
            "MUSIC_ELT_SQS_QUEUE_URL": queue,
            "MUSIC_ELT_SQS_WAIT_SECONDS": "1",
            "MUSIC_ELT_DBT_MANIFEST": "/nonexistent/manifest.json",  # not read here
            **env,
        }
    )


def _next_event(trigger: Any, timeout: float = 30) -> Any:
    async def first() -> Any:
        return await asyncio.wait_for(anext(trigger.run()), timeout)

    return asyncio.run(first())


def test_watcher_fires_for_stream_files_and_drops_the_rest(
    airflow_home: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from airflow.sdk import AssetOrTimeSchedule

    from music_elt_airflow import runtime

    monkeypatch.setenv("AIRFLOW_CONN_AWS_CONN", aws_conn(s3_endpoint))
    queue = notified_queue(s3_endpoint, s3_bucket, f"q-{s3_bucket}")
    sqs = boto3.client("sqs", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    sqs.send_message(QueueUrl=queue, MessageBody="not json {")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"Records": "?"}))
    body = b"user_id,track_id,listen_time\n"
    s3.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/archive/streams/old.csv", Body=body)
    s3.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/streams/readme.txt", Body=body)
    for n in range(15):
        s3.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/streams/day 1/part-{n:03d}.csv", Body=body)

    schedule = runtime.schedule(_config(s3_bucket, queue))
    assert isinstance(schedule, AssetOrTimeSchedule)  # the schedule stays as a safety net
    (streams,) = schedule.asset_condition.objects
    (watcher,) = streams.watchers
    event = _next_event(watcher.trigger)
    # every notification in the queue (the test event, 15 files, in batches of 10) is one event
    assert event.payload["message_batch"] == [
        f"{PREFIX}/streams/day 1/part-{n:03d}.csv" for n in range(15)
    ]
    # everything read was deleted, the dropped messages too: nothing comes back
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }

    # a serialized trigger (what the triggerer runs) keeps its settings
    path, kwargs = watcher.trigger.serialize()
    assert path == "music_elt_airflow.events.StreamFilesTrigger"
    assert kwargs["streams_prefix"] == f"{PREFIX}/streams/" and kwargs["aws_conn_id"] == "aws_conn"


def test_schedule_without_a_queue_and_bad_settings(airflow_home: Path, s3_bucket: str) -> None:
    from music_elt_airflow import runtime

    assert runtime.schedule(_config(s3_bucket, "")) == "@hourly"
    only_events = runtime.schedule(_config(s3_bucket, "http://q", MUSIC_ELT_SCHEDULE=""))
    assert [a.name for a in only_events] == [runtime.STREAMS_ASSET]
    with pytest.raises(ConfigError, match="MUSIC_ELT_LANDING=s3://"):
        _config(s3_bucket, "http://q", MUSIC_ELT_LANDING="/tmp/landing")
    with pytest.raises(ConfigError, match="MUSIC_ELT_SQS_WAIT_SECONDS must be 1 to 20"):
        _config(s3_bucket, "http://q", MUSIC_ELT_SQS_WAIT_SECONDS="30")
