"""Reaching simulated servers as on real clouds: layouts, floating IPs, security groups, sshd, host keys.

Unmodified openstacksdk drives the simulator over HTTP, and plain sockets connect to the
addresses the API shows, as a client of a real cloud would (only 127.0.0.0/8 addresses).
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import openstack
import pytest
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from sim.listeners import SSH_BANNER
from sim.testing import SimControlError, Simulator, start_simulator

WAIT = 60  # generous upper bounds: a busy 2-core machine must not make these flaky
SILENCE = 1.5  # how long a probe waits before calling a port filtered
PORT = 2222  # tests that need not prove port 22 stay clear of it (non-root runs cannot bind it)

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


def connect(sim: Simulator, provider: str = "p1") -> openstack.connection.Connection:
    return openstack.connect(**sim.connect_kwargs(provider, api_timeout=10))


def poll(predicate: Callable[[], Any], timeout: float = WAIT, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def probe(address: str, port: int, timeout: float = SILENCE) -> str:
    """What a client meets: the banner line, "silent" (filtered), "reset", "refused" or "closed"."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except ConnectionRefusedError:
            return "refused"
        except ConnectionResetError:
            return "reset"  # the listener may accept and reset before connect() returns
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    return "closed"
                data += chunk
        except TimeoutError:
            return "silent"
        except ConnectionResetError:
            return "reset"
        return data.decode()


BANNER = SSH_BANNER.decode()


def refs(conn: openstack.connection.Connection, network: str = "public", flavor: str = "m1.small") -> dict[str, str]:
    return {
        "image_id": conn.image.find_image("ubuntu-22.04", ignore_missing=False).id,
        "flavor_id": conn.compute.find_flavor(flavor, ignore_missing=False).id,
        "network": conn.network.find_network(network, ignore_missing=False).id,
    }


def boot(conn: openstack.connection.Connection, r: dict[str, str], name: str = "vm", **extra: Any) -> Any:
    server = conn.compute.create_server(
        name=name, image_id=r["image_id"], flavor_id=r["flavor_id"], networks=[{"uuid": r["network"]}], **extra
    )
    return conn.compute.wait_for_server(server, interval=0.1, wait=WAIT)


def ssh_group(conn: openstack.connection.Connection, name: str = "ssh", port: int = PORT, v6: bool = False) -> Any:
    """The group a client creates to reach tcp/port (what the product will do idempotently)."""
    group = conn.network.create_security_group(name=name, description="ssh from anywhere")
    for ethertype, prefix in (("IPv4", "0.0.0.0/0"), ("IPv6", "::/0"))[: 2 if v6 else 1]:
        conn.network.create_security_group_rule(
            security_group_id=group.id,
            direction="ingress",
            ethertype=ethertype,
            protocol="tcp",
            port_range_min=port,
            port_range_max=port,
            remote_ip_prefix=prefix,
        )
    return group


def addresses(server: Any, version: int, kind: str = "fixed") -> list[str]:
    return [
        a["addr"]
        for entries in server.addresses.values()
        for a in entries
        if a["version"] == version and a["OS-EXT-IPS:type"] == kind
    ]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with start_simulator(providers=1, boot_seconds=0.2, seed=5, ssh_port=PORT) as simulator:
        yield simulator


# -- public layout: fixed addresses are the listeners -------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="binding port 22 needs root")
def test_public_layout_port_22_needs_a_rule_per_address_family() -> None:
    with start_simulator(providers=1, boot_seconds=0.2, seed=5) as sim:
        conn = connect(sim)
        r = refs(conn)
        closed = boot(conn, r, name="closed")
        ssh_group(conn, port=22)
        opened = boot(conn, r, name="opened", security_groups=[{"name": "ssh"}])

        [v4] = addresses(opened, 4)
        [v6] = addresses(opened, 6)
        assert v4.startswith("127.") and v6.startswith("::ffff:127.")
        reach = {f["family"]: f for f in sim.raw_server("p1", opened.id)["reach"]}
        assert (reach[4]["address"], reach[4]["port"], reach[4]["error"]) == (v4, 22, None)
        assert probe(v4, 22) == BANNER
        assert probe(v6, 22) == "silent", "only an IPv4 rule exists"
        assert probe(addresses(closed, 4)[0], 22) == "silent", "the default group admits nothing from outside"

        group = conn.network.find_security_group("ssh", ignore_missing=False)
        conn.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ethertype="IPv6", protocol="tcp", port_range_min=22
        )
        assert probe(v6, 22) == BANNER, "rules apply to running servers at once"

        conn.compute.delete_server(opened)
        assert probe(v4, 22) == "refused", "the listener closes with the server"
        assert sim.state("p1")["listeners_live"] == 2  # the closed server's two faces


