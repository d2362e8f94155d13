"""Boot volumes: a flavor with a 0 GB disk boots only from a volume (REAL-CLOUDS.md)."""

from __future__ import annotations

from sim.testing import start_simulator
from tests.conftest import first_attempt, register_sim_provider, request_state, sim_label, unique, wait_for

ZERO_DISK = {
    "providers": [
        {
            "name": "p1",
            "boot_seconds": 0.2,
            "flavors": [{"name": "v1.small", "vcpus": 1, "ram": 2048, "disk": 0}],
        }
    ]
}


def mapping(**extra) -> dict:
    return sim_label(flavor="v1.small", **extra)


def test_a_zero_disk_flavor_boots_with_a_volume_size_and_says_why_without_one(admin_api, user_api):
    with start_simulator(config=ZERO_DISK) as sim:
        with_volume, without = unique("lbl"), unique("lbl")
        labels = {with_volume: mapping(volume_size=10, config_drive=True), without: mapping()}
        register_sim_provider(admin_api, sim, "p1", with_volume, labels=labels)

        request = user_api.post("/requests", json={"label": with_volume, "count": 2}).json()
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "ready", what="booted from volumes")
        assert sim.state("p1")["volumes_live"] == 2
        assert all(s["config_drive"] for s in sim.servers("p1")), sim.servers("p1")

        refused = user_api.post("/requests", json={"label": without, "count": 1}).json()

        first = wait_for(lambda: first_attempt(user_api, refused["id"]), what="a refused create")
        assert first["error"] == "config" and "volume-backed" in first["message"], first
        for made in (request, refused):
            user_api.delete(f"/requests/{made['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")
        assert (sim.state("p1")["servers_live"], sim.state("p1")["volumes_live"]) == (0, 0)
