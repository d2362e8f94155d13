"""Image and flavor selection (issue 18): clouds rotate and rename images (REAL-CLOUDS.md, Images);
a label names its image by name (the newest of several wins), by id, or by properties, and its
flavor by name or by a minimum."""

from __future__ import annotations

from sim.testing import start_simulator
from tests.conftest import register_sim_provider, request_state, sim_label, unique, wait_for

JAMMY = {"os_distro": "ubuntu", "os_version": "22.04"}


def launch_one(user_api, label: str) -> dict:
    """One instance of `label`, ACTIVE (fails the test if it failed over instead)."""
    request = user_api.post("/requests", json={"label": label, "count": 1}).json()
    wait_for(lambda: request_state(user_api, request["id"])["counts"]["ACTIVE"] == 1, what="ACTIVE")
    instance = request_state(user_api, request["id"])["instances"][0]
    assert instance["attempts"] == [], instance["attempts"]
    return instance


def server_of(sim, instance: dict) -> dict:
    return next(s for s in sim.servers("p1") if s["metadata"].get("oms_instance_id") == instance["id"])


def test_images_by_name_newest_first_and_by_properties_through_a_rename(admin_api, user_api):
    with start_simulator(providers=1, boot_seconds=0.2) as sim:
        old = sim.add_image("p1", name="Ubuntu Jammy", created_at="2025-01-01T00:00:00Z", **JAMMY)
        new = sim.add_image("p1", name="Ubuntu Jammy", created_at="2025-11-03T00:00:00Z", **JAMMY)
        by_name, by_properties = unique("lbl"), unique("lbl")
        register_sim_provider(
            admin_api,
            sim,
            "p1",
            by_name,
            labels={
                by_name: sim_label(image="Ubuntu Jammy"),
                by_properties: sim_label(image=JAMMY, flavor={"min_vcpus": 2, "min_ram_mb": 4096}),
            },
        )
        # Two images named alike: openstacksdk's find_image refuses them; the newest is used.
        assert server_of(sim, launch_one(user_api, by_name))["image_id"] == new["id"]
        first = server_of(sim, launch_one(user_api, by_properties))
        medium = next(f for f in sim.state("p1")["flavors"] if f["name"] == "m1.medium")
        assert (first["image_id"], first["flavor_id"]) == (new["id"], medium["id"])  # the smallest that fits

        # The cloud rotates: the image we used is renamed with its date and deleted a little later,
        # a newer one takes the properties under a dated name. Selected by properties, launches go on.
        sim.update_image("p1", new["id"], name="Ubuntu Jammy (2025-11-03)", os_hidden=True)
        newest = sim.add_image("p1", name="Ubuntu Jammy (2026-01-10)", created_at="2026-01-10T00:00:00Z", **JAMMY)
        sim.delete_image("p1", new["id"])
        # The cached resolution names the deleted image: Nova's 400 makes it resolve again and retry.
        assert server_of(sim, launch_one(user_api, by_properties))["image_id"] == newest["id"]
        assert server_of(sim, launch_one(user_api, by_name))["image_id"] == old["id"]  # the one left by that name