def test_open_provider_and_group_rules(sim: Simulator) -> None:
    conn = connect(sim)
    server = boot(conn, refs(conn))
    [v4] = addresses(server, 4)
    assert probe(v4, PORT) == "silent"
    sim.control("p1", security_groups_open=True)  # OVH: everything is allowed
    assert probe(v4, PORT) == BANNER

    sim.control("p1", security_groups_open=False)
    r = refs(conn)
    group = ssh_group(conn, name="web", port=80)
    web = boot(conn, r, name="web", security_groups=[{"name": "web"}])
    assert probe(addresses(web, 4)[0], PORT) == "silent", "a rule for port 80 does not open the ssh port"
    with pytest.raises(os_exc.ConflictException, match="Security Group .* in use"):
        conn.network.delete_security_group(group)
    with pytest.raises(os_exc.BadRequestException, match="Security group nope not found for project"):
        boot(conn, r, name="x", security_groups=[{"name": "nope"}])
    with pytest.raises(os_exc.ConflictException, match="Security group rule already exists"):
        conn.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ethertype="IPv4", protocol="tcp",
            port_range_min=80, port_range_max=80, remote_ip_prefix="0.0.0.0/0",
        )  # fmt: skip
    conn.compute.delete_server(web)
    conn.network.delete_security_group(group)
    assert conn.network.find_security_group("web") is None
    default = conn.network.find_security_group("default", ignore_missing=False)
    assert not [r for r in default.security_group_rules if r["direction"] == "ingress" and not r["remote_group_id"]]


def test_sshd_comes_up_after_ready_seconds_and_console_shows_host_keys() -> None:
    with start_simulator(providers=1, boot_seconds=0.2, seed=5, ssh_port=PORT, ready_seconds=3) as sim:
        conn = connect(sim)
        sim.control("p1", security_groups_open=True)
        server = boot(conn, refs(conn), name="keys")
        [v4] = addresses(server, 4)
        assert probe(v4, PORT) == "reset", "ACTIVE is not ready: the guest is up, sshd is not"
        early = conn.compute.get_server_console_output(server)["output"]
        assert "Cloud-init v." in early and "BEGIN SSH HOST KEY KEYS" not in early
        raw = sim.raw_server("p1", server.id)
        assert raw["first_banner_at"] is None, "a reset is no banner"
        sshd_up = datetime.fromisoformat(raw["sshd_up_at"])
        assert abs((sshd_up - datetime.fromisoformat(raw["active_at"])).total_seconds() - 3) < 0.001
        assert sshd_up > datetime.now(UTC), "its sshd comes up later"

        assert poll(lambda: probe(v4, PORT) == BANNER, timeout=WAIT, interval=0.2)
        read = datetime.now(UTC)
        raw = sim.raw_server("p1", server.id)
        assert sshd_up <= datetime.fromisoformat(raw["first_banner_at"]) <= read
        probe(v4, PORT)
        assert sim.raw_server("p1", server.id)["first_banner_at"] == raw["first_banner_at"], "the first one stays"
        output = conn.compute.get_server_console_output(server)["output"]
        block = output.split("-----BEGIN SSH HOST KEY KEYS-----\n")[1].split("-----END SSH HOST KEY KEYS-----")[0]
        keys = block.strip().splitlines()
        assert keys == sim.host_keys("p1", server.id) == sim.raw_server("p1", server.id)["host_keys"]
        assert [k.split()[0] for k in keys] == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
        for key in keys:
            kind, blob, comment = key.split()
            raw = base64.b64decode(blob)
            assert raw[4 : 4 + int.from_bytes(raw[:4], "big")].decode() == kind  # a wire blob names its type
            assert comment == "root@keys"
        tail = conn.compute.get_server_console_output(server, length=3)["output"]
        assert tail.count("\n") == 3 and "login:" in tail

        sim.control("p1", boot_seconds=3600)
        slow = conn.compute.create_server(
            name="slow", image_id=server.image.id, flavor_id=refs(conn)["flavor_id"],
            networks=[{"uuid": refs(conn)["network"]}],
        )  # fmt: skip
        with pytest.raises(os_exc.ConflictException, match="is not ready"):
            conn.compute.get_server_console_output(slow)


