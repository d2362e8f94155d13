"""Warm pools: the schedule's arithmetic (pure), then pools on the live stack and the simulator."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib import pools
from sim.testing import start_simulator
from tests.conftest import register_sim_provider, request_state, unique, wait_for

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx5c2l0aGVwb29sa2V5MDEyMzQ1Njc4OWFiY2RlZmdo pool@oms"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG90aGVya2V5MDEyMzQ1Njc4OWFiY2RlZmdoaWpr me@host"

WORKING_HOURS = [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "18:00", "min_ready": 20}]


def test_the_first_window_that_holds_in_the_pools_time_zone_sets_the_target():
    # Monday 2026-11-30, 07:30 UTC is 08:30 in Berlin (UTC+1 in winter): working hours there.
    monday_0730_utc = datetime(2026, 11, 30, 7, 30, tzinfo=UTC)
    assert pools.target(2, WORKING_HOURS, "Europe/Berlin", monday_0730_utc) == 20
    assert pools.target(2, WORKING_HOURS, "UTC", monday_0730_utc) == 2  # 07:30 in UTC: before the window
    assert pools.target(2, WORKING_HOURS, "Europe/Berlin", datetime(2026, 11, 30, 17, 0, tzinfo=UTC)) == 2  # 18:00
    assert pools.target(2, WORKING_HOURS, "Europe/Berlin", datetime(2026, 12, 5, 10, 0, tzinfo=UTC)) == 2  # Sat
    late = [{"days": ["sat"], "from": "22:00", "to": "24:00", "min_ready": 1}, *WORKING_HOURS]
    assert pools.target(0, late, "UTC", datetime(2026, 12, 5, 23, 59, tzinfo=UTC)) == 1
    assert pools.target(5, [], "UTC", monday_0730_utc) == 5


def test_a_window_that_ends_at_or_before_its_start_runs_past_midnight():
    nights = [{"days": ["fri"], "from": "22:00", "to": "06:00", "min_ready": 3}]
    friday, saturday = datetime(2026, 12, 4, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC)
    assert pools.target(0, nights, "UTC", friday.replace(hour=23)) == 3
    assert pools.target(0, nights, "UTC", saturday.replace(hour=5, minute=59)) == 3
    assert pools.target(0, nights, "UTC", saturday.replace(hour=6)) == 0
    assert pools.target(0, nights, "UTC", friday.replace(hour=5)) == 0  # Thursday night is not in it
    whole = [{"days": ["sat"], "from": "00:00", "to": "00:00", "min_ready": 1}]
    assert pools.target(0, whole, "UTC", saturday.replace(hour=12)) == 1
    assert pools.target(0, whole, "UTC", saturday.replace(day=6)) == 0


def test_a_request_may_take_pool_instances_only_without_user_data_and_with_no_key_or_the_pools():
    class Item:
        def __init__(self, **fields):
            self.__dict__.update({"ssh_public_key": None, "user_data": None, **fields})

    keyed = Item(ssh_public_key=KEY)
    assert pools.eligible(Item(), keyed) and pools.eligible(Item(ssh_public_key=KEY.rsplit(" ", 1)[0]), keyed)
    assert not pools.eligible(Item(ssh_public_key=OTHER_KEY), keyed)
    assert not pools.eligible(Item(user_data="#!/bin/sh\ntrue\n"), keyed)
    assert not pools.eligible(Item(ssh_public_key=KEY), Item())


def test_pool_settings_are_checked_in_words(admin_api, user_api, provider):
    label = "ubuntu-small"  # offered by the `provider` fixture
    cases = [
        ({"min_ready": 2, "time_zone": "Mars/Olympus"}, "time_zone", "not a known IANA time zone"),
        ({"min_ready": 2, "schedule": [{**WORKING_HOURS[0], "from": "8:00"}]}, "schedule[0].from", ""),
        ({"min_ready": 2, "schedule": [{**WORKING_HOURS[0], "to": "24:01"}]}, "schedule[0].to", ""),
        ({"min_ready": 2, "schedule": [{**WORKING_HOURS[0], "days": []}]}, "schedule[0].days", "at least 1 item"),
        ({"min_ready": 2, "schedule": [{**WORKING_HOURS[0], "days": ["monday"]}]}, "schedule[0].days[0]", ""),
        ({"min_ready": -1}, "min_ready", ""),
        ({"min_ready": 1, "max_idle_minutes": 1}, "max_idle_minutes", ""),
    ]
    for body, field, words in cases:
        response = admin_api.call("PUT", f"/pools/{label}", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["field"] == field and words in error["message"], error
    missing = admin_api.call("PUT", "/pools/no-such-label", json={"min_ready": 1})
    assert missing.status_code == 422 and "no enabled provider offers label" in missing.text
    assert user_api.call("PUT", f"/pools/{label}", json={"min_ready": 1}).status_code == 403
    assert admin_api.get("/pools/no-such-label").status_code == 404


def _pool(api, label: str) -> dict:
    response = api.get(f"/pools/{label}")
    assert response.status_code == 200, response.text
    return response.json()


def _ready(api, label: str, count: int):
    return lambda: _pool(api, label)["counts"]["ready"] == count


def test_a_request_for_20_is_ready_in_its_own_answer_and_the_pool_refills(admin_api, user_api):
    with start_simulator(providers=2, quota=20, boot_seconds=0.3, seed=3) as sim:
        label = unique("warm")
        names = [register_sim_provider(admin_api, sim, p, label)["name"] for p in ("p1", "p2")]
        put = admin_api.call("PUT", f"/pools/{label}", json={"min_ready": 20, "max_idle_minutes": 30})
        assert put.status_code == 200, put.text
        assert put.json()["target"] == 20
        wait_for(_ready(admin_api, label, 20), what="a pool of 20 ready")

        response = user_api.post("/requests", json={"label": label, "count": 20, "lifetime_minutes": 30})
        assert response.status_code == 202, response.text
        request = response.json()
        assert request["state"] == "ready" and request["counts"]["ACTIVE"] == 20, request["counts"]
        me = user_api.get("/me").json()["id"]
        for instance in request["instances"]:
            assert instance["pooled_at"] and instance["owner"] == me and instance["access_ip"]
            assert instance["expires_at"] == request["expires_at"] and instance["request_id"] == request["id"]
        assert sorted(i["name"] for i in request["instances"]) == [
            f"oms-{request['id'][2:8]}-{k:03d}" for k in range(20)
        ]
        # The pool fills again on the 20 slots left; no account ever held more than its 20.
        wait_for(_ready(admin_api, label, 20), what="the pool back to 20")
        assert all(sim.state(p)["servers_peak"] <= 20 for p in ("p1", "p2"))
        in_use = [admin_api.get(f"/providers/{n}").json()["capacity"]["in_use"] for n in names]
        assert sum(in_use) == 40, in_use
        # Its servers' expiry tags follow the request's lifetime.
        ids = {i["server_id"] for i in request["instances"]}
        wait_for(
            lambda: all(
                s["metadata"].get("oms_expires_at") == request["expires_at"]
                for p in ("p1", "p2")
                for s in sim.servers(p)
                if s["id"] in ids
            ),
            what="expiry tags moved to the request's",
        )
        assert request_state(user_api, request["id"])["state"] == "ready"

        # Without the pool, its instances are retired; what requests took stays theirs.
        assert admin_api.delete(f"/pools/{label}").status_code == 204
        wait_for(lambda: sum(len(sim.servers(p)) for p in ("p1", "p2")) == 20, what="idle pool instances gone")
        assert request_state(user_api, request["id"])["counts"]["ACTIVE"] == 20


def test_a_request_with_other_boot_settings_does_not_take_them_and_the_pool_yields_its_slots(admin_api, user_api):
    with start_simulator(providers=1, quota=20, boot_seconds=0.3, seed=4) as sim:
        label = unique("warm")
        register_sim_provider(admin_api, sim, "p1", label, max_instances=6)
        admin_api.call("PUT", f"/pools/{label}", json={"min_ready": 6, "ssh_public_key": KEY})
        wait_for(_ready(admin_api, label, 6), what="a pool of 6 ready")

        # Another key: nothing of the pool is taken; the pool holds every slot, so it gives way.
        other = user_api.post("/requests", json={"label": label, "count": 2, "ssh_public_key": OTHER_KEY}).json()
        assert other["counts"]["PENDING"] == 2 and not any(i["pooled_at"] for i in other["instances"])
        wait_for(lambda: request_state(user_api, other["id"])["state"] == "ready", what="the other key's request")
        assert sim.state("p1")["servers_peak"] <= 6
        # The pool's own key (a comment of its own): taken at once.
        same = user_api.post(
            "/requests", json={"label": label, "count": 2, "ssh_public_key": KEY.rsplit(" ", 1)[0] + " laptop"}
        ).json()
        assert same["state"] == "ready" and all(i["pooled_at"] for i in same["instances"])
        # User data is given at boot: never from the pool.
        scripted = user_api.post("/requests", json={"label": label, "count": 1, "user_data": "#!/bin/sh\n"}).json()
        assert not scripted["instances"][0]["pooled_at"]
        wait_for(lambda: request_state(user_api, scripted["id"])["state"] == "ready", what="the scripted request")
        assert sim.state("p1")["servers_peak"] <= 6
        # Lowering the target retires the surplus, idle ones only.
        admin_api.call("PUT", f"/pools/{label}", json={"min_ready": 0, "ssh_public_key": KEY})
        wait_for(lambda: sum(_pool(admin_api, label)["counts"].values()) == 0, what="the pool emptied")
        for request in (other, same, scripted):
            assert request_state(user_api, request["id"])["state"] == "ready"


def test_idle_instances_are_replaced_before_they_expire_and_a_scheduled_request_takes_the_pool(admin_api, user_api):
    from datetime import timedelta

    from chalicelib import timeutil

    with start_simulator(providers=1, quota=20, boot_seconds=0.3, seed=6) as sim:
        label = unique("warm")
        register_sim_provider(admin_api, sim, "p1", label, max_instances=4)
        admin_api.call("PUT", f"/pools/{label}", json={"min_ready": 2, "max_idle_minutes": 5})
        wait_for(_ready(admin_api, label, 2), what="a pool of 2 ready")
        first = {
            i["id"] for i in admin_api.get("/instances", params={"label": label, "state": "ACTIVE"}).json()["items"]
        }

        # Half a minute before their idle age ends, their replacements are launched (the room allows).
        timeutil.clock.advance(5 * 60 - 30)
        wait_for(_ready(admin_api, label, 4), what="two replacements ready beside the two old ones")
        timeutil.clock.advance(60)  # the old ones' idle age is over: retired
        wait_for(lambda: not any(s["metadata"]["oms_instance_id"] in first for s in sim.servers("p1")), what="old gone")
        wait_for(_ready(admin_api, label, 2), what="the pool at 2")
        now = {i["id"] for i in admin_api.get("/instances", params={"label": label, "state": "ACTIVE"}).json()["items"]}
        assert len(now) == 2 and not now & first
        assert sim.state("p1")["servers_peak"] <= 4

        # A scheduled request is launched (taking the pool first) one lead before its start.
        start_at = timeutil.now() + timedelta(minutes=3)
        made = user_api.post(
            "/requests", json={"label": label, "count": 2, "lifetime_minutes": 30, "start_at": timeutil.iso(start_at)}
        ).json()
        assert made["state"] == "scheduled" and made["instances"] == []
        timeutil.clock.advance((timeutil.parse(made["launch_at"]) - timeutil.now()).total_seconds() + 1)
        ready = wait_for(
            lambda: (r := request_state(user_api, made["id"]))["state"] == "ready" and r, what="the scheduled request"
        )
        assert {i["id"] for i in ready["instances"]} == now  # the pool's, handed over
        assert all(i["pooled_at"] and i["expires_at"] == made["expires_at"] for i in ready["instances"])


def test_pool_instances_on_a_provider_with_a_window_before_the_requests_end_are_not_taken(admin_api, user_api):
    from chalicelib import timeutil

    with start_simulator(providers=1, quota=20, boot_seconds=0.3, seed=8) as sim:
        label = unique("warm")
        name = register_sim_provider(admin_api, sim, "p1", label, max_instances=4)["name"]
        admin_api.call("PUT", f"/pools/{label}", json={"min_ready": 2, "max_idle_minutes": 15})
        wait_for(_ready(admin_api, label, 2), what="a pool of 2 ready")
        window = {"start": timeutil.in_minutes(20), "end": timeutil.in_minutes(80), "note": "upgrade"}
        assert admin_api.patch(f"/providers/{name}", json={"maintenance": [window]}).status_code == 200
        long = user_api.post("/requests", json={"label": label, "count": 1, "lifetime_minutes": 45}).json()
        assert not long["instances"][0]["pooled_at"]  # it would run into the window
        short = user_api.post("/requests", json={"label": label, "count": 1, "lifetime_minutes": 10}).json()
        assert short["state"] == "ready" and short["instances"][0]["pooled_at"]
        user_api.delete(f"/requests/{long['id']}")
