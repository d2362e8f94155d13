"""Every network layout the simulator plays, end to end on the live stack with `ready: ssh`.

For each layout, 20 instances become ACTIVE; each answers with an SSH banner on the access_ip
the API gives (a real TCP connection), carries the host keys its console printed, and was not
called ACTIVE before its sshd had answered. That last one is proven from outside the product:
the simulator records when a client first read each server's banner, and the test connects to
an instance only after it saw it ACTIVE, so an instance made ACTIVE without its banner having
been read (by the watcher) shows a first banner later than that sighting, or none.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import reach, timeutil
from sim.testing import start_simulator
from tests.conftest import SIM_SSH_PORT, register_sim_provider, request_state, ssh_ready_label, unique, wait_for

COUNT = 20

# layout: (the label's network, provider settings, what access_ip must be: type, version, network)
LAYOUTS = {
    "public": ("public", {}, ("fixed", 4, "public")),
    "floating": ("private", {"floating_ip": "auto"}, ("floating", 4, "private")),
    "multi": ("public", {}, ("fixed", 4, "public")),  # naming it is what spares Nova's 409
    "ipv6": ("public", {}, ("fixed", 6, "public")),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_makes_instances_active_only_once_their_sshd_answers_where_the_api_says(
    layout, admin_api, user_api
):
    network, settings, expected = LAYOUTS[layout]
    with start_simulator(
        providers=1,
        boot_seconds=0.2,
        network_layout=layout,
        ssh_port=SIM_SSH_PORT,
        ready_seconds=0.5,
        floating_ip_quota=-1,
        floating_ip_delay_seconds=0.3,
    ) as sim:
        sim.control("p1", security_groups_open=True)
        label = unique("lbl")
        register_sim_provider(admin_api, sim, "p1", label, labels=ssh_ready_label(label, network), **settings)
        request = user_api.post("/requests", json={"label": label, "count": COUNT}).json()
        seen_active: dict[str, datetime] = {}  # instance id -> a moment by which it was ACTIVE

        def all_seen_active() -> bool:
            instances = request_state(user_api, request["id"])["instances"]
            answered = datetime.now(UTC)  # after the answer: whatever it calls ACTIVE was so by now
            for instance in instances:
                if instance["state"] == "ACTIVE":
                    seen_active.setdefault(instance["id"], answered)
            return len(seen_active) == COUNT

        wait_for(all_seen_active, timeout=120, interval=0.1, what=f"{COUNT} ACTIVE on the {layout} layout")
        clock_ahead = timeutil.clock.now() - datetime.now(UTC)  # other tests may have moved the API's clock
        raw = {server["id"]: server for server in sim.servers("p1")}
        instances = request_state(user_api, request["id"])["instances"]
        assert len(instances) == len(raw) == COUNT
        for instance in instances:
            server = raw[instance["server_id"]]
            [chosen] = [ip for ip in instance["ips"] if ip["addr"] == instance["access_ip"]]
            assert (chosen["type"], chosen["version"], chosen["network"]) == expected, instance["ips"]
            # Read before the test's own connection below, which would set it if nobody had.
            first_banner = server["first_banner_at"] and datetime.fromisoformat(server["first_banner_at"])
            assert first_banner and first_banner <= seen_active[instance["id"]], (
                f"{instance['id']} was ACTIVE by {seen_active[instance['id']]}, its banner first read at {first_banner}"
            )
            # The API's own record agrees, to its one-second resolution.
            active_at = timeutil.parse(instance["active_at"]) - clock_ahead
            assert active_at + timedelta(seconds=1) > datetime.fromisoformat(server["sshd_up_at"]), instance
            banner = reach.ssh_banner(instance["access_ip"], SIM_SSH_PORT, timeout=2)
            assert banner and banner.startswith("SSH-2.0-"), (layout, instance["access_ip"])
            printed = [" ".join(line.split()[:2]) for line in sim.host_keys("p1", instance["server_id"])]
            assert printed and sorted(instance["host_keys"]) == sorted(printed)

        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", timeout=120, what="deleted")
        state = sim.state("p1")
        assert (state["servers_live"], state["floating_ips_live"]) == (0, 0)
        assert not sim.listening()
