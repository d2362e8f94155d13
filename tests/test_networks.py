"""Several networks and none named (the simulator's `multi` layout, OVH/Infomaniak-like): the
provider check says so and lists them; a launch there fails over as config, naming the cause."""

from __future__ import annotations

from sim.testing import start_simulator
from tests.conftest import first_attempt, register_sim_provider, request_state, sim_label, unique, wait_for


def test_a_label_with_no_network_where_there_are_several_is_reported_by_the_check_and_fails_as_config(
    admin_api, user_api
):
    with start_simulator(providers=1, boot_seconds=0.2, network_layout="multi") as sim:
        unnamed, named = unique("lbl"), unique("lbl")
        labels = {
            unnamed: {"image": "ubuntu-22.04", "flavor": "m1.small", "ready": "active"},
            named: sim_label(),
        }
        name = register_sim_provider(admin_api, sim, "p1", unnamed, labels=labels)["name"]
        checked = admin_api.post(f"/providers/{name}/check").json()
        assert checked["health"]["state"] == "healthy"
        [problem] = checked["problems"]
        assert unnamed in problem and "private" in problem and "public" in problem, problem

        request = user_api.post("/requests", json={"label": unnamed, "count": 1}).json()

        first = wait_for(lambda: first_attempt(user_api, request["id"]), what="a refused create")
        assert first["error"] == "config" and "More than one possible network" in first["message"], first

        fine = user_api.post("/requests", json={"label": named, "count": 1}).json()
        wait_for(lambda: request_state(user_api, fine["id"])["state"] == "ready", what="the named network works")
        labels[unnamed]["network"] = "private"
        admin_api.patch(f"/providers/{name}", json={"labels": labels})
        assert admin_api.post(f"/providers/{name}/check").json()["problems"] == []  # fixed: no longer shown
        for made in (request, fine):
            user_api.delete(f"/requests/{made['id']}")
        wait_for(lambda: request_state(user_api, fine["id"])["state"] == "deleted", what="deleted")
