"""Quota by resource (issue 18): an account's vCPU and RAM quotas cap how many instances it takes,
as its instance and floating IP quotas do, so placement never asks it for more than it has."""

from __future__ import annotations

from chalicelib import quota
from chalicelib.cloud import Flavor, Limits, NetworkQuota, Quota
from sim.testing import start_simulator
from tests.conftest import register_sim_provider, request_state, sim_label, unique, wait_for

UNLIMITED = Quota(-1, 0)
SMALL, MEDIUM = Flavor("s", 1, 2048), Flavor("m", 2, 4096)


def reading(instances=UNLIMITED, cores=UNLIMITED, ram=UNLIMITED, flavors=(MEDIUM,), network=None) -> quota.Reading:
    return quota.Reading(Limits(instances, cores, ram), network, tuple(flavors))


def test_the_smallest_room_caps_and_each_resource_shows_its_own():
    found = quota.rooms(reading(Quota(20, 0), Quota(20, 0), Quota(51200, 0)), ours=0)
    assert found["cores"] == quota.Room(20, 0, 20, 2, 10)
    assert found["ram_mb"] == quota.Room(51200, 0, 51200, 4096, 12)
    assert found["instances"].instances == 20
    assert quota.instances(found) == 10


def test_what_others_use_is_subtracted_and_our_own_use_is_not():
    # 14 cores used: 5 instances of ours (10 cores), so 4 are someone else's: room 16, 8 instances.
    assert quota.rooms(reading(cores=Quota(20, 14)), ours=5)["cores"] == quota.Room(20, 14, 16, 2, 8)
    # Reserved but not yet created counts as ours: nobody else is using more than they do.
    assert quota.rooms(reading(cores=Quota(20, 0)), ours=5)["cores"].instances == 10


def test_mixed_flavors_are_conservative_never_over():
    # Others' use is estimated with our smallest footprint, rooms divided by our biggest.
    found = quota.rooms(reading(cores=Quota(20, 6), flavors=(SMALL, MEDIUM)), ours=4)
    assert found["cores"] == quota.Room(20, 6, 18, 2, 9)  # 6 - 4x1 = 2 others': 18 left, 9 of the 2-vCPU one


def test_unlimited_or_unknown_resources_cap_nothing():
    assert quota.rooms(reading(cores=Quota(20, 0), flavors=()), ours=0) == {}
    assert quota.instances({}) is None
    network = NetworkQuota(floating_ips=Quota(3, 1), ports=Quota(-1, 7))
    found = quota.rooms(reading(network=network), ours=1)
    assert set(found) == {"floating_ips"} and found["floating_ips"].instances == 3


def test_20_vcpus_hold_exactly_10_two_vcpu_servers_with_no_quota_error(admin_api, user_api):
    """The issue's test: 20 requested, max_instances 20, instance quota 20, 20 vCPUs, m1.medium."""
    with start_simulator(providers=1, boot_seconds=0.2, quota_cores=20) as sim:
        label = unique("lbl")
        name = register_sim_provider(
            admin_api, sim, "p1", label, max_instances=20, labels={label: sim_label(flavor="m1.medium")}
        )["name"]
        capacity = admin_api.post(f"/providers/{name}/check").json()["capacity"]
        assert capacity["quota_instances"] == 10 and capacity["available"] == 10
        assert capacity["rooms"]["cores"] == {"limit": 20, "used": 0, "room": 20, "per_instance": 2, "instances": 10}
        assert capacity["rooms"]["instances"]["instances"] == 20 and "ram_mb" not in capacity["rooms"]

        request = user_api.post("/requests", json={"label": label, "count": 20}).json()

        def ten_active() -> dict | None:
            counts = request_state(user_api, request["id"])["counts"]
            return counts if counts["ACTIVE"] == 10 else None

        assert wait_for(ten_active, what="10 ACTIVE")["PENDING"] == 10  # the rest wait for room
        state = sim.state("p1")
        assert (state["servers_peak"], state["quota_rejections"]) == (10, 0), state
        # A check during the burst: what is used is all ours, the room stays 10.
        assert admin_api.post(f"/providers/{name}/check").json()["capacity"]["quota_instances"] == 10
        assert sim.state("p1")["servers_peak"] == 10
        user_api.delete(f"/requests/{request['id']}")
        wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")

        # Someone else's 2-vCPU server leaves room for 9; a RAM quota of 5 servers' worth caps at 5.
        sim.add_servers("p1", flavor="m1.medium")
        assert admin_api.post(f"/providers/{name}/check").json()["capacity"]["quota_instances"] == 9
        sim.control("p1", quota_ram_mb=6 * 4096)
        rooms = admin_api.post(f"/providers/{name}/check").json()["capacity"]["rooms"]
        assert rooms["ram_mb"]["instances"] == 5 and rooms["cores"]["instances"] == 9
        assert admin_api.get(f"/providers/{name}").json()["capacity"]["quota_instances"] == 5


def test_the_cli_shows_each_rooms_instances_and_units_where_an_instance_takes_more_than_one():
    from oms_cli import output

    capacity = {
        "rooms": {
            "instances": {"limit": 20, "used": 0, "room": 20, "per_instance": 1, "instances": 20},
            "cores": {"limit": 20, "used": 0, "room": 20, "per_instance": 2, "instances": 10},
        }
    }
    assert output.rooms(capacity) == "instances 20, cores 10 (20 of 20)"
