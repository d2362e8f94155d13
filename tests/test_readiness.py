"""Readiness on the live stack with the simulator's real sshd stand-ins (127.x.y.z listeners).

A label with `ready: ssh` makes an instance ACTIVE only once its sshd answers on its access_ip,
with the host keys its console printed; one whose port stays closed fails over as unreachable.
"""

from __future__ import annotations

import openstack

from chalicelib import reach, timeutil
from chalicelib.settings import settings
from sim.testing import start_simulator
from tests.conftest import (
    SIM_SSH_PORT,
    first_attempt,
    register_sim_provider,
    request_state,
    ssh_ready_label,
    unique,
    wait_for,
)


def test_ready_ssh_instances_are_active_only_once_sshd_answers_with_the_host_keys_it_printed(admin_api, user_api):
    with start_simulator(providers=1, boot_seconds=0.2, ready_seconds=1, ssh_port=SIM_SSH_PORT) as sim:
        sim.control("p1", security_groups_open=True)  # OVH-like: port 22 is open to everyone
        label = unique("lbl")
        register_sim_provider(admin_api, sim, "p1", label, labels=ssh_ready_label(label))
        request = user_api.post("/requests", json={"label": label, "count": 5}).json()
        answered: dict[str, str] = {}

        def every_active_one_answers() -> bool:
            for instance in request_state(user_api, request["id"])["instances"]:
                if instance["state"] == "ACTIVE" and instance["id"] not in answered:
                    # The moment it is seen ACTIVE, its sshd already answers where the API says.
                    banner = reach.ssh_banner(instance["access_ip"], SIM_SSH_PORT, timeout=2)
                    assert banner and banner.startswith("SSH-2.0-"), instance
                    answered[instance["id"]] = instance["server_id"]
            return len(answered) == 5

        wait_for(every_active_one_answers, timeout=120, what="5 ACTIVE, each answering")
        for instance in request_state(user_api, request["id"])["instances"]:
            printed = [" ".join(line.split()[:2]) for line in sim.host_keys("p1", instance["server_id"])]
            assert printed and sorted(instance["host_keys"]) == sorted(printed)
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")


def test_a_closed_port_fails_over_as_unreachable_at_the_boot_timeout_and_the_provider_says_why(
    stack, admin_api, user_api
):
    with start_simulator(providers=1, boot_seconds=0.2, ssh_port=SIM_SSH_PORT) as sim:  # default group: closed
        label = unique("lbl")
        name = register_sim_provider(admin_api, sim, "p1", label, labels=ssh_ready_label(label))["name"]
        request = user_api.post("/requests", json={"label": label, "count": 2}).json()

        def servers_active() -> bool:
            servers = sim.servers("p1")
            return len(servers) == 2 and all(s["status"] == "ACTIVE" for s in servers)

        wait_for(servers_active, what="2 servers ACTIVE at the provider")
        assert {i["state"] for i in request_state(user_api, request["id"])["instances"]} == {"BUILDING"}
        timeutil.clock.advance(settings.boot_timeout_seconds + 1)  # the boot timeout passes

        def failed_over() -> list:
            instances = request_state(user_api, request["id"])["instances"]
            errors = [a["error"] for i in instances for a in i["attempts"]]
            return errors if errors.count("unreachable") >= 2 else []

        wait_for(failed_over, what="both failed over as unreachable")
        attempt = request_state(user_api, request["id"])["instances"][0]["attempts"][0]
        assert f":{SIM_SSH_PORT}" in attempt["message"] and "no SSH banner" in attempt["message"]
        assert "unreachable" in admin_api.get(f"/providers/{name}").json()["health"]["last_error"]
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: not sim.servers("p1"), what="no server left")


def test_an_ssh_security_group_is_made_once_and_opens_the_way_in(admin_api, user_api):
    with start_simulator(providers=1, boot_seconds=0.2, ssh_port=SIM_SSH_PORT) as sim:  # default group: closed
        label = unique("lbl")
        register_sim_provider(admin_api, sim, "p1", label, labels=ssh_ready_label(label), ssh_security_group="oms-ssh")
        request = user_api.post("/requests", json={"label": label, "count": 3}).json()
        done = wait_for(
            lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r, timeout=120, what="ready"
        )
        for instance in done["instances"]:
            assert reach.ssh_banner(instance["access_ip"], SIM_SSH_PORT, timeout=2)
            assert set(sim.raw_server("p1", instance["server_id"])["security_groups"]) == {"default", "oms-ssh"}
        conn = openstack.connect(**sim.connect_kwargs("p1"))
        [group] = [g for g in conn.network.security_groups() if g.name == "oms-ssh"]  # made once, for all
        opened = {
            (r.ether_type, r.port_range_min) for r in conn.network.security_group_rules(security_group_id=group.id)
        }
        assert {("IPv4", 22), ("IPv6", 22), ("IPv4", SIM_SSH_PORT), ("IPv6", SIM_SSH_PORT)} <= opened
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")


def test_a_provider_preferring_ipv6_is_reached_at_the_ipv6_address_of_servers_that_have_both(admin_api, user_api):
    with start_simulator(providers=1, boot_seconds=0.2, ssh_port=SIM_SSH_PORT) as sim:  # `public`: v4 and v6
        label = unique("lbl")
        register_sim_provider(
            admin_api,
            sim,
            "p1",
            label,
            labels=ssh_ready_label(label),
            ssh_security_group="oms-ssh",
            address_family="ipv6",
        )
        request = user_api.post("/requests", json={"label": label, "count": 2}).json()
        done = wait_for(
            lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r, timeout=120, what="ready"
        )
        for instance in done["instances"]:
            [v4], [v6] = instance["addresses"]["ipv4"], instance["addresses"]["ipv6"]
            assert instance["access_ip"] == v6 != v4, instance
            # The sshd that answered before it was ACTIVE is the one behind its IPv6 face.
            assert reach.ssh_banner(v6, SIM_SSH_PORT, timeout=2)
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")


def test_a_providers_own_short_boot_timeout_fails_a_closed_port_over_as_unreachable(stack, admin_api, user_api):
    with start_simulator(providers=1, boot_seconds=0.2, ssh_port=SIM_SSH_PORT) as sim:  # default group: closed
        label = unique("lbl")
        name = register_sim_provider(
            admin_api, sim, "p1", label, labels=ssh_ready_label(label), boot_timeout_seconds=30
        )["name"]
        assert settings.boot_timeout_seconds > 31  # the deployment's would not have fired yet
        request = user_api.post("/requests", json={"label": label, "count": 1}).json()
        wait_for(lambda: [s["status"] for s in sim.servers("p1")] == ["ACTIVE"], what="its server ACTIVE")
        timeutil.clock.advance(31)  # past the provider's own boot timeout

        attempt = wait_for(lambda: first_attempt(user_api, request["id"]), what="a failover")
        assert attempt["error"] == "unreachable" and "within 30 s" in attempt["message"], attempt
        assert attempt["provider"] == name
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: not sim.servers("p1"), what="no server left")
