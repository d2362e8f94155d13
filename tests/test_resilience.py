"""At-least-once delivery and crashes: no server launched twice, none leaked, no cap exceeded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from chalice.app import DynamoDBEventConfig

import app as app_module
from local.stack import _registered
from tests.conftest import (
    free_port,
    register_sim_provider,
    request_state,
    sim_label,
    sim_provider_body,
    slots_given_back,
    unique,
    wait_for,
)
from tests.test_events import make_pump

ROOT = Path(__file__).resolve().parent.parent


def test_every_batch_delivered_twice_launches_each_server_once(admin_api, user_api, sim, tmp_path):
    """A second pump delivers the whole stream again, concurrently with the stack's own."""
    label = unique("lbl")
    providers = [register_sim_provider(admin_api, sim, name, label, max_instances=8)["name"] for name in ("p1", "p2")]
    stop = threading.Event()
    echo = make_pump(tmp_path, _registered(app_module, DynamoDBEventConfig))

    def deliver_again():
        while not stop.is_set():
            echo.pump_once()
            time.sleep(0.05)

    thread = threading.Thread(target=deliver_again, daemon=True)
    thread.start()
    try:
        request = user_api.post("/requests", json={"label": label, "count": 16}).json()
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "ready", what="16 ACTIVE")
        created = sum(sim.state(name)["servers_created"] for name in ("p1", "p2"))
        assert created == 16, "a repeated record launched a server twice"
        assert all(sim.state(name)["servers_peak"] <= 8 for name in ("p1", "p2"))
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="DELETED")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert echo.delivered > 0
    assert [sim.state(name)["servers_live"] for name in ("p1", "p2")] == [0, 0]
    for name in providers:
        slots_given_back(admin_api, name)


def _start_stack(env: dict) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(os.environ.get("OMS_TEST_STACK_LOG", os.devnull), "a"),  # noqa: SIM115
        text=True,
        start_new_session=True,  # so that a kill takes its moto child with it, as a crash would
    )
    for line in process.stdout:
        if line.startswith("OpenMultiStack is running at "):
            return process, line.split()[-1]
    raise AssertionError("the stack did not start")


def test_a_worker_killed_mid_batch_neither_leaks_nor_launches_twice(sim, tmp_path):
    sim.control("p1", latency_ms=400)  # slow creates, so that the kill lands between create and record
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMS_", "AWS_"))}
    env.update(
        OMS_PORT=str(free_port()),
        OMS_MOTO_PORT=str(free_port()),
        OMS_STATE_DIR=str(tmp_path / "state"),
        OMS_BOOTSTRAP_ADMIN_KEY="crash-test-key",
        OMS_SWEEP_SECONDS="0.5",
        OMS_LAUNCH_STALE_SECONDS="8",  # longer than any create here takes
        OMS_WATCH_POLL_SECONDS="0.3",
        OMS_OPENSTACK_TIMEOUT_SECONDS="5",
    )
    auth = {"Authorization": "Bearer crash-test-key"}
    process, url = _start_stack(env)
    try:
        body = sim_provider_body(sim, "p1", name="crashy", max_instances=10, labels={"small": sim_label()})
        assert requests.post(url + "providers", json=body, headers=auth, timeout=30).status_code == 201
        request = requests.post(url + "requests", json={"label": "small", "count": 6}, headers=auth, timeout=30).json()
        wait_for(lambda: sim.state("p1")["servers_created"] >= 1, timeout=60, interval=0.05, what="first create")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    created_before_restart = sim.state("p1")["servers_created"]
    assert created_before_restart < 6, "the kill came too late to test anything"

    process, url = _start_stack(env)
    try:
        done = wait_for(
            lambda: (
                (r := requests.get(url + f"requests/{request['id']}", headers=auth, timeout=30).json())["state"]
                == "ready"
                and r
            ),
            what="ready after the restart",
        )
        assert sim.state("p1")["servers_created"] == 6, "a server was launched twice"
        assert sim.state("p1")["servers_live"] == 6
        assert sorted(s["id"] for s in sim.servers("p1")) == sorted(i["server_id"] for i in done["instances"])
        requests.delete(url + f"requests/{request['id']}", headers=auth, timeout=30)
        wait_for(
            lambda: (
                requests.get(url + f"requests/{request['id']}", headers=auth, timeout=30).json()["state"] == "deleted"
            ),
            what="deleted",
        )
        assert sim.state("p1")["servers_live"] == 0
        assert sim.state("p1")["servers_peak"] <= 10
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def test_a_hung_provider_delays_only_its_own_work(admin_api, user_api, sim):
    """Extends for a provider that stops answering share the stream with a launch elsewhere: the
    launch's server is made at once, and the hung provider's tags are set once it answers again."""
    hung_label, other_label = unique("lbl"), unique("lbl")
    register_sim_provider(admin_api, sim, "p1", hung_label)
    register_sim_provider(admin_api, sim, "p2", other_label)
    first = user_api.post("/requests", json={"label": hung_label, "count": 3}).json()
    wait_for(lambda: request_state(user_api, first["id"])["state"] == "ready", what="3 ACTIVE on p1")

    sim.control("p1", mode="hang")  # every call to p1 now waits until its client gives up
    extended = user_api.post(f"/requests/{first['id']}/extend", json={"minutes": 30}).json()
    asked = time.monotonic()
    user_api.post("/requests", json={"label": other_label, "count": 1})
    wait_for(lambda: sim.state("p2")["servers_created"] >= 1, timeout=60, interval=0.05, what="a server on p2")
    assert time.monotonic() - asked < 5, "the launch on p2 waited for the hung provider"

    sim.control("p1", mode="normal")

    def tagged() -> bool:
        servers = sim.servers("p1")
        return len(servers) == 3 and all(s["metadata"]["oms_expires_at"] == extended["expires_at"] for s in servers)

    wait_for(tagged, timeout=120, what="p1's servers tagged with the new expiry")


