"""Callbacks: a real receiver on 127.0.0.1 gets signed events (ready, failed, expiring), retried
with backoff until it takes them; URLs that could reach private addresses are refused."""

from __future__ import annotations

import json
import socket
import subprocess
from datetime import timedelta

import pytest

from chalicelib import callbacks, lifecycle, models, timeutil, worker
from tests.conftest import CallbackReceiver, verify_callback


@pytest.fixture
def receiver():
    r = CallbackReceiver()
    yield r
    r.close()


def _bring_up(instance_id: str, provider: str) -> None:
    instance = models.Instance.get(instance_id)
    assert lifecycle.claim(instance, provider)
    assert lifecycle.record_server(instance, "srv-" + instance_id)
    assert lifecycle.came_up(instance, [], family="ipv4")


def _request(user_api, url: str, count: int = 2, **extra) -> dict:
    answer = user_api.post("/requests", json={"label": "ubuntu-small", "count": count, "callback_url": url, **extra})
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_ready_is_posted_once_signed_and_a_repeat_carries_the_same_id(user_api, provider, receiver):
    secret = user_api.get("/me").json()["callback_secret"]
    request = _request(user_api, receiver.url)
    assert request["callback_url"] == receiver.url and request["callbacks"] == []
    _bring_up(request["instances"][0]["id"], provider["name"])
    callbacks.on_settled([request["id"]], 3.0)  # what the stream handler runs: partial, no event
    assert receiver.received == []
    _bring_up(request["instances"][1]["id"], provider["name"])
    callbacks.on_settled([request["id"], request["id"]], 3.0)
    callbacks.on_settled([request["id"]], 3.0)  # the stream delivers a record again
    callbacks.sweep()
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    assert verify_callback(secret, headers, body)
    assert not verify_callback(secret, headers, body + b" ")
    event = json.loads(body)
    assert event["type"] == "ready" and event["request_id"] == request["id"]
    assert event["request"]["state"] == "ready" and event["request"]["counts"]["ACTIVE"] == 2
    assert headers["x-oms-event-id"] == event["id"]
    view = user_api.get(f"/requests/{request['id']}").json()
    assert [(c["id"], c["type"], c["state"], c["tries"]) for c in view["callbacks"]] == [
        (event["id"], "ready", "delivered", 1)
    ]
    # At least once: the same event sent again (as after a lost answer) is the same bytes and id.
    models.Request.get(request["id"]).update(
        actions=[
            models.Request.callbacks[event["id"]]["state"].set("pending"),
            models.Request.callback_due_at.set(timeutil.now_iso()),
            models.Request.callback_queue.set(models.CALLBACK_QUEUE),
        ]
    )
    callbacks.sweep()
    assert len(receiver.received) == 2 and receiver.received[1][1] == body


def test_a_receiver_failing_twice_gets_the_event_on_the_third_try(user_api, provider, receiver):
    receiver.statuses = [500, 500]
    request = _request(user_api, receiver.url, count=1)
    _bring_up(request["instances"][0]["id"], provider["name"])
    callbacks.on_settled([request["id"]], 3.0)
    state = user_api.get(f"/requests/{request['id']}").json()["callbacks"][0]
    assert (state["state"], state["tries"], state["last_error"]) == ("pending", 1, "HTTP 500")
    # Not due before its backoff of 1 s (asked as of just before it: a busy machine may be past it).
    before = timeutil.iso(timeutil.parse(state["next_try_at"]) - timedelta(seconds=1))
    assert callbacks.deliver_pending(now=before) == []
    assert len(receiver.received) == 1
    timeutil.clock.advance(1)
    callbacks.sweep()
    state = user_api.get(f"/requests/{request['id']}").json()["callbacks"][0]
    assert (state["state"], state["tries"]) == ("pending", 2)
    assert timeutil.parse(state["next_try_at"]) >= timeutil.now().replace(microsecond=0)
    timeutil.clock.advance(2)
    callbacks.sweep()
    state = user_api.get(f"/requests/{request['id']}").json()["callbacks"][0]
    assert (state["state"], state["tries"], state["last_error"]) == ("delivered", 3, None)
    ids = {e["id"] for e in receiver.events()}
    assert len(receiver.received) == 3 and len(ids) == 1


