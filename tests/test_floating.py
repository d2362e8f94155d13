"""Floating IPs on a cloud that gives servers only private addresses (the simulator's `floating`
layout, Cleura/OTC-like): given once ACTIVE, the way in, released with the server, and any left
behind by a crash freed by the sweeper after two sightings."""

from __future__ import annotations

import openstack

from chalicelib import reach, sweeper
from chalicelib.settings import settings
from sim.testing import start_simulator
from tests.conftest import SIM_SSH_PORT, register_sim_provider, request_state, ssh_ready_label, unique, wait_for


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
