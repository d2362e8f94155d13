"""The stream pump: what Lambda's event source mapping does for the instances table's stream.

It reads the stream shard by shard and invokes the registered handler with Lambda-shaped events:
batches, at least once, in order per shard. A handler may answer `batchItemFailures`; delivery
then resumes at the first failed record, as with `ReportBatchItemFailures`. A batch that keeps
failing is skipped after `max_attempts` (Lambda's bounded retries), so it never blocks the stream.
The last delivered sequence number is kept in a file, so a restarted pump resumes after it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from local.statefiles import read, write_private

log = logging.getLogger("oms.local.pump")

Handler = Callable[[dict, Any], Any]


def lambda_record(record: dict, stream_arn: str, region: str) -> dict:
    """A DynamoDB Streams record as Lambda delivers it (creation time as epoch seconds)."""
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        dynamodb["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": record.get("eventID") or uuid.uuid4().hex,
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion", region),
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }


class StreamPump:
    # How long the stream's ARN and shard list are trusted before being read again.
    LAYOUT_SECONDS = 10.0

    def __init__(
        self,
        *,
        dynamodb: Any,
        streams: Any,
        table_name: str,
        handler: Handler,
        context: Any,
        checkpoint: Path,
        batch_size: int = 100,
        poll_seconds: float = 0.1,
        max_attempts: int = 3,
    ) -> None:
        self._dynamodb = dynamodb
        self._streams = streams
        self._table = table_name
        self._handler = handler
        self._context = context
        self._checkpoint = checkpoint
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._max_attempts = max_attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One pass at a time: a caller's pump_once waits for the thread's pass, then drains the rest,
        # so that when it returns everything written before the call has been handled.
        self._passing = threading.Lock()
        self._positions: dict[str, str] = json.loads(read(checkpoint) or "{}")
        self.delivered = 0
        self._layout: tuple[str, list[str]] | None = None
        self._layout_at = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stream-pump", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    # --- work ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.pump_once()
            except Exception:
                log.exception("stream pump pass failed; retrying")
                self._stop.wait(1.0)
                continue
            self._stop.wait(self._poll)

    def pump_once(self) -> int:
        """Deliver whatever is waiting on every shard; returns how many records were delivered."""
        with self._passing:
            return self._pass()

    def _pass(self) -> int:
        now = time.monotonic()
        if self._layout is None or now - self._layout_at > self.LAYOUT_SECONDS:
            stream_arn = self._dynamodb.describe_table(TableName=self._table)["Table"]["LatestStreamArn"]
            shards = self._streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
            self._layout, self._layout_at = (stream_arn, [s["ShardId"] for s in shards]), now
        stream_arn, shard_ids = self._layout
        return sum(self._drain(stream_arn, shard_id) for shard_id in shard_ids)

    def _iterator(self, stream_arn: str, shard_id: str) -> str:
        after = self._positions.get(shard_id)
        kwargs = (
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
            if after
            else {"ShardIteratorType": "TRIM_HORIZON"}
        )
        return self._streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard_id, **kwargs)["ShardIterator"]

    def _drain(self, stream_arn: str, shard_id: str) -> int:
        delivered = 0
        while not self._stop.is_set():
            # A fresh iterator from the checkpoint each round: moto's can go stale after errors.
            try:
                iterator = self._iterator(stream_arn, shard_id)
                records = self._streams.get_records(ShardIterator=iterator, Limit=self._batch_size)["Records"]
            except ClientError as error:
                log.warning("stream read failed (%s); re-opening", error.response["Error"]["Code"])
                self._layout = None
                return delivered
            if not records:
                return delivered
            delivered += self._deliver(stream_arn, shard_id, records)
        return delivered

    def _deliver(self, stream_arn: str, shard_id: str, records: list[dict]) -> int:
        region = stream_arn.split(":")[3]
        for attempt in range(1, self._max_attempts + 1):
            event = {"Records": [lambda_record(r, stream_arn, region) for r in records]}
            try:
                result = self._handler(event, self._context)
            except Exception:
                log.exception("stream handler failed on a batch of %d (attempt %d)", len(records), attempt)
                continue
            failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            first_failed = next((i for i, r in enumerate(records) if r["dynamodb"]["SequenceNumber"] in failed), None)
            if first_failed is None:
                self._advance(shard_id, records[-1])
                self.delivered += len(records)
                return len(records)
            # Resume at the first failed record: the ones before it are done.
            if first_failed:
                self._advance(shard_id, records[first_failed - 1])
                self.delivered += first_failed
            records = records[first_failed:]
        log.error("skipping %d stream records after %d attempts", len(records), self._max_attempts)
        self._advance(shard_id, records[-1])
        return len(records)

    def _advance(self, shard_id: str, record: dict) -> None:
        self._positions[shard_id] = record["dynamodb"]["SequenceNumber"]
        write_private(self._checkpoint, json.dumps(self._positions))