def test_creates_answered_500_after_making_their_servers_leave_none_for_the_sweeper(stack, admin_api, user_api, sim):
    """Nova can answer 500 and create the server anyway: each is looked for at once and adopted,
    so no server of ours is left unclaimed there for the sweeper's leak pass (none runs here)."""
    label = unique("lbl")
    sim.control("p3", create_error_after=500)
    name = register_sim_provider(admin_api, sim, "p3", label)["name"]
    with stack.scheduler.paused():
        request = user_api.post("/requests", json={"label": label, "count": 3}).json()
        done = wait_for(
            lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r, what="3 adopted, ACTIVE"
        )
        state = sim.state("p3")
        assert (state["servers_created"], state["errors"].get("500")) == (3, 3)
        claimed = {i["server_id"] for i in done["instances"]}
        assert {s["id"] for s in sim.servers("p3")} == claimed, "a server made under a 500 was left unclaimed"
        assert {i["provider"] for i in done["instances"]} == {name}
    user_api.delete(f"/requests/{request['id']}")
    wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")
    assert sim.state("p3")["servers_live"] == 0


def test_a_locked_server_is_retried_and_a_delete_under_way_is_waited_for_not_repeated(stack, admin_api, user_api, sim):
    import openstack

    from chalicelib import models, sweeper, timeutil
    from chalicelib.settings import settings

    label = unique("lbl")
    name = register_sim_provider(admin_api, sim, "p5", label)["name"]
    request = user_api.post("/requests", json={"label": label, "count": 1}).json()
    done = wait_for(lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r, what="ready")
    [instance] = done["instances"]
    server_id = instance["server_id"]
    sim.lock("p5", server_id)
    with stack.scheduler.paused():
        user_api.delete(f"/requests/{request['id']}")
        stuck = wait_for(
            lambda: (i := models.Instance.get(instance["id"])).delete_failures and i, what="the 409 backed off"
        )
        assert stuck.state == "DELETING" and sim.state("p5")["errors"].get("409") == 1

        # Someone unlocks it and deletes it; on this cloud a delete takes a while.
        sim.lock("p5", server_id, locked=False)
        sim.control("p5", delete_seconds=2)
        openstack.connect(**sim.connect_kwargs("p5")).compute.delete_server(server_id)
        assert sim.raw_server("p5", server_id)["task_state"] == "deleting"
        deletes = sim.state("p5")["calls"]["server_delete"]
        timeutil.clock.advance(settings.delete_retry_seconds * 4)  # its back-off has passed
        sweeper.sweep()
        assert sim.state("p5")["calls"]["server_delete"] == deletes, "a delete under way was asked again"
        assert models.Instance.get(instance["id"]).state == "DELETING"  # waited for: still on quota

        wait_for(lambda: not sim.servers("p5"), timeout=10, what="the delete done")
        timeutil.clock.advance(settings.delete_retry_seconds * 4)
        sweeper.sweep()
    assert request_state(user_api, request["id"])["state"] == "deleted"
    assert sim.state("p5")["calls"]["server_delete"] == deletes
    slots_given_back(admin_api, name)
