"""A floating IP per instance: a provider with `floating_ip: auto` holds no more instances than its
project's floating IP quota leaves room for (REAL-CLOUDS.md: Neutron's 409 "Quota exceeded for
resources: ['floatingip']"), so placement never walks into that error."""

from __future__ import annotations

import openstack

from sim.testing import start_simulator
from tests.conftest import register_sim_provider, request_state, sim_label, unique, wait_for


def test_a_floating_ip_quota_of_3_caps_the_provider_at_3_instances_and_none_hits_the_quota(admin_api, user_api):
    with start_simulator(providers=1, boot_seconds=0.2, network_layout="floating", floating_ip_quota=3) as sim:
        label = unique("lbl")
        name = register_sim_provider(
            admin_api,
            sim,
            "p1",
            label,
            floating_ip="auto",
            max_instances=20,
            labels={label: sim_label(network="private")},
        )["name"]
        capacity = admin_api.post(f"/providers/{name}/check").json()["capacity"]
        assert (capacity["max_instances"], capacity["quota_instances"], capacity["available"]) == (20, 3, 3)

        request = user_api.post("/requests", json={"label": label, "count": 6}).json()

        def three_active() -> dict | None:
            counts = request_state(user_api, request["id"])["counts"]
            return counts if counts["ACTIVE"] == 3 else None

        assert wait_for(three_active, what="3 ACTIVE")["PENDING"] == 3  # the rest wait for room
        first = [i for i in request_state(user_api, request["id"])["instances"] if i["state"] == "ACTIVE"]
        for instance in first:
            assert user_api.delete(f"/instances/{instance['id']}").status_code == 202
        # Their floating IPs given back, the other three take their places.
        wait_for(
            lambda: (
                request_state(user_api, request["id"])["counts"]["ACTIVE"] == 3
                and all(i["state"] != "PENDING" for i in request_state(user_api, request["id"])["instances"])
            ),
            what="the other 3 ACTIVE",
        )
        state = sim.state("p1")
        assert state["servers_peak"] <= 3 and state["floating_ips_peak"] <= 3, state
        assert state["floating_ip_quota_rejections"] == 0
        assert all(not i["attempts"] for i in request_state(user_api, request["id"])["instances"])
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")

        # A floating IP someone else holds in the project leaves us one fewer; unlimited caps nothing.
        conn = openstack.connect(**sim.connect_kwargs("p1"))
        theirs = conn.network.create_ip(
            floating_network_id=next(iter(conn.network.networks(is_router_external=True))).id
        )
        assert admin_api.post(f"/providers/{name}/check").json()["capacity"]["quota_instances"] == 2
        conn.network.delete_ip(theirs.id)
        sim.control("p1", floating_ip_quota=-1)
        assert admin_api.post(f"/providers/{name}/check").json()["capacity"]["quota_instances"] == 20
