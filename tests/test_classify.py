"""The error classes of what real clouds answer (REAL-CLOUDS.md), as openstacksdk raises them.

Each case is the service's own status and body, turned into openstacksdk's exception by its own
`raise_from_response`, then classified: the class decides failover, health and what a user reads.
"""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from chalicelib import cloud, faults


def answer(status: int, body: dict | str, headers: dict | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = (body if isinstance(body, str) else json.dumps(body)).encode()
    response.headers["Content-Type"] = "text/html" if isinstance(body, str) else "application/json"
    response.headers.update(headers or {})
    response.request = requests.Request("POST", "http://nova.example/v2.1/servers").prepare()
    return response


def raised(status: int, body: dict | str, headers: dict | None = None) -> Exception:
    """openstacksdk's own exception for the answer (its proxies call `raise_from_response`)."""
    try:
        os_exc.raise_from_response(answer(status, body, headers))
    except os_exc.HttpException as error:
        return error
    raise AssertionError("openstacksdk raised nothing")


def keystone(status: int, body: dict, headers: dict | None = None) -> Exception:
    """keystoneauth's exception for the answer (what a session raises for Keystone's own calls)."""
    return ks_exc.from_response(answer(status, body, headers), "POST", "http://keystone.example/v3/auth/tokens")


def nova(status: int, kind: str, message: str, headers: dict | None = None) -> Exception:
    return raised(status, {kind: {"code": status, "message": message}}, headers)


def neutron(status: int, kind: str, message: str) -> Exception:
    return raised(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


# Every message of REAL-CLOUDS.md's tables, as the service sends it, and the class that acts right.
REAL_ANSWERS = [
    (nova(403, "forbidden", "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"), "quota"),
    (nova(403, "forbidden", "Quota exceeded for cores: Requested 4, but already used 18 of 20 cores"), "quota"),
    (nova(403, "forbidden", "Quota exceeded for ram: Requested 8192, but already used 49152 of 51200 ram"), "quota"),
    (nova(403, "forbidden", "Maximum number of ports exceeded"), "quota"),
    (neutron(409, "OverQuota", "Quota exceeded for resources: ['port']."), "quota"),
    (neutron(409, "OverQuota", "Quota exceeded for resources: ['floatingip']."), "quota"),
    (
        nova(
            409,
            "conflictingRequest",
            "More than one possible network found. Specify network ID(s) to select which one(s) to connect to.",
        ),
        "config",
    ),
    (
        nova(409, "conflictingRequest", "Multiple possible networks found, use a Network ID to be more specific."),
        "config",
    ),
    (nova(400, "badRequest", "Unable to automatically allocate a network for project 0123456789abcdef"), "config"),
    (nova(403, "forbidden", "Only volume-backed servers are allowed for flavors with zero disk."), "config"),
    (
        neutron(
            404,
            "ExternalGatewayForFloatingIPNotFound",
            "External network 1234 is not reachable from subnet 5678.  Therefore, cannot associate Port 9 with a "
            "Floating IP.",
        ),
        "config",
    ),
    (nova(403, "forbidden", "It is not allowed to create an interface on external network 1234"), "config"),
    (nova(400, "badRequest", "Image 0123 could not be found."), "config"),
    (nova(400, "badRequest", "Flavor 0123 could not be found."), "config"),
    (nova(404, "itemNotFound", "Network 0123 could not be found."), "config"),
    (nova(409, "conflictingRequest", "Instance 6f6a3a6e-9d3b-4c57-9f0e-6f1d3c0f2b7a is locked"), "unavailable"),
    (keystone(401, {"error": {"code": 401, "message": "The request you have made requires authentication."}}), "auth"),
    (nova(401, "unauthorized", "The request you have made requires authentication."), "auth"),
    (
        nova(503, "serviceUnavailable", "The server is currently unavailable. Please try again at a later time."),
        "unavailable",
    ),
    (raised(503, "<html><body><h1>503 Service Unavailable</h1></body></html>"), "unavailable"),
    (
        nova(500, "computeFault", "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/"),
        "unavailable",
    ),
    (raised(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"), "unavailable"),
    (raised(504, "<html><body><h1>504 Gateway Time-out</h1></body></html>"), "unavailable"),
    (raised(429, {"error": {"status": "429 Too Many Requests", "message": "Rate limit exceeded"}}), "rate_limited"),
    (
        nova(413, "overLimit", "This request was rate-limited.", {"Retry-After": "30"}),
        "rate_limited",
    ),
]
FAULTS = [
    ("No valid host was found. There are not enough hosts available.", "capacity"),
    (
        "Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures for instance "
        "6f6a3a6e.",
        "capacity",
    ),
    ("Build of instance 6f6a3a6e aborted: Failed to allocate the network(s), not rescheduling.", "build_failed"),
]


def service_words(error: Exception) -> str:
    """What the service itself said: the message in its body, else its status line or page."""
    response = error.response
    if "json" not in response.headers["Content-Type"]:
        return str(error.details)
    said = next(iter(response.json().values()))
    return said.get("message") or said.get("status")


@pytest.mark.parametrize(("error", "error_class"), REAL_ANSWERS, ids=lambda v: getattr(v, "details", v))
def test_real_answers_are_filed_under_the_class_that_acts_right(error, error_class):
    classified = cloud.classify(error)
    assert classified.error_class == error_class, classified.message
    words = service_words(error)
    assert words[:30] in classified.message  # the service's own words reach the attempt and the provider


@pytest.mark.parametrize(
    ("status", "uncertain"),
    [(500, True), (502, True), (504, True), (503, False), (400, False), (401, False)],
)
def test_only_answers_that_may_hide_a_created_server_are_uncertain(status, uncertain):
    """Nova can answer 500 and create the server anyway; a gateway's 502/504 says nothing either way."""
    assert cloud.classify(nova(status, "computeFault", "x")).uncertain is uncertain


def test_timeouts_and_dropped_answers_are_uncertain_refused_connections_are_not():
    read_timeout = ks_exc.ConnectTimeout("Request to http://nova.example/v2.1/servers timed out")
    dropped = ks_exc.ConnectFailure(
        "Unable to establish connection to http://nova.example/v2.1/servers: ('Connection aborted.', "
        "RemoteDisconnected('Remote end closed connection without response'))"
    )
    refused = ks_exc.ConnectFailure(
        "Unable to establish connection to http://nova.example/v2.1/servers: [Errno 111] Connection refused"
    )
    assert [cloud.classify(e).error_class for e in (read_timeout, dropped, refused)] == ["unavailable"] * 3
    assert [cloud.classify(e).uncertain for e in (read_timeout, dropped, refused)] == [True, True, False]


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        (raised(429, {"error": {"status": "429 Too Many Requests"}}, {"Retry-After": "7"}), 7.0),
        (raised(429, {"error": {"status": "429 Too Many Requests"}}), None),
        (nova(413, "overLimit", "This request was rate-limited.", {"Retry-After": "120"}), 120.0),
        (nova(413, "overLimit", "This request was rate-limited."), None),
        (raised(413, "<html>Request Entity Too Large</html>", {"Retry-After": "5"}), 5.0),
        (keystone(429, {"error": {"code": 429, "message": "Too many requests"}}, {"Retry-After": "3"}), 3.0),
    ],
)
def test_rate_limits_say_how_long_to_wait(error, retry_after):
    classified = cloud.classify(error)
    assert (classified.error_class, classified.retry_after) == ("rate_limited", retry_after)


def test_retry_after_as_an_http_date():
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    classified = cloud.classify(raised(429, {"error": {"status": "429 Too Many Requests"}}, {"Retry-After": when}))
    assert classified.error_class == "rate_limited" and 85 <= classified.retry_after <= 90


def test_a_413_that_is_neither_quota_nor_rate_limit_is_not_filed_as_either():
    assert cloud.classify(raised(413, "<html>Request Entity Too Large</html>")).error_class == "unknown"


def test_every_row_names_its_source_and_every_class_is_a_known_one():
    assert all(rule.said for rule in cloud.RULES)
    assert {rule.error_class for rule in cloud.RULES} <= set(faults.ERROR_CLASSES)


@pytest.mark.parametrize(("fault", "error_class"), FAULTS)
def test_server_faults(fault, error_class):
    assert cloud.classify_fault(fault).error_class == error_class
