"""The error classes of what real clouds answer (REAL-CLOUDS.md), as openstacksdk raises them.

Each case is the service's own status and body, turned into openstacksdk's exception by its own
`raise_from_response`, then classified: the class decides failover, health and what a user reads.
"""

from __future__ import annotations

import json

import pytest
import requests
from openstack import exceptions as os_exc

from chalicelib import cloud


def raised(status: int, body: dict) -> Exception:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    response.request = requests.Request("POST", "http://nova.example/v2.1/servers").prepare()
    try:
        os_exc.raise_from_response(response)
    except os_exc.HttpException as error:
        return error
    raise AssertionError("openstacksdk raised nothing")


def nova(status: int, kind: str, message: str) -> Exception:
    return raised(status, {kind: {"code": status, "message": message}})


def neutron(status: int, kind: str, message: str) -> Exception:
    return raised(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


@pytest.mark.parametrize(
    ("error", "error_class"),
    [
        (
            nova(403, "forbidden", "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"),
            "quota",
        ),
        (nova(403, "forbidden", "Quota exceeded for cores: Requested 4, but already used 18 of 20 cores"), "quota"),
        (nova(403, "forbidden", "Maximum number of ports exceeded"), "quota"),
        (neutron(409, "OverQuota", "Quota exceeded for resources: ['floatingip']."), "quota"),
        (
            nova(
                409,
                "conflictingRequest",
                "More than one possible network found. Specify network ID(s) to select which one(s) the instance "
                "should be attached to.",
            ),
            "config",
        ),
        (
            nova(409, "conflictingRequest", "Multiple possible networks found, use a Network ID to be more specific."),
            "config",
        ),
        (
            nova(400, "badRequest", "Unable to automatically allocate a network for project 0123456789abcdef"),
            "config",
        ),
        (nova(403, "forbidden", "Only volume-backed servers are allowed for flavors with zero disk."), "config"),
        (
            neutron(
                404, "ExternalGatewayForFloatingIPNotFound", "External network 1234 is not reachable from subnet 5678."
            ),
            "config",
        ),
        (nova(400, "badRequest", "Image 0123 could not be found."), "config"),
        (nova(503, "serviceUnavailable", "Service Unavailable"), "unavailable"),
    ],
)
def test_real_answers_are_filed_under_the_class_that_acts_right(error, error_class):
    classified = cloud.classify(error)
    assert classified.error_class == error_class, classified.message
    said = json.loads(error.response.content)
    words = next(iter(said.values()))["message"]
    assert words[:30] in classified.message  # the service's own words reach the attempt and the provider


@pytest.mark.parametrize(
    ("fault", "error_class"),
    [
        ("No valid host was found. There are not enough hosts available.", "capacity"),
        (
            "Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures.",
            "capacity",
        ),
        ("Build of instance 1 aborted: Failed to allocate the network(s), not rescheduling.", "build_failed"),
    ],
)
def test_server_faults(fault, error_class):
    assert cloud.classify_fault(fault).error_class == error_class