# -- floating layout ---------------------------------------------------------------------------
def test_floating_layout_reached_through_a_floating_ip_after_a_delay() -> None:
    with start_simulator(
        providers=1, boot_seconds=0.2, seed=5, ssh_port=PORT, network_layout="floating", floating_ip_delay_seconds=2
    ) as sim:
        conn = connect(sim)
        ssh_group(conn)
        external = conn.network.find_network("public", ignore_missing=False)
        assert external.is_router_external and not external.is_shared
        server = boot(conn, refs(conn, "private"), security_groups=[{"name": "ssh"}])
        [fixed] = addresses(server, 4)
        assert fixed.startswith("10."), "a private address, unreachable from outside"
        assert not addresses(server, 6) and sim.raw_server("p1", server.id)["reach"] == []

        fip = conn.network.create_ip(floating_network_id=external.id, description="oms:vm")
        conn.network.set_tags(fip, ["oms", "request:r1"])
        assert probe(fip.floating_ip_address, PORT) == "silent", "an unattached floating IP leads nowhere"
        [port] = conn.network.ports(device_id=server.id)
        attached = conn.network.update_ip(fip, port_id=port.id)
        assert (attached.port_id, attached.fixed_ip_address, attached.status) == (port.id, fixed, "ACTIVE")
        assert not addresses(conn.compute.get_server(server.id), 4, "floating"), "real clouds take a moment"

        shown = poll(lambda: addresses(conn.compute.get_server(server.id), 4, "floating"))
        assert shown == [fip.floating_ip_address]
        assert probe(fip.floating_ip_address, PORT) == BANNER
        assert [i.id for i in conn.network.ips(tags="oms")] == [fip.id]
        assert [i.id for i in conn.network.ips(port_id=port.id)] == [fip.id]

        conn.compute.delete_server(server)
        poll(lambda: not list(conn.compute.servers()))
        [left] = sim.floating_ips("p1")
        assert (left["id"], left["port_id"], left["server_id"]) == (fip.id, None, None), "deleting a server leaks it"
        state = sim.state("p1")
        assert (state["floating_ips_live"], state["floating_ips_created"], state["floating_ips_deleted"]) == (1, 1, 0)
        assert probe(fip.floating_ip_address, PORT) == "silent"

        conn.network.delete_ip(fip)
        state = sim.state("p1")
        assert (state["floating_ips_live"], state["floating_ips_peak"], state["floating_ips_deleted"]) == (0, 1, 1)
        assert probe(fip.floating_ip_address, PORT) == "refused"
        assert sim.listening() == set()


def test_a_slow_floating_ip_create_holds_one_the_client_has_not_heard_of() -> None:
    with start_simulator(providers=1, seed=5, network_layout="floating", floating_ip_answer_seconds=5) as sim:
        conn = connect(sim)
        external = conn.network.find_network("public", ignore_missing=False)
        impatient = openstack.connect(**sim.connect_kwargs("p1", api_timeout=1))
        with pytest.raises(ks_exc.ConnectionError):  # its client gives up (or dies) before the answer
            impatient.network.create_ip(floating_network_id=external.id, description="oms:lost")
        [made] = sim.floating_ips("p1")
        assert made["description"] == "oms:lost"


