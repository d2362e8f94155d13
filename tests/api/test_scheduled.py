"""Scheduled requests (start_at) in-process: validation, the view, delete before launch, one launch."""

from __future__ import annotations

from datetime import timedelta

from chalicelib import fleet, models, sweeper, timeutil


def ahead(**delta) -> str:
    return timeutil.iso(timeutil.now() + timedelta(**delta))


def test_start_at_must_be_a_future_time_within_the_limit(user_api, provider):
    for start_at, words in (
        (ahead(minutes=-1), "must be in the future"),
        (ahead(days=7, minutes=1), "must be at most 7 days ahead"),
        ("tomorrow at nine", "must be a date-time"),
        ("2026-13-01T09:00:00Z", "must be a date-time"),
    ):
        answer = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1, "start_at": start_at})
        assert answer.status_code == 400, (start_at, answer.text)
        error = answer.json()["error"]
        assert error["field"] == "start_at" and words in error["message"], error


def test_a_scheduled_request_writes_no_instance_and_shows_its_start_and_forecast(user_api, provider):
    start_at = ahead(hours=2)
    answer = user_api.post(
        "/requests", json={"label": "ubuntu-small", "count": 2, "lifetime_minutes": 30, "start_at": start_at}
    )
    assert answer.status_code == 202, answer.text
    request = answer.json()
    assert request["state"] == "scheduled" and request["instances"] == []
    assert request["start_at"] == start_at
    assert request["expires_at"] == timeutil.iso(timeutil.parse(start_at) + timedelta(minutes=30))
    lead = (timeutil.parse(start_at) - timeutil.parse(request["launch_at"])).total_seconds()
    assert 60 <= lead <= 120  # no launch measured yet: the default ready time, a sweep and a margin
    assert request["admission"]["status"] == "expected" and request["admission"]["needed"] == 2
    assert request["admission"]["capacity"] >= 2
    assert user_api.get("/instances", params={"request_id": request["id"]}).json()["items"] == []
    assert user_api.get(f"/requests/{request['id']}").json()["state"] == "scheduled"
    plain = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1}).json()
    assert (plain["start_at"], plain["launch_at"], plain["admission"]) == (None, None, None)


def test_a_request_beyond_the_room_left_is_at_risk(user_api, admin_api):
    from tests.conftest import register_down, sim_label, unique

    label = unique("sched")
    register_down(admin_api, max_instances=3, labels={label: sim_label()})
    start_at = ahead(hours=1)
    first = user_api.post("/requests", json={"label": label, "count": 2, "start_at": start_at}).json()
    assert first["admission"]["status"] == "expected"
    second = user_api.post("/requests", json={"label": label, "count": 2, "start_at": ahead(hours=1, minutes=10)})
    admission = second.json()["admission"]
    assert second.status_code == 202 and admission["status"] == "at_risk"
    assert (admission["capacity"], admission["needed"]) == (1, 2)
    assert "room for 1 of 3 slots" in admission["reason"] and "2 by other scheduled requests" in admission["reason"]


def test_a_scheduled_request_deleted_before_launch_never_launches(user_api, provider):
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1, "start_at": ahead(minutes=1)})
    request_id = request.json()["id"]
    deleted = user_api.delete(f"/requests/{request_id}")
    assert deleted.status_code == 202 and deleted.json()["instances"] == []
    assert deleted.json()["state"] == "deleted"
    assert models.Request.get(request_id).schedule_queue is None
    timeutil.clock.advance(120)  # past its start
    sweeper.start_scheduled(sweeper.SweepReport())
    assert fleet.start(models.Request.get(request_id)) is None
    assert user_api.get("/instances", params={"request_id": request_id}).json()["items"] == []


def test_a_due_request_is_launched_once_even_by_two_passes(user_api, provider):
    start_at = ahead(minutes=30)
    body = {"label": "ubuntu-small", "count": 3, "lifetime_minutes": 10, "start_at": start_at}
    request_id = user_api.post("/requests", json=body).json()["id"]
    read_before = models.Request.get(request_id)
    first = sweeper.SweepReport()
    sweeper.start_scheduled(first)
    assert request_id not in first.started  # half an hour ahead: not due yet
    timeutil.clock.advance(31 * 60)  # past its start (the service was down): launched at once
    sweeper.start_scheduled(first)
    assert request_id in first.started
    again = sweeper.SweepReport()
    sweeper.start_scheduled(again)
    assert request_id not in again.started
    assert fleet.start(read_before) is None  # a pass that read it before the launch loses the claim
    request = user_api.get(f"/requests/{request_id}").json()
    assert request["state"] == "pending" and request["counts"]["PENDING"] == 3
    assert request["expires_at"] == timeutil.iso(timeutil.parse(start_at) + timedelta(minutes=10))
    stored = models.Request.get(request_id)
    assert stored.schedule_queue is None and request["launch_at"] == stored.launched_at
    for instance in request["instances"]:
        # Asked for at the launch: the ready times measured from it leave the schedule's wait out.
        assert instance["created_at"] == stored.launched_at and instance["expires_at"] == request["expires_at"]
    retry = user_api.post("/requests", json=body)  # no client_token: a new request, not a retry
    assert retry.status_code == 400  # its start_at is past now


def test_a_retry_after_the_start_passed_gets_the_request_it_made(user_api, provider):
    body = {"label": "ubuntu-small", "count": 1, "start_at": ahead(minutes=5), "client_token": "book-once"}
    made = user_api.post("/requests", json=body)
    assert made.status_code == 202, made.text
    timeutil.clock.advance(6 * 60)  # its start has passed: a new request with it would be refused
    retried = user_api.post("/requests", json=body)
    assert retried.status_code == 200, retried.text
    assert retried.json()["id"] == made.json()["id"]
    other = user_api.post("/requests", json={**body, "client_token": "another"})
    assert other.status_code == 400 and other.json()["error"]["field"] == "start_at"
