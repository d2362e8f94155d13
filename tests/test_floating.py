"""Floating IPs on a cloud that gives servers only private addresses (the simulator's `floating`
layout, Cleura/OTC-like): given once ACTIVE, the way in, released with the server, and any left
behind by a crash freed by the sweeper after two sightings."""

from __future__ import annotations

import os
import signal
import time

import openstack
import requests

from chalicelib import reach, sweeper
from chalicelib.settings import settings
from sim.testing import start_simulator
from tests.conftest import (
    SIM_SSH_PORT,
    free_port,
    register_sim_provider,
    request_state,
    sim_provider_body,
    ssh_ready_label,
    unique,
    wait_for,
)
from tests.test_resilience import _start_stack

CRASH_KEY = "crash-test-key"
AUTH = {"Authorization": f"Bearer {CRASH_KEY}"}


def test_each_instance_is_reached_through_its_floating_ip_and_none_is_left_after_delete(admin_api, user_api):
    with start_simulator(
        providers=1, boot_seconds=0.2, network_layout="floating", ssh_port=SIM_SSH_PORT, floating_ip_delay_seconds=0.3
    ) as sim:
        sim.control("p1", security_groups_open=True)
        label = unique("lbl")
        register_sim_provider(admin_api, sim, "p1", label, floating_ip="auto", labels=ssh_ready_label(label, "private"))
        request = user_api.post("/requests", json={"label": label, "count": 5}).json()
        done = wait_for(
            lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r, timeout=120, what="ready"
        )
        for instance in done["instances"]:
            floating = [ip["addr"] for ip in instance["ips"] if ip["type"] == "floating"]
            assert floating == [instance["access_ip"]], instance["ips"]
            assert reach.ssh_banner(instance["access_ip"], SIM_SSH_PORT, timeout=2), instance["access_ip"]
        assert sim.state("p1")["floating_ips_live"] == 5
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")
        state = sim.state("p1")
        assert (state["servers_live"], state["floating_ips_live"]) == (0, 0)


def test_a_floating_ip_left_behind_by_a_crash_is_released_after_two_passes_and_others_never(stack, admin_api):
    with start_simulator(providers=1, network_layout="floating") as sim:
        label = unique("lbl")
        name = register_sim_provider(
            admin_api, sim, "p1", label, floating_ip="auto", labels=ssh_ready_label(label, "private")
        )["name"]
        conn = openstack.connect(**sim.connect_kwargs("p1"))
        external = next(iter(conn.network.networks(is_router_external=True)))
        with stack.scheduler.paused():  # the passes counted are the test's own
            # As if a watcher died between attaching it and recording it: described as ours, held by no one.
            left = conn.network.create_ip(
                floating_network_id=external.id, description=f"oms:{settings.deployment}:i-gone"
            )
            by_hand = conn.network.create_ip(floating_network_id=external.id, description="someone else's")
            first = sweeper.sweep()
            assert first.providers[name].floating_ips_released == []  # seen once: a suspect
            second = sweeper.sweep()
        assert second.providers[name].floating_ips_released == [left.id]
        assert {ip.id for ip in conn.network.ips()} == {by_hand.id}
        conn.network.delete_ip(by_hand.id)


