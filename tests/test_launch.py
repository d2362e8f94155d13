"""The launch pipeline on the local stack with the simulator: real openstacksdk, real moto.

Instances entering PENDING are placed, given a slot, created, watched to ACTIVE, and failed over
when a provider is in maintenance, out of quota or breaks builds; deleting tears them down.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from datetime import timedelta

import yaml

from chalicelib import eta, sweeper, timeutil, userdata
from chalicelib.settings import settings
from sim.testing import start_simulator
from tests.conftest import (
    CallbackReceiver,
    register_down,
    register_sim_provider,
    request_state,
    sim_label,
    slots_given_back,
    unique,
    verify_callback,
    wait_for,
)


def test_one_instance_goes_active_with_addresses_and_is_torn_down(admin_api, user_api, sim):
    label = unique("lbl")
    provider = register_sim_provider(admin_api, sim, "p1", label)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop"
    request = user_api.post("/requests", json={"label": label, "count": 1, "ssh_public_key": key}).json()
    done = wait_for(lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r, what="ACTIVE")
    instance = done["instances"][0]
    assert instance["provider"] == provider["name"] and instance["server_id"]
    assert instance["addresses"]["ipv4"] and instance["active_at"]
    # The simulator's one public network: a fixed IPv4 address is the one to reach.
    assert instance["access_ip"] == instance["addresses"]["ipv4"][0]
    assert {(ip["addr"], ip["type"], ip["version"]) for ip in instance["ips"]} == {
        *((a, "fixed", 4) for a in instance["addresses"]["ipv4"]),
        *((a, "fixed", 6) for a in instance["addresses"]["ipv6"]),
    }
    [server] = sim.servers("p1")
    assert server["id"] == instance["server_id"]
    assert server["metadata"]["oms_instance_id"] == instance["id"]
    assert server["metadata"]["oms_request_id"] == request["id"]
    assert server["metadata"]["oms_deployment"] == "test"
    assert server["metadata"]["oms_expires_at"] == instance["expires_at"]
    assert admin_api.get(f"/providers/{provider['name']}").json()["capacity"]["in_use"] == 1

    assert user_api.delete(f"/requests/{request['id']}").status_code == 202
    wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="DELETED")
    assert sim.state("p1")["servers_live"] == 0
    slots_given_back(admin_api, provider["name"])


def test_a_callback_hears_ready_once_through_the_stream(admin_api, user_api, sim):
    label = unique("lbl")
    register_sim_provider(admin_api, sim, "p1", label)
    receiver = CallbackReceiver()
    secret = user_api.get("/me").json()["callback_secret"]
    body = {"label": label, "count": 2, "callback_url": receiver.url}
    request = user_api.post("/requests", json=body).json()
    try:
        wait_for(lambda: receiver.received, what="the ready callback")
        time.sleep(2)  # a sweep or two: nothing more comes
        [(headers, raw)] = receiver.received
        assert verify_callback(secret, headers, raw)
        event = json.loads(raw)
        assert (event["type"], event["request_id"], event["request"]["state"]) == ("ready", request["id"], "ready")
        assert event["request"]["counts"]["ACTIVE"] == 2
        view = request_state(user_api, request["id"])
        assert [(c["id"], c["type"], c["state"]) for c in view["callbacks"]] == [(event["id"], "ready", "delivered")]
    finally:
        receiver.close()
        user_api.delete(f"/requests/{request['id']}")


def test_hundred_instances_across_failing_providers(admin_api, user_api, sim):
    label = unique("lbl")
    sim.control("p1", mode="maintenance")
    sim.control("p2", quota_instances=10)
    sim.control("p3", error_rate=0.2)
    ours = {name: register_sim_provider(admin_api, sim, name, label)["name"] for name in sim.providers}

    request = user_api.post("/requests", json={"label": label, "count": 100}).json()
    done = wait_for(
        lambda: (r := request_state(user_api, request["id"]))["counts"]["ACTIVE"] == 100 and r,
        timeout=300,
        what="100 ACTIVE",
    )
    assert done["state"] == "ready"
    assert all(i["addresses"]["ipv4"] for i in done["instances"])
    spread = Counter(i["provider"] for i in done["instances"])
    assert len(spread) >= 4, spread
    assert ours["p1"] not in spread and spread[ours["p2"]] <= 10
    for name in sim.providers:
        state = sim.state(name)
        cap = min(20, state["quota_instances"])
        assert state["servers_peak"] <= cap, (name, state["servers_peak"], cap)
    assert sim.state("p1")["calls"].get("server_create", 0) <= 3
    maintenance = admin_api.get(f"/providers/{ours['p1']}").json()
    assert maintenance["health"]["state"] == "down" and maintenance["health"]["retry_at"]
    failed_builds = [a for i in done["instances"] for a in i["attempts"] if a["error"] in ("build_failed", "capacity")]
    if sim.state("p3")["servers_by_status"].get("ERROR", 0) or sim.state("p3")["servers_deleted"]:
        assert failed_builds, "ERROR servers on p3 were failed over"

    user_api.delete(f"/requests/{request['id']}")
    wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", timeout=300, what="all DELETED")
    for name in sim.providers:
        assert sim.state(name)["servers_live"] == 0, name
    for name in ours.values():
        slots_given_back(admin_api, name)


def test_a_request_larger_than_the_room_waits_for_room(stack, admin_api, user_api, sim):
    label = unique("lbl")
    register_sim_provider(admin_api, sim, "p1", label, max_instances=4)
    first = user_api.post("/requests", json={"label": label, "count": 4}).json()
    wait_for(lambda: request_state(user_api, first["id"])["state"] == "ready", what="first ready")
    second = user_api.post("/requests", json={"label": label, "count": 3}).json()
    with stack.scheduler.paused():
        stack.pump.pump_once()  # its launch pass found no room
        timeutil.clock.advance(settings.redrive_after_seconds + 1)
        sweeper.sweep()  # nor does a pass's re-drive
        stack.pump.pump_once()
    waiting = request_state(user_api, second["id"])
    assert waiting["counts"]["PENDING"] == 3 and waiting["state"] == "pending"
    user_api.delete(f"/requests/{first['id']}")
    wait_for(lambda: request_state(user_api, second["id"])["state"] == "ready", what="second ready")
    assert sim.state("p1")["servers_peak"] <= 4


def test_keystone_v2_and_application_credential_providers_launch(admin_api, user_api, sim):
    """The cloud adapter authenticates with Keystone v2.0 and with v3 application credentials."""
    label = unique("lbl")
    v2 = register_sim_provider(admin_api, sim, "p1", label, auth_url=sim.auth_url("p1", "v2.0"), max_instances=1)
    scenario = {
        "providers": [
            {
                "name": "appcred",
                "credentials": {"application_credential": {"id": "ac-1", "secret": "ac-secret-1"}},
                "boot_seconds": 0.3,
            }
        ]
    }
    with start_simulator(config=scenario) as other:
        body = {
            "name": unique("ac"),
            "auth_url": other.auth_url("appcred"),
            "application_credential_id": "ac-1",
            "application_credential_secret": "ac-secret-1",
            "max_instances": 1,
            "priority": 200,
            "labels": {label: sim_label()},
        }
        assert admin_api.post("/providers", json=body).status_code == 201
        request = user_api.post("/requests", json={"label": label, "count": 2}).json()
        done = wait_for(lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r, what="ready")
        assert sorted(i["provider"] for i in done["instances"]) == sorted([v2["name"], body["name"]])
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")
        assert other.state("appcred")["servers_live"] == 0
    assert sim.state("p1")["servers_live"] == 0


def test_check_now_reads_health_and_quota_from_the_provider(admin_api, sim):
    label = unique("lbl")
    sim.control("p4", quota_instances=12)
    sim.add_servers("p4", name="not-ours", count=2)  # another tool's servers use up the quota too
    name = register_sim_provider(admin_api, sim, "p4", label)["name"]
    checked = admin_api.post(f"/providers/{name}/check")
    assert checked.status_code == 200, checked.text
    view = checked.json()
    assert view["health"]["state"] == "healthy" and view["health"]["checked_at"]
    assert view["capacity"]["quota_instances"] == 10
    assert view["capacity"]["available"] == 10
    sim.control("p4", mode="auth_fail")
    down = admin_api.post(f"/providers/{name}/check").json()
    assert down["health"]["state"] == "down", down["health"]
    assert down["health"]["last_error"].startswith("auth") and down["health"]["retry_at"]


def test_extending_a_request_moves_the_servers_expiry_tag(admin_api, user_api, sim):
    label = unique("lbl")
    register_sim_provider(admin_api, sim, "p6", label)
    request = user_api.post("/requests", json={"label": label, "count": 2, "lifetime_minutes": 30}).json()
    wait_for(lambda: request_state(user_api, request["id"])["state"] == "ready", what="ready")
    extended = user_api.post(f"/requests/{request['id']}/extend", json={"minutes": 60}).json()
    assert extended["expires_at"] != request["expires_at"]

    def tags():
        return {s["metadata"]["oms_expires_at"] for s in sim.servers("p6")}

    wait_for(lambda: tags() == {extended["expires_at"]}, what="servers re-tagged")
    assert {s["metadata"]["oms_instance_id"] for s in sim.servers("p6")} == {i["id"] for i in request["instances"]}


def test_a_provider_whose_builds_keep_failing_gets_only_probes_until_one_comes_up(admin_api, user_api, sim):
    from chalicelib import models

    label = unique("lbl")
    sim.control("p1", error_rate=1.0)  # every build ends in ERROR
    broken = register_sim_provider(admin_api, sim, "p1", label)["name"]
    register_sim_provider(admin_api, sim, "p2", label)

    def ready(count: int) -> list[dict]:
        request = user_api.post("/requests", json={"label": label, "count": count}).json()
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "ready", timeout=300, what="ready")
        return request_state(user_api, request["id"])["instances"]

    ready(10)  # spread over both; those on p1 fail over to p2
    assert sim.state("p1")["servers_created"] >= 3
    assert models.Provider.get(broken).build_failures >= 3
    created = sim.state("p1")["servers_created"]
    # p1 has more room than p2 now, but only a probe may go there, and p2 still has room for all.
    assert {i["provider"] for i in ready(10)} != {broken}
    assert sim.state("p1")["servers_created"] - created <= 1

    # Builds work again: with p2 full, p1's probes come up and its failures are forgotten.
    sim.control("p1", error_rate=0.0)
    assert {i["provider"] for i in ready(5)} == {broken}
    assert models.Provider.get(broken).build_failures == 0


def test_a_provider_refusing_multipart_gets_a_script_and_key_as_one_cloud_config_and_no_include(
    admin_api, user_api, sim
):
    sim.control("p1", user_data_formats="no_multipart")  # ConoHa-like: MIME multipart is refused
    label = unique("lbl")
    conoha = register_sim_provider(admin_api, sim, "p1", label, priority=10, multipart_user_data=False)
    other = register_sim_provider(admin_api, sim, "p2", label)
    assert (conoha["multipart_user_data"], other["multipart_user_data"]) == (False, True)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop"
    script = "#!/bin/sh\necho hello > /tmp/hello\n"

    body = {"label": label, "count": 1, "ssh_public_key": key, "user_data": script}
    request = user_api.post("/requests", json=body).json()
    done = wait_for(lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r, what="ACTIVE")
    [instance] = done["instances"]
    assert instance["provider"] == conoha["name"] and instance["attempts"] == []
    sent = base64.b64decode(sim.raw_server("p1", instance["server_id"])["user_data"]).decode()
    assert sent.startswith("#cloud-config\n") and "MIME" not in sent
    assert yaml.safe_load(sent) == {
        "write_files": [{"path": userdata.USER_SCRIPT, "permissions": "0755", "content": script}],
        "runcmd": [[userdata.USER_SCRIPT]],
        "ssh_authorized_keys": [key],
    }

    # An #include goes with a key only as MIME: not on this provider, but on the other one.
    included = {**body, "user_data": "#include\nhttps://example.org/cloud-config\n"}
    moved = user_api.post("/requests", json=included).json()
    done = wait_for(lambda: (r := request_state(user_api, moved["id"]))["state"] == "ready" and r, what="ACTIVE")
    [instance] = done["instances"]
    [attempt] = instance["attempts"]
    assert (attempt["provider"], attempt["error"], instance["provider"]) == (conoha["name"], "config", other["name"])
    assert "'#include'" in attempt["message"] and "multipart_user_data: false" in attempt["message"], attempt
    for made in (request, moved):
        user_api.delete(f"/requests/{made['id']}")
    wait_for(lambda: request_state(user_api, moved["id"])["state"] == "deleted", what="deleted")


def test_a_provider_with_maintenance_ahead_gets_short_instances_only_and_no_call_during_it(
    stack, admin_api, user_api, sim
):
    label = unique("lbl")
    window = {"start": timeutil.in_minutes(20), "end": timeutil.in_minutes(80), "note": "hypervisor upgrades"}
    soon = register_sim_provider(admin_api, sim, "p1", label, priority=1, maintenance=[window])["name"]
    other = register_sim_provider(admin_api, sim, "p2", label, priority=200)["name"]

    # One short instance: a new provider is on probation (one instance per round, the rest elsewhere).
    short = user_api.post("/requests", json={"label": label, "count": 1, "lifetime_minutes": 10}).json()
    long = user_api.post("/requests", json={"label": label, "count": 1, "lifetime_minutes": 45}).json()
    for made in (short, long):
        wait_for(lambda made=made: request_state(user_api, made["id"])["state"] == "ready", what="ready")
    assert {i["provider"] for i in request_state(user_api, short["id"])["instances"]} == {soon}
    assert {i["provider"] for i in request_state(user_api, long["id"])["instances"]} == {other}
    # An extend always stands; one that carries an instance into its provider's window says so.
    assert user_api.post(f"/requests/{short['id']}/extend", json={"minutes": 5}).json()["warnings"] == []
    later = {"start": timeutil.in_minutes(30), "end": timeutil.in_minutes(40), "note": "network"}
    admin_api.patch(f"/providers/{other}", json={"maintenance": [later]})
    extended = user_api.post(f"/requests/{long['id']}/extend", json={"minutes": 1})
    assert extended.status_code == 200
    [warning] = extended.json()["warnings"]
    assert warning["instance_id"] == extended.json()["instances"][0]["id"]
    assert (warning["provider"], warning["start"], warning["end"], warning["note"]) == (other, *later.values())

    with stack.scheduler.paused():
        timeutil.clock.advance(21 * 60)  # into the window: the short instance has expired meanwhile
        before = sim.state("p1")["calls"]
        for _ in range(3):
            report = sweeper.sweep()
            assert report.providers[soon].checked is None and not report.providers[soon].listed
            stack.pump.pump_once()  # its DELETING event: the teardown waits for the window's end
        assert sim.state("p1")["calls"] == before
        assert sim.state("p1")["servers_live"] == 1
        view = admin_api.get(f"/providers/{soon}").json()
        assert view["health"]["maintenance"] is True and view["health"]["maintenance_until"] == window["end"]
        assert request_state(user_api, short["id"])["counts"]["DELETING"] == 1

        timeutil.clock.advance(60 * 60)  # the window is over: the next pass checks p1 and deletes
        sweeper.sweep()
    wait_for(lambda: request_state(user_api, short["id"])["state"] == "deleted", what="deleted after the window")
    assert sim.state("p1")["servers_live"] == 0
    assert admin_api.get(f"/providers/{soon}").json()["maintenance"] == []
    slots_given_back(admin_api, soon)


def test_a_request_waiting_for_full_accounts_says_why_and_when_it_will_be_ready(admin_api, user_api):
    """Issue 19: every account full, with instances expiring at known times; the new request's
    instances say why they wait, and their ETA is within 15 s of when they became ready."""
    label = unique("lbl")
    with start_simulator(providers=2, quota=20, boot_seconds=2, seed=7) as sim:
        names = [register_sim_provider(admin_api, sim, p, label, max_instances=1)["name"] for p in ("p1", "p2")]
        first = user_api.post("/requests", json={"label": label, "count": 2, "lifetime_minutes": 1}).json()
        wait_for(lambda: request_state(user_api, first["id"])["state"] == "ready", what="first ready")
        # The sweeper measures the launches that came up: boot time per provider, which the ETA uses.
        for name in names:
            wait_for(
                lambda n=name: admin_api.get(f"/providers/{n}").json()["launch_times"]["samples"] >= 1,
                what="launch measured",
            )
        times = admin_api.get(f"/providers/{names[0]}").json()["launch_times"]
        assert 1 <= times["boot_seconds"]["median"] <= 10 and times["ready_seconds"]["p90"] >= 1, times

        second = user_api.post("/requests", json={"label": label, "count": 2}).json()
        waiting = wait_for(
            lambda: (w := request_state(user_api, second["id"])["waiting"]) and w["ready_eta"] and w,
            what="an ETA",
        )
        assert waiting["reasons"] == {"all accounts full": 2} and waiting["count"] == 2
        instance = request_state(user_api, second["id"])["instances"][0]
        assert instance["waiting"]["reason"] == "all accounts full" and instance["waiting"]["eta"]
        # Slots free up when the first request's instances expire: the ETA is after that.
        assert waiting["ready_eta"] > first["expires_at"]

        # Time moves on to the first request's expiry (not waited out for real).
        ahead = (timeutil.parse(first["expires_at"]) - timeutil.now()).total_seconds() + 1
        timeutil.clock.advance(max(0.0, ahead))
        done = wait_for(
            lambda: (r := request_state(user_api, second["id"]))["state"] == "ready" and r, what="second ready"
        )
        ready_at = max(timeutil.parse(i["active_at"]) for i in done["instances"])
        off = abs((ready_at - timeutil.parse(waiting["ready_eta"])).total_seconds())
        assert off <= 15, (waiting["ready_eta"], timeutil.iso(ready_at))
        assert done["waiting"] is None and all(i["waiting"] is None for i in done["instances"])
        user_api.delete(f"/requests/{second['id']}")
        wait_for(lambda: request_state(user_api, second["id"])["state"] == "deleted", what="deleted")


def test_a_request_waiting_for_a_maintenance_window_says_none_healthy_and_is_due_after_it(admin_api, user_api, sim):
    """Issue 19: the only account offering the label has room but is in a maintenance window (no
    call goes to it, so the sweeper reads its slots' holders from the table): the request waits,
    `none healthy`, and is expected ready one pass plus a boot after the window ends."""
    label = unique("lbl")
    window = {"start": timeutil.in_minutes(-5), "end": timeutil.in_minutes(10), "note": "upgrades"}
    register_sim_provider(admin_api, sim, "p1", label, max_instances=1, maintenance=[window])
    made = user_api.post("/requests", json={"label": label, "count": 1, "lifetime_minutes": 60}).json()
    waiting = wait_for(
        lambda: (w := request_state(user_api, made["id"])["waiting"]) and w["ready_eta"] and w, what="an ETA"
    )
    assert waiting["reasons"] == {"none healthy": 1}, waiting
    # Never measured there: the default boot time, after the pass that follows the window's end.
    due = timeutil.parse(window["end"]) + timedelta(seconds=settings.sweep_seconds + eta.DEFAULT_BOOT_SECONDS)
    assert abs((timeutil.parse(waiting["ready_eta"]) - due).total_seconds()) <= 1, (waiting, window)
    user_api.delete(f"/requests/{made['id']}")
    wait_for(lambda: request_state(user_api, made["id"])["state"] == "deleted", what="deleted")


def test_a_waiting_reason_follows_the_providers_between_launch_passes(admin_api, user_api):
    """The reason is the launch pass's; a sweep tells it anew when the providers change meanwhile."""
    label = unique("lbl")
    down = register_down(admin_api, labels={label: sim_label()})
    request = user_api.post("/requests", json={"label": label, "count": 1}).json()

    def reason():
        return (request_state(user_api, request["id"])["waiting"] or {"reasons": {}})["reasons"]

    wait_for(lambda: reason() == {"none healthy": 1}, what="none healthy")
    admin_api.patch(f"/providers/{down['name']}", json={"enabled": False})
    wait_for(lambda: reason() == {"none offers the label": 1}, what="none offers the label")
    user_api.delete(f"/requests/{request['id']}")