def test_floating_ip_quota_router_and_external_network_errors() -> None:
    scenario = {
        "providers": [
            {"name": "p1", "network_layout": "floating", "floating_ip_quota": 1, "ssh_port": PORT},
            {"name": "norouter", "network_layout": "floating", "floating_ip_router": False, "ssh_port": PORT},
        ]
    }
    with start_simulator(config=scenario, boot_seconds=0.2) as sim:
        sim.control("p1", boot_seconds=0.2)
        sim.control("norouter", boot_seconds=0.2)
        conn = connect(sim)
        external = conn.network.find_network("public", ignore_missing=False)
        conn.network.create_ip(floating_network_id=external.id)
        with pytest.raises(os_exc.ConflictException) as over:
            conn.network.create_ip(floating_network_id=external.id)
        assert over.value.details == "Quota exceeded for resources: ['floatingip']."
        assert sim.state("p1")["floating_ip_quota_rejections"] == 1
        assert conn.network.get_quota(conn.current_project_id).floating_ips == 1

        with pytest.raises(os_exc.ForbiddenException, match="not allowed to create an interface on external network"):
            boot(conn, refs(conn, "public"))

        lonely = connect(sim, "norouter")
        server = boot(lonely, refs(lonely, "private"))
        [port] = lonely.network.ports(device_id=server.id)
        fip = lonely.network.create_ip(floating_network_id=lonely.network.find_network("public").id)
        with pytest.raises(os_exc.NotFoundException, match=r"External network .* is not reachable from subnet .*"):
            lonely.network.update_ip(fip, port_id=port.id)
        assert sim.state("norouter")["floating_ips_attached"] == 0


# -- multi and ipv6 layouts ----------------------------------------------------------------------
def test_multi_layout_needs_a_network() -> None:
    with start_simulator(providers=1, boot_seconds=0.2, seed=5, ssh_port=PORT, network_layout="multi") as sim:
        conn = connect(sim)
        # The cloud layer sends networks "auto" when none is named (microversion >= 2.37).
        with pytest.raises(os_exc.ConflictException) as ambiguous:
            conn.create_server("any", image="ubuntu-22.04", flavor="m1.small", wait=False)
        assert ambiguous.value.details == (
            "More than one possible network found. Specify network ID(s) to select which one(s) to connect to."
        )
        # The proxy sends no networks at all, which Nova's schema refuses from 2.37.
        r = refs(conn)
        with pytest.raises(os_exc.BadRequestException, match="'networks' is a required property"):
            conn.compute.create_server(name="none", image_id=r["image_id"], flavor_id=r["flavor_id"])
        server = boot(conn, r)  # the proxy, naming the network (the cloud layer would also probe port 22)
        sim.control("p1", security_groups_open=True)
        assert probe(addresses(server, 4)[0], PORT) == BANNER
        assert {n.name for n in conn.network.networks()} == {"public", "private"}


def test_auto_network_without_candidates_cannot_be_allocated() -> None:
    # A project that sees only an external, unshared network: Nova cannot pick one for "auto".
    scenario = [{"name": "p1", "networks": [{"name": "public", "shared": False}], "boot_seconds": 0.2}]
    with start_simulator(config=scenario) as sim:
        conn = connect(sim)
        with pytest.raises(os_exc.BadRequestException) as refused:
            conn.create_server("auto", image="ubuntu-22.04", flavor="m1.small", wait=False)
        assert (
            refused.value.details == f"Unable to automatically allocate a network for project {conn.current_project_id}"
        )


def test_ipv6_only_layout_is_reached_over_ipv6() -> None:
    with start_simulator(providers=1, boot_seconds=0.2, seed=5, ssh_port=PORT, network_layout="ipv6") as sim:
        conn = connect(sim)
        ssh_group(conn, v6=False)
        server = boot(conn, refs(conn), security_groups=[{"name": "ssh"}])
        assert not addresses(server, 4)
        [v6] = addresses(server, 6)
        assert v6.startswith("::ffff:127.")
        assert probe(v6, PORT) == "silent", "an IPv4 rule does not open an IPv6 address"
        group = conn.network.find_security_group("ssh", ignore_missing=False)
        conn.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ethertype="IPv6", protocol="tcp",
            port_range_min=PORT, port_range_max=PORT, remote_ip_prefix="::/0",
        )  # fmt: skip
        assert probe(v6, PORT) == BANNER
        assert [s.ip_version for s in conn.network.subnets()] == [6]


