"""Event-driven runs: S3 ``ObjectCreated`` notifications read from an SQS queue.

The bucket notifies the queue of every object created under the landing zone's ``streams/``
prefix. An asset watcher (:class:`StreamFilesTrigger`, run by Airflow's triggerer) reads the
queue; each batch of notifications naming stream files becomes one event of the asset
``music_elt.landing.streams``, and the DAG, scheduled on that asset, runs. The message only
wakes the DAG: what a run loads is what its plan finds in landing against the ledger, so a lost
message (the next one, or the schedule, catches up) or a duplicated one (a run that finds
nothing new) costs nothing.

The Amazon provider's SQS trigger (what ``MessageQueueTrigger(scheme="sqs")`` runs) fires on any
message, and its message filters leave the messages they reject in the queue, to come back
forever. This trigger deletes every message it receives and fires only for stream files:
S3's ``s3:TestEvent``, other keys and messages that are not S3 notifications are logged and
dropped.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger

from loaders.landing import is_stream_file_name


class StreamFilesTrigger(SqsSensorTrigger):
    """An SQS trigger that fires with the S3 keys of new stream files under ``streams_prefix``
    (``<landing prefix>/streams/``), deleting every message it reads."""

    def __init__(self, *, streams_prefix: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.streams_prefix = streams_prefix

    def serialize(self) -> tuple[str, dict[str, Any]]:
        path, kwargs = super().serialize()
        return path, {**kwargs, "streams_prefix": self.streams_prefix}

    async def poke(self, client: Any) -> list[str]:
        """Receive up to ``num_batches`` batches of messages, delete them, and return the keys
        of the stream files they name (empty: the trigger keeps polling)."""
        keys: list[str] = []
        for batch in range(self.num_batches):
            receive: dict[str, Any] = {
                "QueueUrl": self.sqs_queue,
                "MaxNumberOfMessages": self.max_messages,
                # wait for the first message only; then take what else is there, at once
                "WaitTimeSeconds": self.wait_time_seconds if batch == 0 else 0,
            }
            if self.visibility_timeout is not None:
                receive["VisibilityTimeout"] = self.visibility_timeout
            messages = (await client.receive_message(**receive)).get("Messages", [])
            if not messages:
                break
            for message in messages:
                keys += self.stream_keys(message.get("Body", ""), message.get("MessageId", "?"))
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            await client.delete_message_batch(QueueUrl=self.sqs_queue, Entries=entries)
        if keys:
            self.log.info("%d new stream file(s), e.g. %s", len(keys), keys[0])
        return sorted(set(keys))

    def stream_keys(self, body: str, message_id: str) -> list[str]:
        """The stream file keys an S3 notification names; others are logged and dropped."""
        try:
            notification = json.loads(body)
            if notification.get("Event") == "s3:TestEvent":
                self.log.info("dropped S3's test event (message %s)", message_id)
                return []
            records = notification["Records"]
            found = [
                (str(r["eventName"]), unquote_plus(str(r["s3"]["object"]["key"]))) for r in records
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            self.log.warning(
                "dropped message %s: not an S3 event notification: %.200r", message_id, body
            )
            return []
        keys = [
            key
            for event, key in found
            if event.startswith("ObjectCreated:")
            and key.startswith(self.streams_prefix)
            and is_stream_file_name(key)
        ]
        if len(keys) < len(found):
            self.log.info(
                "dropped %d record(s) of message %s: not a new stream file under %s",
                len(found) - len(keys),
                message_id,
                self.streams_prefix,
            )
        return keys
