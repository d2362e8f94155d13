"""Canary boots on the live stack with the simulator: one server per canary, followed through every
step (slot, auth, resolve, create, active, floating IP, SSH banner, host keys, delete) and gone
after, on each network layout; a closed port names the step that failed and why; a canary whose
runner died is ended by the sweeper; an idle provider can ask for one every N hours."""

from __future__ import annotations

import openstack
import pytest

from chalicelib import canary, models, sweeper, timeutil
from chalicelib.settings import settings
from sim.testing import start_simulator
from tests.conftest import SIM_SSH_PORT, register_sim_provider, sim_provider_body, ssh_ready_label, unique, wait_for

# layout -> (the label's network, provider settings)
LAYOUTS = {
    "public": ("public", {}),
    "floating": ("private", {"floating_ip": "auto"}),
    "multi": ("public", {}),
    "ipv6": ("public", {}),
}


def finished(admin_api, name: str) -> dict:
    """The provider's canary once it has ended."""
    return wait_for(
        lambda: (c := admin_api.get(f"/providers/{name}").json()["canary"]) and c["state"] != "running" and c,
        timeout=120,
        what="the canary's end",
    )


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_canary_proves_every_step_on_each_layout_and_leaves_nothing(admin_api, layout):
    network, reach_settings = LAYOUTS[layout]
    with start_simulator(
        providers=1, boot_seconds=0.2, network_layout=layout, ssh_port=SIM_SSH_PORT, ready_seconds=0.3
    ) as sim:
        sim.control("p1", security_groups_open=True)
        label = unique("lbl")
        name = register_sim_provider(
            admin_api, sim, "p1", label, labels=ssh_ready_label(label, network), **reach_settings
        )["name"]
        started = admin_api.post(f"/providers/{name}/check", json={"boot": label})
        assert started.status_code == 202, started.text
        assert started.json()["canary"]["state"] == "running"
        result = finished(admin_api, name)
        assert result["state"] == "passed", result
        steps = [s["step"] for s in result["steps"]]
        assert steps == list(canary.STEPS)
        floating = next(s for s in result["steps"] if s["step"] == "floating_ip")
        assert floating["ok"] is (True if layout == "floating" else None)
        assert all(s["ok"] is not False and s["seconds"] >= 0 for s in result["steps"])
        keys = next(s for s in result["steps"] if s["step"] == "host_keys")["detail"]
        assert keys == "2 (ecdsa-sha2-nistp256, ssh-ed25519)"  # what the simulator's console prints
        assert "SSH-2.0-" in next(s for s in result["steps"] if s["step"] == "ssh")["detail"]
        state = sim.state("p1")
        assert (state["servers_live"], state["floating_ips_live"], state["servers_peak"]) == (0, 0, 1)
        provider = admin_api.get(f"/providers/{name}").json()
        assert provider["capacity"]["in_use"] == 0
        assert provider["health"]["state"] == "healthy"


def test_a_closed_port_names_the_failed_step_and_why_and_the_provider_shows_it(stack, admin_api):
    with start_simulator(providers=1, boot_seconds=0.2, ssh_port=SIM_SSH_PORT) as sim:  # default group: closed
        label = unique("lbl")
        name = register_sim_provider(admin_api, sim, "p1", label, labels=ssh_ready_label(label))["name"]
        assert admin_api.post(f"/providers/{name}/check", json={"boot": label}).status_code == 202
        again = admin_api.post(f"/providers/{name}/check", json={"boot": label})
        assert again.status_code == 409 and "already running" in again.json()["error"]["message"]
        wait_for(
            lambda: any(s["step"] == "active" for s in admin_api.get(f"/providers/{name}").json()["canary"]["steps"]),
            what="the canary's server ACTIVE",
        )
        timeutil.clock.advance(settings.boot_timeout_seconds + 1)  # its boot timeout passes
        result = finished(admin_api, name)
        provider = admin_api.get(f"/providers/{name}").json()
        assert (result["state"], result["failed_step"]) == ("failed", "ssh")
        [ssh] = [s for s in result["steps"] if s["step"] == "ssh"]
        assert ssh["error_class"] == "unreachable" and f":{SIM_SSH_PORT}" in ssh["detail"]
        assert "tcp/" in result["error"] and [s["step"] for s in result["steps"]][-1] == "delete"
        assert "unreachable" in provider["health"]["last_error"]
        assert provider["capacity"]["in_use"] == 0
        assert sim.state("p1")["servers_live"] == 0