# -- boot volumes and user data --------------------------------------------------------------------
def test_zero_disk_flavor_needs_a_boot_volume() -> None:
    scenario = [
        {"name": "p1", "boot_seconds": 0.2, "flavors": [{"name": "v.small", "vcpus": 1, "ram": 1024, "disk": 0}]}
    ]
    with start_simulator(config=scenario) as sim:
        conn = connect(sim)
        r = refs(conn, flavor="v.small")
        with pytest.raises(os_exc.ForbiddenException) as refused:
            boot(conn, r)
        assert refused.value.details == "Only volume-backed servers are allowed for flavors with zero disk."

        def from_volume(name: str, delete: bool) -> Any:
            bdm = [
                {"boot_index": 0, "uuid": r["image_id"], "source_type": "image", "destination_type": "volume",
                 "volume_size": 20, "delete_on_termination": delete}
            ]  # fmt: skip
            server = conn.compute.create_server(
                name=name, flavor_id=r["flavor_id"], networks=[{"uuid": r["network"]}], block_device_mapping=bdm
            )
            return conn.compute.wait_for_server(server, interval=0.1, wait=WAIT)

        kept, gone = from_volume("kept", False), from_volume("gone", True)
        assert gone.status == "ACTIVE" and not gone.image, "Nova shows no image for a volume-backed server"
        [attached] = gone.attached_volumes
        assert attached["delete_on_termination"] is True
        assert sim.state("p1")["volumes_live"] == 2
        with pytest.raises(os_exc.BadRequestException, match="need to have a non-zero size"):
            conn.compute.create_server(
                name="nosize", flavor_id=r["flavor_id"], networks=[{"uuid": r["network"]}],
                block_device_mapping=[{"boot_index": 0, "uuid": r["image_id"], "source_type": "image",
                                       "destination_type": "volume"}],
            )  # fmt: skip
        conn.compute.delete_server(gone)
        conn.compute.delete_server(kept)
        state = sim.state("p1")
        assert (state["volumes_created"], state["volumes_deleted"], state["volumes_live"]) == (2, 1, 1), (
            "a volume without delete_on_termination outlives its server"
        )


def test_user_data_rules_of_a_conoha_like_provider(sim: Simulator) -> None:
    sim.control("p1", user_data_formats="no_multipart", user_data_max_bytes=16384)
    conn = connect(sim)
    r = refs(conn)
    mime = b'Content-Type: multipart/mixed; boundary="==b=="\nMIME-Version: 1.0\n\n--==b==\n'

    def create(data: bytes) -> Any:
        return conn.compute.create_server(
            name="ud", image_id=r["image_id"], flavor_id=r["flavor_id"], networks=[{"uuid": r["network"]}],
            user_data=base64.b64encode(data).decode(),
        )  # fmt: skip

    with pytest.raises(os_exc.BadRequestException, match="MIME multipart"):
        create(mime)
    with pytest.raises(os_exc.BadRequestException, match="at most 16384 bytes"):
        create(b"#cloud-config\n" + b"#" * 16384)
    assert create(b"#cloud-config\nruncmd: [true]\n").id
    assert create(b"#!/bin/sh\necho hi\n").id
    sim.control("p1", user_data_formats="any", user_data_max_bytes=None)
    assert create(mime).id, "Nova itself takes any user data"


def test_settings_are_validated(sim: Simulator) -> None:
    for bad in (
        {"floating_ip_quota": -2},
        {"floating_ip_router": "yes"},
        {"ssh_port": 0},
        {"ready_seconds": -1},
        {"user_data_formats": "mime"},
        {"user_data_max_bytes": 0},
        {"network_layout": "floating"},
    ):
        with pytest.raises(SimControlError) as refused:
            sim.control("p1", **bad)
        assert refused.value.status == 400 and next(iter(bad)) in str(refused.value)
    with pytest.raises(ValueError, match="network_layout must be one of"):
        start_simulator(config=[{"name": "p1", "network_layout": "mesh"}])


def test_many_servers_share_one_listener_thread(sim: Simulator) -> None:
    sim.control("p1", quota_instances=-1, security_groups_open=True, boot_seconds=0)
    servers = sim.add_servers("p1", name="many", count=300)
    listener_threads = [t for t in threading.enumerate() if t.name == "sim-listeners"]
    assert len(listener_threads) == 1, "one selector thread, not one per server"
    faces = [f for s in servers for f in s["reach"]]
    assert len({f["listen"] for f in faces}) == 600 and not [f for f in faces if f["error"]]
    assert probe(servers[-1]["reach"][0]["address"], PORT) == BANNER
    sim.request("DELETE", "providers/p1/servers")
    assert sim.listening() == set()
