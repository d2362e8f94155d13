"""A scheduled request on the live stack: launched one lead before its start, ready by then.

The product clock is moved to just before the launch time instead of waiting real minutes; the
simulator boots in about a second of real time.
"""

from __future__ import annotations

from datetime import timedelta

from chalicelib import timeutil
from tests.conftest import register_sim_provider, unique, wait_for


def test_a_scheduled_request_is_ready_at_its_start_and_one_beyond_the_room_is_at_risk(admin_api, user_api, sim):
    label = unique("sched")
    register_sim_provider(admin_api, sim, "p1", label, max_instances=2)
    start_at = timeutil.now() + timedelta(minutes=2)
    body = {"label": label, "count": 2, "lifetime_minutes": 30, "start_at": timeutil.iso(start_at)}
    answer = user_api.post("/requests", json=body)
    assert answer.status_code == 202, answer.text
    request = answer.json()
    assert request["state"] == "scheduled" and request["instances"] == []
    assert request["admission"] == {
        "status": "expected",
        "reason": request["admission"]["reason"],
        "capacity": 2,
        "needed": 2,
    }
    assert request["expires_at"] == timeutil.iso(start_at + timedelta(minutes=30))

    later = timeutil.iso(start_at + timedelta(minutes=5))
    beyond = user_api.post("/requests", json={"label": label, "count": 1, "start_at": later}).json()
    assert beyond["admission"]["status"] == "at_risk"
    assert beyond["admission"]["reason"] == (
        f"needs 1; at {later} the 1 account offering {label} has room for 0 of 2 slots: 2 by other scheduled requests"
    )
    assert user_api.delete(f"/requests/{beyond['id']}").status_code == 202  # it must not launch later

    launch_at = timeutil.parse(request["launch_at"])
    assert launch_at < start_at
    assert user_api.get(f"/requests/{request['id']}").json()["state"] == "scheduled"  # not launched early
    timeutil.clock.advance(max(0.0, (launch_at - timeutil.now()).total_seconds() - 1))  # just before its launch
    ready = wait_for(
        lambda: (r := user_api.get(f"/requests/{request['id']}").json())["state"] == "ready" and r,
        timeout=60,
        what="the scheduled request ready",
    )
    deadline = start_at + timedelta(seconds=5)
    assert timeutil.now() <= deadline
    assert all(timeutil.parse(i["active_at"]) <= deadline for i in ready["instances"])
    assert ready["expires_at"] == timeutil.iso(start_at + timedelta(minutes=30))
    assert all(i["expires_at"] == ready["expires_at"] for i in ready["instances"])
    assert user_api.get(f"/requests/{beyond['id']}").json()["instances"] == []  # deleted: never launched
