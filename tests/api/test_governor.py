"""The rate governor (moto in-process, no cloud): a provider's rate and create settings, turns,
429s waited out and retried, and the hold shared through the provider item."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from chalicelib import cloud, governor, models
from tests.conftest import provider_body


def answer(status: int, body: dict, **headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.raw = io.BytesIO(response._content)
    response.headers.update({"Content-Type": "application/json", **headers})
    response.request = requests.Request("POST", "http://nova.example/v2.1/servers").prepare()
    return response


def raised(status: int, body: dict, **headers: str) -> Exception:
    try:
        os_exc.raise_from_response(answer(status, body, **headers))
    except os_exc.HttpException as error:
        return error
    raise AssertionError("openstacksdk raised nothing")


OVH_429 = {"error": {"status": "429 Too Many Requests", "message": "Rate limit exceeded"}}
NOVA_413_QUOTA = {"overLimit": {"code": 413, "message": "Quota exceeded for instances"}}
NOVA_413 = {"overLimit": {"code": 413, "message": "This request was rate-limited.", "retryAfter": "2"}}


@pytest.mark.parametrize(
    ("error", "error_class", "retry_after"),
    [
        (raised(429, OVH_429, **{"Retry-After": "1"}), cloud.RATE_LIMITED, 1.0),
        (raised(429, OVH_429), cloud.RATE_LIMITED, None),
        (raised(413, NOVA_413, **{"Retry-After": "2"}), cloud.RATE_LIMITED, 2.0),
        # An older Nova's quota error is a 413 with Retry-After too: it stays a quota error.
        (raised(413, NOVA_413_QUOTA, **{"Retry-After": "0"}), cloud.QUOTA, None),
        (
            ks_exc.from_response(
                answer(429, OVH_429, **{"Retry-After": "3"}), "POST", "http://keystone/v3/auth/tokens"
            ),
            cloud.RATE_LIMITED,
            3.0,
        ),
    ],
)
def test_rate_limits_are_their_own_class_with_the_wait_the_service_asked_for(error, error_class, retry_after):
    classified = cloud.classify(error)
    assert classified.error_class == error_class, classified.message
    assert classified.retry_after == retry_after


def test_retry_after_as_an_http_date_is_the_seconds_until_then():
    when = datetime.now(UTC) + timedelta(seconds=30)
    classified = cloud.classify(raised(429, OVH_429, **{"Retry-After": format_datetime(when, usegmt=True)}))
    assert 25 <= classified.retry_after <= 31


def test_the_rate_settings_have_defaults_are_changed_and_go_back_to_them(admin_api):
    made = admin_api.post("/providers", json=provider_body()).json()
    assert (made["rate_limit_per_second"], made["max_concurrent_creates"]) == (None, 8)
    assert made["health"]["rate_limited_until"] is None
    path = f"/providers/{made['name']}"
    changed = admin_api.patch(path, json={"rate_limit_per_second": 2.5, "max_concurrent_creates": 3}).json()
    assert (changed["rate_limit_per_second"], changed["max_concurrent_creates"]) == (2.5, 3)
    back = admin_api.patch(path, json={"rate_limit_per_second": None, "max_concurrent_creates": None}).json()
    assert (back["rate_limit_per_second"], back["max_concurrent_creates"]) == (None, 8)
    for wrong in ({"rate_limit_per_second": 0}, {"max_concurrent_creates": 0}, {"rate_limit_per_second": "fast"}):
        assert admin_api.patch(path, json=wrong).status_code == 400, wrong


@pytest.fixture
def account(admin_api) -> models.Provider:
    name = admin_api.post("/providers", json=provider_body()).json()["name"]
    yield models.Provider.get(name)
    governor._held_until.pop(name, None)


class Wire:
    """A transport's `send` that refuses the first `limited` requests (429 with `retry_after`)."""

    def __init__(self, limited: int, retry_after: str | None = "0.3") -> None:
        self.limited, self.retry_after, self.sent = limited, retry_after, []

    def __call__(self, request, **kwargs) -> requests.Response:
        self.sent.append(time.monotonic())
        if len(self.sent) <= self.limited:
            return answer(429, OVH_429, **({"Retry-After": self.retry_after} if self.retry_after else {}))
        return answer(200, {})


def operation(wire: Wire, requests_made: int = 1):
    """An operation of `cloud`'s: some HTTP requests through the governed transport."""

    def run(provider):
        return [governor.send(wire, "GET /servers") for _ in range(requests_made)][-1].status_code

    return run


def test_a_429_is_waited_out_the_request_sent_again_and_held_for_every_process(account):
    wire = Wire(limited=2)
    assert governor.call(account, operation(wire)) == 200
    gaps = [later - earlier for earlier, later in zip(wire.sent, wire.sent[1:], strict=False)]
    assert len(gaps) == 2 and all(gap >= 0.29 for gap in gaps)
    stored = models.Provider.get(account.name, consistent_read=True)
    assert stored.rate_limited_until is not None  # the hold, for processes that read the item
    # Another process knows nothing of this one's hold but what the item says.
    governor._held_until.pop(account.name)
    stored.rate_limited_until = time.time() + 0.5
    started = time.monotonic()
    governor.call(stored, operation(Wire(limited=0)))
    assert time.monotonic() - started >= 0.45


def test_only_the_refused_request_is_sent_again_not_the_operation(account):
    wire = Wire(limited=1, retry_after="0.05")
    assert governor.call(account, operation(wire, requests_made=3)) == 200
    assert len(wire.sent) == 4


def test_rate_limits_are_retried_a_bounded_number_of_times_within_the_budget(account):
    wire = Wire(limited=100, retry_after="0.05")
    assert governor.call(account, operation(wire)) == 429  # openstacksdk raises it, classified
    assert len(wire.sent) == governor.MAX_RETRIES + 1
    # A Retry-After beyond the budget is not slept through: the call says so at once.
    governor._held_until.pop(account.name)
    started = time.monotonic()
    with pytest.raises(cloud.CloudError) as raised_:
        governor.call(account, operation(Wire(limited=100, retry_after="3600")))
    assert raised_.value.error_class == cloud.RATE_LIMITED
    assert time.monotonic() - started < 1


def test_a_413_is_a_rate_limit_only_when_it_is_not_a_quota():
    assert governor.rate_limited(answer(413, NOVA_413, **{"Retry-After": "2"})) == 2.0
    assert governor.rate_limited(answer(413, NOVA_413_QUOTA, **{"Retry-After": "0"})) is None
    assert governor.rate_limited(answer(429, OVH_429)) == governor.DEFAULT_RETRY_AFTER
    assert governor.rate_limited(answer(503, {})) is None


def test_the_rate_is_a_token_bucket_of_one_seconds_worth(account):
    account.rate_limit_per_second = 20
    done = []
    threads = [
        threading.Thread(target=lambda: done.append(governor.call(account, operation(Wire(0))))) for _ in range(30)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert len(done) == 30
    assert 0.45 <= elapsed < 2  # 20 at once (a second's worth), then 10 more at 20 a second


def test_creates_at_once_are_bounded_per_provider_by_its_setting(account):
    account.max_concurrent_creates = 3
    bound = governor.creates(account)
    assert bound is governor.creates(account)  # one bound per process, whichever pass asks
    assert all(bound.acquire(blocking=False) for _ in range(3))
    assert not bound.acquire(blocking=False)
    for _ in range(3):
        bound.release()