def test_a_canary_takes_a_slot_and_none_when_the_provider_is_full(admin_api):
    with start_simulator(providers=1, boot_seconds=0.2, ssh_port=SIM_SSH_PORT) as sim:
        label = unique("lbl")
        name = register_sim_provider(admin_api, sim, "p1", label, max_instances=1, enabled=False)["name"]
        models.Provider(name).update(actions=[models.Provider.in_use.set(1)])  # its one slot is held
        assert admin_api.post(f"/providers/{name}/check", json={"boot": label}).status_code == 202
        result = finished(admin_api, name)
        assert (result["failed_step"], [s["step"] for s in result["steps"]]) == ("slot", ["slot"])
        assert "no free slot" in result["error"]
        assert sim.state("p1")["servers_peak"] == 0
        provider = admin_api.get(f"/providers/{name}").json()
        assert provider["capacity"]["in_use"] == 1 and provider["health"]["last_error"] is None


def test_bad_canary_requests_name_the_problem(admin_api, user_api):
    with start_simulator(providers=1) as sim:
        label = unique("lbl")
        name = register_sim_provider(admin_api, sim, "p1", label)["name"]
        unmapped = admin_api.post(f"/providers/{name}/check", json={"boot": "nope"})
        assert unmapped.status_code == 422
        assert unmapped.json()["error"] == {
            "code": "unprocessable",
            "message": f"label nope is not mapped on provider {name}",
            "field": "boot",
        }
        assert admin_api.post(f"/providers/{name}/check", json={"boot": 5}).status_code == 400
        assert user_api.post(f"/providers/{name}/check", json={"boot": label}).status_code == 403
        # No body at all is the plain health check, as before.
        plain = admin_api.post(f"/providers/{name}/check")
        assert plain.status_code == 200 and plain.json()["canary"] is None


def test_the_sweeper_ends_a_canary_whose_runner_died_and_deletes_its_server_once_the_lease_is_out(stack, admin_api):
    with start_simulator(providers=1, boot_seconds=0.2) as sim:
        label = unique("lbl")
        name = register_sim_provider(admin_api, sim, "p1", label)["name"]
        with stack.scheduler.paused():
            # As if a runner had taken its slot, made its server, and died.
            now = timeutil.now()
            record = {"id": "c0ffee", "label": label, "trigger": "asked", "state": "running"}
            record |= {"started_at": timeutil.iso(now), "steps": [], "slot": True}
            models.Provider(name).update(
                actions=[
                    models.Provider.canary.set(record),
                    models.Provider.canary_until.set(timeutil.iso(now + canary_lease())),
                    models.Provider.in_use.set(1),
                ]
            )
            conn = openstack.connect(**sim.connect_kwargs("p1"))
            image = conn.image.find_image("ubuntu-22.04")
            flavor = conn.compute.find_flavor("m1.small")
            made = conn.compute.create_server(
                name="oms-canary-c0ffee",
                image_id=image.id,
                flavor_id=flavor.id,
                networks="auto",
                metadata={"oms_instance_id": "canary-c0ffee", "oms_deployment": settings.deployment},
            )
            for _ in range(2):  # while its lease holds, its server is no leak and its slot is held
                report = sweeper.sweep()
                assert report.providers[name].leaks_deleted == [] and not report.providers[name].canary_ended
            assert models.Provider.get(name).in_use == 1
            timeutil.clock.advance(canary_lease().total_seconds() + 1)
            first = sweeper.sweep()
            assert first.providers[name].canary_ended
            second = sweeper.sweep()
            assert second.providers[name].leaks_deleted == [made.id]
        provider = admin_api.get(f"/providers/{name}").json()
        assert provider["canary"]["state"] == "failed" and "interrupted" in provider["canary"]["error"]
        assert provider["capacity"]["in_use"] == 0


def canary_lease():
    from datetime import timedelta

    return timedelta(seconds=settings.boot_timeout_seconds + canary.DELETE_WAIT_SECONDS + 60)


def test_an_idle_provider_gets_a_scheduled_canary_every_n_hours(stack, admin_api):
    with start_simulator(providers=1, boot_seconds=0.2, ssh_port=SIM_SSH_PORT) as sim:
        sim.control("p1", security_groups_open=True)
        label = unique("lbl")
        labels = {label: {"image": "ubuntu-22.04", "flavor": "m1.small", "network": "public"}}
        fields = {"name": unique("p1"), "labels": labels, "canary_label": "other", "canary_every_hours": 6}
        bad = admin_api.post("/providers", json=sim_provider_body(sim, "p1", **fields))
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "canary_label"
        name = register_sim_provider(
            admin_api, sim, "p1", label, labels=ssh_ready_label(label), canary_label=label, canary_every_hours=6
        )["name"]
        with stack.scheduler.paused():
            assert sweeper.sweep().providers[name].canary_started
            result = finished(admin_api, name)
            assert (result["trigger"], result["state"]) == ("scheduled", "passed")
            assert not sweeper.sweep().providers[name].canary_started  # not due for 6 hours
            timeutil.clock.advance(6 * 3600)
            assert sweeper.sweep().providers[name].canary_started
            finished(admin_api, name)
        half = admin_api.patch(f"/providers/{name}", json={"canary_every_hours": None})
        assert half.status_code == 422 and half.json()["error"]["field"] == "canary_every_hours"
        assert sim.state("p1")["servers_live"] == 0
