"""The simulator's per-account rate limit: OVH's 429 (or an older Nova's 413) with Retry-After,
on every API, counted; what openstacksdk and keystoneauth make of it is the rate-limited class."""

from __future__ import annotations

import openstack
import pytest
import requests
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from chalicelib import cloud
from sim.config import ConfigError, validate_settings
from sim.testing import start_simulator


def test_over_the_rate_every_api_answers_429_with_retry_after_and_counts_it():
    with start_simulator(providers=2, rate_limit_per_second=5, rate_limit_retry_after=2) as sim:
        answers = [requests.get(sim.auth_url("p1"), timeout=5) for _ in range(8)]
        assert [a.status_code for a in answers[:5]] == [200] * 5  # a second's worth at once
        limited = [a for a in answers if a.status_code == 429]
        assert limited and all(a.headers["Retry-After"] == "2" for a in limited)
        assert limited[0].json()["error"]["status"] == "429 Too Many Requests"
        assert sim.state("p1")["rate_limited"] == len(limited)
        assert sim.state("p2")["rate_limited"] == 0  # per account
        sim.control("p1", rate_limit_per_second=None)
        assert requests.get(sim.auth_url("p1"), timeout=5).status_code == 200


def test_openstacksdk_meets_it_as_a_rate_limit_whichever_service_says_it():
    with start_simulator(providers=1, rate_limit_per_second=2, rate_limit_burst=3) as sim:
        conn = openstack.connect(**sim.connect_kwargs("p1"))
        with pytest.raises((os_exc.HttpException, ks_exc.HttpError)) as raised:  # Keystone's own, or a service's
            for _ in range(10):
                list(conn.compute.servers())
        classified = cloud.classify(raised.value)
        assert (classified.error_class, classified.retry_after) == (cloud.RATE_LIMITED, 1.0)
        sim.control("p1", rate_limit_status=413)
        answer = requests.get(sim.auth_url("p1"), timeout=5)
        while answer.status_code != 413:
            answer = requests.get(sim.auth_url("p1"), timeout=5)
        assert answer.json()["overLimit"]["message"] == "This request was rate-limited."
        assert answer.headers["Retry-After"] == "1"


@pytest.mark.parametrize("wrong", [{"rate_limit_per_second": 0}, {"rate_limit_status": 500}, {"rate_limit_burst": 0.5}])
def test_rate_limit_settings_are_checked(wrong):
    with pytest.raises(ConfigError):
        validate_settings(wrong)