def _crash_during_floating_ip_create(sim, tmp_path, count: int, before_kill=None) -> tuple[dict, dict, dict]:
    """Start a stack of its own (tests/test_resilience.py) on the simulator's floating layout, ask
    for `count` instances, and SIGKILL it while the first floating IP's create is unanswered: the
    simulator has made it on the server's port, described as the instance's; the product never
    heard of it. `before_kill(url, request)` runs inside that window. Returns the environment to
    restart the stack with, the request and the floating IP (raw, from the simulator).

    Until the kill only the build watcher settles builds: a sweep would find the floating IP on
    the port meanwhile and record it, closing the window this plays."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMS_", "AWS_"))}
    env.update(
        OMS_PORT=str(free_port()),
        OMS_MOTO_PORT=str(free_port()),
        OMS_STATE_DIR=str(tmp_path / "state"),
        OMS_BOOTSTRAP_ADMIN_KEY=CRASH_KEY,
        OMS_SWEEP_SECONDS="600",
        OMS_LAUNCH_STALE_SECONDS="3",
        OMS_DELETE_RETRY_SECONDS="1",
        OMS_WATCH_POLL_SECONDS="0.3",
        OMS_OPENSTACK_TIMEOUT_SECONDS="10",
    )
    sim.control("p1", security_groups_open=True, floating_ip_answer_seconds=3)
    process, url = _start_stack(env)
    try:
        body = sim_provider_body(
            sim, "p1", name="crashy", floating_ip="auto", labels=ssh_ready_label("small", "private")
        )
        assert requests.post(url + "providers", json=body, headers=AUTH, timeout=30).status_code == 201
        request = requests.post(url + "requests", json={"label": "small", "count": count}, headers=AUTH, timeout=30)
        wait_for(lambda: sim.state("p1")["floating_ips_created"] >= 1, timeout=60, interval=0.05, what="a floating IP")
        if before_kill:
            before_kill(url, request.json())
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    sim.control("p1", floating_ip_answer_seconds=0)
    [made] = sim.floating_ips("p1")
    return {**env, "OMS_SWEEP_SECONDS": "0.5"}, request.json(), made


def _get(url: str, path: str) -> dict:
    return requests.get(url + path, headers=AUTH, timeout=30).json()


def _crash_sim():
    return start_simulator(
        providers=1, boot_seconds=0.5, network_layout="floating", ssh_port=SIM_SSH_PORT, floating_ip_delay_seconds=0.3
    )


def test_a_floating_ip_attached_by_a_process_killed_before_recording_it_is_kept_not_doubled(tmp_path):
    with _crash_sim() as sim:
        env, request, made = _crash_during_floating_ip_create(sim, tmp_path, count=3)
        assert made["port_id"], "attached to its server's port"
        process, url = _start_stack(env)
        try:
            wait_for(lambda: _get(url, f"requests/{request['id']}")["state"] == "ready", timeout=120, what="ready")
            time.sleep(3)  # six sweeps: one they took for a leak would be gone after two
            instances = _get(url, f"requests/{request['id']}")["instances"]
            owner = made["description"].rpartition(":")[2]
            assert [i["access_ip"] for i in instances if i["id"] == owner] == [made["address"]]
            assert sim.state("p1")["floating_ips_created"] == 3, "the one left was not kept: a second was made"
            assert sorted(ip["address"] for ip in sim.floating_ips("p1")) == sorted(i["access_ip"] for i in instances)
            for instance in instances:
                assert reach.ssh_banner(instance["access_ip"], SIM_SSH_PORT, timeout=2), instance
            requests.delete(url + f"requests/{request['id']}", headers=AUTH, timeout=30)
            wait_for(lambda: _get(url, f"requests/{request['id']}")["state"] == "deleted", what="deleted")
            state = sim.state("p1")
            assert (state["servers_live"], state["floating_ips_live"]) == (0, 0)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def test_a_floating_ip_a_killed_process_never_gave_back_is_released_by_the_sweeper(tmp_path):
    """Its request was deleted while the attach was unanswered, then the process died: only the
    restarted stack's sweeper, after two sightings, can know it is nobody's."""
    with _crash_sim() as sim:

        def delete_request(url: str, request: dict) -> None:
            requests.delete(url + f"requests/{request['id']}", headers=AUTH, timeout=30)
            wait_for(lambda: sim.state("p1")["servers_live"] == 0, timeout=30, what="its server deleted")

        env, request, _ = _crash_during_floating_ip_create(sim, tmp_path, count=1, before_kill=delete_request)
        assert sim.state("p1")["floating_ips_live"] == 1
        process, url = _start_stack(env)
        try:
            wait_for(lambda: _get(url, f"requests/{request['id']}")["state"] == "deleted", what="deleted")
            wait_for(lambda: sim.state("p1")["floating_ips_live"] == 0, timeout=30, what="the floating IP released")
            assert sim.state("p1")["servers_live"] == 0
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
