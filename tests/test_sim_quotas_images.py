"""The simulator's cores, RAM and port quotas and its rotating images, as openstacksdk sees them
(REAL-CLOUDS.md, Quotas and Images): what the quota-by-resource and image-selection code is
tested against must first be true to Nova, Neutron and Glance."""

from __future__ import annotations

from collections.abc import Iterator

import openstack
import pytest
from openstack import exceptions as os_exc

from sim.testing import SimControlError, Simulator, start_simulator


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with start_simulator(providers=1, quota=20, boot_seconds=0.1, seed=3) as running:
        yield running


def connect(sim: Simulator) -> openstack.connection.Connection:
    return openstack.connect(**sim.connect_kwargs("p1"))


def create(conn, flavor: str, name: str = "vm"):
    return conn.compute.create_server(
        name=name,
        image_id=conn.image.find_image("ubuntu-22.04", ignore_missing=False).id,
        flavor_id=conn.compute.find_flavor(flavor, ignore_missing=False).id,
        networks=[{"uuid": conn.network.find_network("public", ignore_missing=False).id}],
    )


def test_cores_and_ram_quotas_are_served_in_limits_and_refused_in_novas_words(sim: Simulator) -> None:
    sim.control("p1", quota_cores=5, quota_ram_mb=6144)
    conn = connect(sim)
    create(conn, "m1.medium", "a")  # 2 vCPU, 4096 MiB
    absolute = conn.compute.get_limits().absolute
    assert (absolute.total_cores, absolute.total_cores_used) == (5, 2)
    assert (absolute.total_ram, absolute.total_ram_used) == (6144, 4096)
    with pytest.raises(os_exc.ForbiddenException) as refused:
        create(conn, "m1.medium", "b")  # 4 of 5 cores would fit; 8192 MiB of RAM would not
    assert refused.value.details == "Quota exceeded for ram: Requested 4096, but already used 4096 of 6144 ram"
    sim.control("p1", quota_cores=3, quota_ram_mb=-1)
    with pytest.raises(os_exc.ForbiddenException) as refused:
        create(conn, "m1.medium", "c")
    assert refused.value.details == "Quota exceeded for cores: Requested 2, but already used 2 of 3 cores"
    create(conn, "m1.small", "d")  # 1 vCPU: exactly the room left
    sim.control("p1", quota_instances=2)
    with pytest.raises(os_exc.ForbiddenException) as refused:
        create(conn, "m1.medium", "e")  # Nova names every resource over, with the first one's numbers
    assert refused.value.details == (
        "Quota exceeded for cores,instances: Requested 2, but already used 3 of 3 cores,instances"
    )
    assert sim.state("p1")["quota_rejections"] == 3


def test_a_port_quota_is_novas_403_without_the_word_quota_and_neutron_counts_ports(sim: Simulator) -> None:
    conn = connect(sim)
    create(conn, "m1.small", "a")
    sim.control("p1", quota_ports=1)
    with pytest.raises(os_exc.ForbiddenException) as refused:
        create(conn, "m1.small", "b")
    assert refused.value.details == "Maximum number of ports exceeded"
    ports = conn.network.get_quota(conn.current_project_id, details=True).ports
    assert (ports["limit"], ports["used"]) == (1, 1)


def test_images_rotate_newest_first_hidden_ones_unlisted_deleted_ones_unbootable(sim: Simulator) -> None:
    conn = connect(sim)
    old = next(i for i in sim.images("p1") if i["name"] == "ubuntu-22.04")
    new = sim.add_image("p1", name="ubuntu-22.04", created_at="2025-11-03T00:00:00Z", os_distro="ubuntu")
    with pytest.raises(os_exc.DuplicateResource, match="More than one Image exists with the name"):
        conn.image.find_image("ubuntu-22.04")
    listed = {i.id: i for i in conn.image.images(name="ubuntu-22.04")}
    assert listed[new["id"]].created_at == "2025-11-03T00:00:00Z" and listed[new["id"]].os_distro == "ubuntu"
    with pytest.raises(SimControlError, match="use an id"):
        sim.update_image("p1", "ubuntu-22.04", os_hidden=True)
    sim.update_image("p1", old["id"], name="ubuntu-22.04 (2024-01-01)", os_hidden=True)
    assert [i.id for i in conn.image.images(name="ubuntu-22.04 (2024-01-01)")] == []
    assert conn.image.get_image(old["id"]).is_hidden is True  # still there by id
    sim.delete_image("p1", new["id"])
    with pytest.raises(os_exc.BadRequestException, match=f"Image {new['id']} could not be found"):
        conn.compute.create_server(
            name="gone",
            image_id=new["id"],
            flavor_id=conn.compute.find_flavor("m1.small").id,
            networks=[{"uuid": conn.network.find_network("public").id}],
        )
