"""The local stack's event plumbing with real events: the stream pump and the scheduler.

The pump must deliver Lambda-shaped batches of the instances table's stream to the handler that
app.py registers, at least once, resuming after the last record it delivered.
"""

from __future__ import annotations

import pytest
from chalice.app import DynamoDBEventConfig
from chalice.local import LambdaContext

import app as app_module
from chalicelib import aws, models, timeutil
from chalicelib.settings import settings
from local.pump import StreamPump
from local.stack import _registered
from tests.conftest import arrange, wait_for


def make_pump(tmp_path, handler) -> StreamPump:
    return StreamPump(
        dynamodb=aws.client("dynamodb"),
        streams=aws.client("dynamodbstreams"),
        table_name=settings.instances_table,
        handler=handler,
        context=LambdaContext("on_instance_change", 512, max_runtime_ms=60_000),
        checkpoint=tmp_path / "positions.json",
    )


@pytest.fixture
def fresh_pump(stack, tmp_path):
    """A second pump on the same stream, already past everything written so far."""

    def build(handler):
        make_pump(tmp_path, lambda event, context: {}).pump_once()
        return make_pump(tmp_path, handler)

    return build


def records_of(events):
    return [record for event in events for record in event["Records"]]


def test_pump_delivers_inserts_and_modifies_to_the_registered_handler(user_api, provider, fresh_pump):
    registered = _registered(app_module, DynamoDBEventConfig)
    events = []

    def spy(event, context):
        events.append(event)
        return registered(event, context)

    pump = fresh_pump(spy)
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 2}).json()
    user_api.delete(f"/instances/{request['instances'][0]['id']}")
    ids = {i["id"] for i in request["instances"]}

    def state_changes():
        # Other edits are records too (the launcher notes why an instance waits): the states tell.
        for record in records_of(events):
            image = record["dynamodb"]
            if image["Keys"]["id"]["S"] in ids and (
                record["eventName"] == "INSERT" or image["OldImage"]["state"] != image["NewImage"]["state"]
            ):
                yield record

    def seen():
        pump.pump_once()
        mine = list(state_changes())
        return mine if len(mine) >= 3 else None

    mine = wait_for(seen)
    assert [r["eventName"] for r in mine] == ["INSERT", "INSERT", "MODIFY"]
    for record in mine:
        assert record["eventSource"] == "aws:dynamodb"
        assert record["eventSourceARN"].startswith(f"arn:aws:dynamodb:{settings.region}:")
        assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], float)
        assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    modify = mine[2]["dynamodb"]
    assert (modify["OldImage"]["state"]["S"], modify["NewImage"]["state"]["S"]) == ("PENDING", "DELETED")
    assert [e for e in events if len(e["Records"]) > 1], "records arrive in batches"


def test_a_failed_batch_is_delivered_again_and_a_new_pump_resumes_after_it(user_api, provider, fresh_pump, tmp_path):
    calls = []

    def flaky(event, context):
        calls.append([r["dynamodb"]["SequenceNumber"] for r in event["Records"]])
        if len(calls) == 1:
            raise RuntimeError("transient")
        return {"batchItemFailures": []}

    pump = fresh_pump(flaky)
    user_api.post("/requests", json={"label": "ubuntu-small", "count": 2})
    wait_for(lambda: pump.pump_once() or len(calls) >= 2)
    assert calls[0] == calls[1][: len(calls[0])], "the failed batch comes again, from its first record"
    delivered = [seq for batch in calls[1:] for seq in batch]
    resumed = []
    make_pump(tmp_path, lambda event, context: resumed.append(event)).pump_once()
    assert not [r for r in records_of(resumed) if r["dynamodb"]["SequenceNumber"] in delivered]


def test_batch_item_failures_resume_at_the_first_failed_record(user_api, provider, fresh_pump):
    calls = []

    def partial(event, context):
        sequence = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
        calls.append(sequence)
        if len(calls) == 1 and len(sequence) >= 2:
            return {"batchItemFailures": [{"itemIdentifier": sequence[1]}]}
        return {"batchItemFailures": []}

    pump = fresh_pump(partial)
    user_api.post("/requests", json={"label": "ubuntu-small", "count": 3})
    wait_for(lambda: pump.pump_once() or sum(map(len, calls)) >= 5)
    first = calls[0]
    assert len(first) >= 2
    assert calls[1][0] == first[1], "redelivery starts at the failed record, not before"


def test_a_batch_that_keeps_failing_is_skipped_after_bounded_retries(user_api, provider, fresh_pump):
    calls = []

    def broken(event, context):
        calls.append(event)
        raise RuntimeError("always")

    pump = fresh_pump(broken)
    user_api.post("/requests", json={"label": "ubuntu-small", "count": 1})
    wait_for(lambda: pump.pump_once() or len(calls) >= 3)
    before = len(calls)
    pump.pump_once()
    assert len(calls) == before, "the stream moved on"


def test_stack_pump_and_worker_finish_a_teardown(user_api, provider):
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1}).json()
    instance = models.Instance.get(request["instances"][0]["id"])
    arrange(instance, models.LAUNCHING)  # claimed, before any provider was chosen
    response = user_api.delete(f"/instances/{instance.id}")
    assert response.json()["state"] == "DELETING"
    done = wait_for(lambda: (i := user_api.get(f"/instances/{instance.id}").json())["state"] == "DELETED" and i)
    assert done["deleted_at"]


def test_scheduler_expires_instances_whose_lifetime_ended(stack, user_api, provider):
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 2, "lifetime_minutes": 30}).json()
    past = timeutil.iso(timeutil.parse(request["created_at"]).replace(year=2020))
    expired = models.Instance.get(request["instances"][0]["id"])
    expired.update(actions=[models.Instance.expires_at.set(past)])
    runs = stack.scheduler.runs
    wait_for(lambda: user_api.get(f"/instances/{expired.id}").json()["state"] == "DELETED")
    wait_for(lambda: stack.scheduler.runs > runs)  # counted once the pass returns
    kept = user_api.get(f"/instances/{request['instances'][1]['id']}").json()
    assert kept["state"] == "PENDING"