def test_failed_is_posted_when_an_instance_fails(user_api, provider, receiver):
    request = _request(user_api, receiver.url, count=1)
    assert lifecycle.give_up(models.Instance.get(request["instances"][0]["id"]))
    callbacks.on_settled([request["id"]], 3.0)
    assert [e["type"] for e in receiver.events()] == ["failed"]
    assert receiver.events()[0]["request"]["counts"]["FAILED"] == 1


def test_expiring_is_posted_minutes_before_the_end(user_api, provider, receiver):
    request = _request(user_api, receiver.url, count=1, lifetime_minutes=30)
    callbacks.sweep()
    assert receiver.received == []
    timeutil.clock.advance((30 - 5) * 60 + 1)
    callbacks.sweep()
    callbacks.sweep()
    events = receiver.events()
    assert [e["type"] for e in events] == ["expiring"]
    assert events[0]["request"]["expires_at"] == request["expires_at"]
    # An extension moves the end: a new warning comes before the new one.
    user_api.post(f"/requests/{request['id']}/extend", json={"minutes": 10})
    callbacks.sweep()
    assert len(receiver.received) == 1
    timeutil.clock.advance(10 * 60)
    callbacks.sweep()
    assert [e["type"] for e in receiver.events()] == ["expiring", "expiring"]
    assert len({e["id"] for e in receiver.events()}) == 2


def test_https_is_verified_for_the_urls_host_while_connecting_to_the_checked_address(
    user_api, provider, tmp_path, monkeypatch
):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    receiver = CallbackReceiver(tls=(str(cert), str(key)))
    try:
        request = _request(user_api, receiver.url, count=1)
        _bring_up(request["instances"][0]["id"], provider["name"])
        callbacks.on_settled([request["id"]], 3.0)
        state = user_api.get(f"/requests/{request['id']}").json()["callbacks"][0]
        assert state["state"] == "pending" and "CERTIFICATE_VERIFY_FAILED" in state["last_error"]
        assert receiver.received == []
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the receiver's certificate is now trusted
        timeutil.clock.advance(1)
        callbacks.sweep()
        assert [e["type"] for e in receiver.events()] == ["ready"]
        assert receiver.received[0][0]["host"] == receiver.url.split("/")[2]
    finally:
        receiver.close()


def _a_name_for_loopback() -> str | None:
    for name in (socket.gethostname(), "vm", "runsc"):
        try:
            if socket.gethostbyname(name).startswith("127.") and name not in callbacks.LOOPBACK_NAMES:
                return name
        except OSError:
            continue
    return None


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "https://10.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/",
        "https://[::ffff:169.254.169.254]/",
        "https://100.64.0.1/",
        "https://192.168.1.10/",
        "https://0.0.0.0/",
        "https://224.0.0.1/",
        "http://example.com/",  # plain http only to loopback, on the local stack
        "ftp://example.com/",
    ],
)
def test_callback_urls_that_could_reach_private_addresses_are_refused(user_api, provider, url):
    answer = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1, "callback_url": url})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "callback_url"


def test_a_host_name_resolving_to_loopback_is_refused(user_api, provider):
    name = _a_name_for_loopback()
    if name is None:
        pytest.skip("no host name other than localhost resolves to loopback here")
    answer = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1, "callback_url": f"https://{name}/"})
    assert answer.status_code == 400, answer.text
    assert "not public" in answer.json()["error"]["message"]


def test_the_stream_handler_finds_requests_whose_instances_settled():
    from chalice.app import DynamoDBRecord

    def record(old: str | None, new: str) -> DynamoDBRecord:
        image = lambda s: {"state": {"S": s}, "request_id": {"S": "r-1"}}  # noqa: E731
        change = {
            "Keys": {"id": {"S": "i-1"}},
            "NewImage": image(new),
            "SequenceNumber": "1",
            "ApproximateCreationDateTime": 0,
            "SizeBytes": 1,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if old:
            change["OldImage"] = image(old)
        return DynamoDBRecord(
            {
                "dynamodb": change,
                "eventName": "MODIFY",
                "awsRegion": "us-east-1",
                "eventID": "1",
                "eventSourceARN": "x",
            },
            context=None,
        )

    assert worker.settled_requests([record("BUILDING", "ACTIVE"), record("PENDING", "FAILED")]) == {"r-1": ["1", "1"]}
    assert worker.settled_requests([record("ACTIVE", "ACTIVE"), record("PENDING", "LAUNCHING")]) == {}
