"""The OpenStack simulator, driven by unmodified openstacksdk and keystoneauth over HTTP.

Every fault mode is checked against the exception openstacksdk raises for the real thing,
so the rest of the project can trust the simulator as a stand-in for real providers.
"""

from __future__ import annotations

import base64
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest
import requests
from keystoneauth1 import exceptions as ksa_exc
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v2 as ksa_v2
from keystoneauth1.identity import v3 as ksa_v3
from openstack import exceptions as os_exc

from sim.testing import SimControlError, Simulator, start_simulator

REPO = Path(__file__).resolve().parent.parent
WAIT = 60  # generous: a busy 2-core CI machine must not make these flaky

# openstacksdk's own deprecation chatter (ignore_missing defaults, legacy fields) is not
# what these tests are about.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with start_simulator(providers=2, quota=20, boot_seconds=0.2, seed=1) as simulator:
        yield simulator


def connect(sim: Simulator, provider: str = "p1", **kwargs: Any) -> openstack.connection.Connection:
    return openstack.connect(**sim.connect_kwargs(provider, **kwargs))


def lookup(conn: openstack.connection.Connection) -> dict[str, str]:
    """Image, flavor and network found by name, as an app would."""
    return {
        "image_id": conn.image.find_image("ubuntu-22.04", ignore_missing=False).id,
        "flavor_id": conn.compute.find_flavor("m1.small", ignore_missing=False).id,
        "network": conn.network.find_network("public", ignore_missing=False).id,
    }


def create(conn: openstack.connection.Connection, refs: dict[str, str], name: str = "vm", **extra: Any) -> Any:
    return conn.compute.create_server(
        name=name,
        image_id=refs["image_id"],
        flavor_id=refs["flavor_id"],
        networks=[{"uuid": refs["network"]}],
        **extra,
    )


def poll(predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


# -- happy paths -------------------------------------------------------------
def test_v3_password_server_lifecycle(sim: Simulator) -> None:
    conn = connect(sim)
    refs = lookup(conn)
    user_data = base64.b64encode(b"#cloud-config\n").decode()
    server = create(conn, refs, name="web-1", metadata={"oms:request": "r1"}, user_data=user_data)
    assert server.admin_password

    server = conn.compute.wait_for_server(server, interval=0.1, wait=WAIT)
    assert server.status == "ACTIVE"
    assert server.metadata == {"oms:request": "r1"}
    public = server.addresses["public"]
    assert {a["version"] for a in public} == {4, 6}
    assert all(a["OS-EXT-IPS:type"] == "fixed" for a in public)

    listed = list(conn.compute.servers())
    assert [s.id for s in listed] == [server.id]
    assert listed[0].metadata == {"oms:request": "r1"}

    limits = conn.compute.get_limits().absolute
    assert (limits.instances, limits.instances_used) == (20, 1)

    conn.compute.delete_server(server)
    assert poll(lambda: not list(conn.compute.servers()))
    with pytest.raises(os_exc.NotFoundException):
        conn.compute.get_server(server.id)

    state = sim.state("p1")
    assert (state["servers_created"], state["servers_deleted"], state["servers_live"]) == (1, 1, 0)
    assert state["servers_peak"] == 1
    assert state["calls"]["token"] == 1
    assert state["calls"]["server_create"] == 1
    assert state["calls"]["limits"] == 1
    assert sim.state("p2")["calls"] == {}, "providers are isolated"


def test_cloud_layer_create_server(sim: Simulator) -> None:
    conn = connect(sim)
    server = conn.create_server(
        "cloud-1", image="debian-12", flavor="m1.medium", network="public", meta={"k": "v"}, wait=True, timeout=WAIT
    )
    assert server.status == "ACTIVE"
    assert server.public_v4 and server.public_v6
    assert server.metadata == {"k": "v"}
    assert conn.delete_server("cloud-1", wait=True, timeout=WAIT)


def test_application_credential_auth() -> None:
    config = [{"name": "acme", "application_credential": {"id": "ac-1", "secret": "s3cr3t"}, "quota": 7}]
    with start_simulator(config=config) as sim:
        common = {"auth_url": sim.auth_url("acme"), "load_yaml_config": False, "load_envvars": False}
        conn = openstack.connect(
            auth_type="v3applicationcredential",
            application_credential_id="ac-1",
            application_credential_secret="s3cr3t",
            **common,
        )
        assert conn.compute.get_limits().absolute.instances == 7

        bad = openstack.connect(
            auth_type="v3applicationcredential",
            application_credential_id="ac-1",
            application_credential_secret="wrong",
            **common,
        )
        with pytest.raises(ksa_exc.Unauthorized):
            bad.compute.get_limits()


def test_v2_password_auth(sim: Simulator) -> None:
    conn = connect(sim, "p2", version="v2.0")
    assert sorted(f.name for f in conn.compute.flavors()) == ["m1.medium", "m1.small"]
    assert sim.state("p2")["calls"]["token"] == 1


def _v3_password(sim: Simulator, password: str) -> ksa_v3.Password:
    return ksa_v3.Password(
        auth_url=sim.auth_url("p1"),
        username="demo",
        password=password,
        project_name="demo",
        user_domain_name="Default",
        project_domain_name="Default",
    )


def test_keystoneauth_sessions_and_catalog(sim: Simulator) -> None:
    sess = ksa_session.Session(auth=_v3_password(sim, "secret"))
    assert sess.get_token()
    compute = sess.get_endpoint(service_type="compute", interface="public", region_name="RegionOne")
    assert compute == sim.base_url + "p1/compute/v2.1"
    assert sess.get_endpoint(service_type="compute", interface="internal") == compute
    # Validation is what services do with X-Subject-Token.
    token = sess.get_token()
    resp = requests.get(
        sim.auth_url("p1") + "/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}, timeout=10
    )
    assert resp.status_code == 200 and resp.json()["token"]["project"]["name"] == "demo"

    v2 = ksa_session.Session(
        auth=ksa_v2.Password(
            auth_url=sim.auth_url("p1", "v2.0"), username="demo", password="secret", tenant_name="demo"
        )
    )
    assert v2.get_endpoint(service_type="image") == sim.base_url + "p1/image"

    wrong = ksa_session.Session(auth=_v3_password(sim, "nope"))
    with pytest.raises(ksa_exc.Unauthorized):
        wrong.get_token()

    other_provider_token = requests.get(
        sim.base_url + "p2/compute/v2.1/servers", headers={"X-Auth-Token": token}, timeout=10
    )
    assert other_provider_token.status_code == 401


def test_discovery_and_microversions(sim: Simulator) -> None:
    root = requests.get(sim.base_url + "p1/identity", timeout=10)
    assert root.status_code == 300
    assert {v["id"] for v in root.json()["versions"]["values"]} == {"v3.14", "v2.0"}
    compute = requests.get(sim.base_url + "p1/compute/", timeout=10).json()["versions"][0]
    assert (compute["min_version"], compute["version"]) == ("2.1", "2.96")

    token = connect(sim).auth_token
    headers = {"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.47"}
    resp = requests.get(sim.base_url + "p1/compute/v2.1/flavors", headers=headers, timeout=10)
    assert resp.headers["OpenStack-API-Version"] == "compute 2.47"
    headers["OpenStack-API-Version"] = "compute 2.999"
    assert requests.get(sim.base_url + "p1/compute/v2.1/flavors", headers=headers, timeout=10).status_code == 406


def test_list_filters_and_paging(sim: Simulator) -> None:
    sim.add_servers("p1", name="web", count=3)
    sim.add_servers("p1", name="db", count=2)
    conn = connect(sim)
    # limit forces Nova-style servers_links paging, which the SDK follows to the end.
    assert len(list(conn.compute.servers(limit=2))) == 5
    assert sorted(s.name for s in conn.compute.servers(name="^web")) == ["web-1", "web-2", "web-3"]
    assert poll(lambda: len(list(conn.compute.servers(status="ACTIVE"))) == 5)

    headers = {"X-Auth-Token": conn.auth_token}
    page = requests.get(sim.base_url + "p1/compute/v2.1/servers/detail?limit=2", headers=headers, timeout=10).json()
    assert len(page["servers"]) == 2 and page["servers_links"][0]["rel"] == "next"
    bad = requests.get(sim.base_url + "p1/compute/v2.1/servers?marker=nope", headers=headers, timeout=10)
    assert bad.status_code == 400


# -- errors a real Nova gives ------------------------------------------------
def test_unknown_image_flavor_network_and_server(sim: Simulator) -> None:
    conn = connect(sim)
    refs = lookup(conn)
    with pytest.raises(os_exc.BadRequestException) as err:
        create(conn, {**refs, "image_id": "no-such-image"})
    assert err.value.status_code == 400
    assert "Image no-such-image could not be found." in err.value.details
    with pytest.raises(os_exc.BadRequestException) as err:
        create(conn, {**refs, "flavor_id": "no-such-flavor"})
    assert "Flavor no-such-flavor could not be found." in err.value.details
    with pytest.raises(os_exc.BadRequestException):
        create(conn, {**refs, "network": "no-such-net"})
    with pytest.raises(os_exc.BadRequestException):
        create(conn, refs, user_data="not base64!")
    with pytest.raises(os_exc.NotFoundException):
        conn.compute.get_server("0b5a7d38-0000-4000-8000-000000000000")
    with pytest.raises(os_exc.NotFoundException):
        conn.compute.delete_server("0b5a7d38-0000-4000-8000-000000000000", ignore_missing=False)
    assert sim.state("p1")["servers_live"] == 0


def test_quota_exceeded_counts_foreign_servers(sim: Simulator) -> None:
    sim.control("p1", quota_instances=3)
    foreign = sim.add_servers("p1", name="someone-else", metadata={"owner": "other"})
    assert foreign[0]["metadata"] == {"owner": "other"}
    conn = connect(sim)
    refs = lookup(conn)
    create(conn, refs, "a")
    create(conn, refs, "b")
    with pytest.raises(os_exc.ForbiddenException) as err:
        create(conn, refs, "c")
    assert err.value.status_code == 403
    assert err.value.details == "Quota exceeded for instances: Requested 1, but already used 3 of 3 instances"
    limits = conn.compute.get_limits().absolute
    assert (limits.instances, limits.instances_used) == (3, 3)
    raw = sim.servers("p1")
    assert sorted(s["name"] for s in raw) == ["a", "b", "someone-else"]
    assert {s["origin"] for s in raw} == {"api", "control"}
    assert sim.state("p1")["quota_rejections"] == 1


def test_quota_exact_under_concurrency(sim: Simulator) -> None:
    conn = connect(sim)
    refs = lookup(conn)
    barrier = threading.Barrier(100)
    results: queue.Queue[Any] = queue.Queue()

    def worker(i: int) -> None:
        barrier.wait(timeout=WAIT)
        try:
            results.put(create(conn, refs, f"c{i}"))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            results.put(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    outcomes = [results.get_nowait() for _ in range(results.qsize())]
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 100
    assert all(isinstance(e, os_exc.ForbiddenException) and e.status_code == 403 for e in errors), errors[:3]
    assert (len(outcomes) - len(errors), len(errors)) == (20, 80)
    state = sim.state("p1")
    assert (state["servers_live"], state["servers_peak"], state["quota_rejections"]) == (20, 20, 80)
    assert state["calls"]["server_create"] == 100


def test_error_rate_and_no_valid_host_faults(sim: Simulator) -> None:
    conn = connect(sim)
    refs = lookup(conn)
    sim.control("p1", error_rate=1)
    server = create(conn, refs, "doomed")
    with pytest.raises(os_exc.ResourceFailure):
        conn.compute.wait_for_server(server, interval=0.1, wait=WAIT)
    server = conn.compute.get_server(server.id)
    assert server.status == "ERROR"
    assert server.fault["code"] == 500
    assert server.fault["message"].startswith(f"Build of instance {server.id} aborted:")

    sim.control("p1", error_rate=0, no_valid_host_rate=1)
    server = create(conn, refs, "nohost")
    with pytest.raises(os_exc.ResourceFailure):
        conn.compute.wait_for_server(server, interval=0.1, wait=WAIT)
    fault = conn.compute.get_server(server.id).fault
    assert fault["message"] == "No valid host was found. There are not enough hosts available."
    # ERROR servers still hold quota, as in Nova.
    assert conn.compute.get_limits().absolute.instances_used == 2


@pytest.mark.parametrize("status", [500, 503])
def test_create_error(sim: Simulator, status: int) -> None:
    conn = connect(sim)
    refs = lookup(conn)
    sim.control("p1", create_error=status)
    with pytest.raises(os_exc.HttpException) as err:
        create(conn, refs)
    assert err.value.status_code == status
    assert sim.state("p1")["servers_live"] == 0
    sim.control("p1", create_error=None)
    assert create(conn, refs).id


# -- provider-wide fault modes -------------------------------------------------
def test_maintenance_answers_503(sim: Simulator) -> None:
    conn = connect(sim)
    refs = lookup(conn)
    sim.control("p1", mode="maintenance")
    # (Not Glance here: openstacksdk retries its 503s five times with backoff, ~15 s.)
    for call in (
        lambda: list(conn.compute.servers()),
        lambda: create(conn, refs),
        lambda: conn.network.get_network("x"),
    ):
        with pytest.raises(os_exc.HttpException) as err:
            call()
        assert err.value.status_code == 503
    # A client that has not authenticated yet fails in keystoneauth, as against a real cloud.
    with pytest.raises(ksa_exc.ClientException, match="503"):
        connect(sim).compute.get_limits()
    assert connect(sim, "p2").compute.get_limits().absolute.instances == 20
    sim.control("p1", mode="normal")
    assert list(conn.compute.servers()) == []


def test_auth_fail_gives_unauthorized(sim: Simulator) -> None:
    conn = connect(sim)
    conn.compute.get_limits()
    sim.control("p1", mode="auth_fail")
    with pytest.raises(ksa_exc.Unauthorized):
        connect(sim).compute.get_limits()
    # Existing tokens stop working too; keystoneauth re-authenticates once and gives up.
    with pytest.raises(ksa_exc.Unauthorized):
        conn.compute.get_limits()
    sim.control("p1", mode="normal")
    assert connect(sim).compute.get_limits().absolute.instances == 20


def test_hang_times_out_without_blocking_others() -> None:
    simulator = start_simulator(providers=2)
    try:
        conn = connect(simulator, api_timeout=1)
        conn.compute.get_limits()
        simulator.control("p1", mode="hang")
        started = time.monotonic()
        with pytest.raises(ksa_exc.ConnectionError):  # ConnectTimeout
            list(conn.compute.servers())
        with pytest.raises((ksa_exc.ConnectionError, ksa_exc.DiscoveryFailure), match="timed out"):
            connect(simulator, api_timeout=1).compute.get_limits()
        assert time.monotonic() - started < WAIT
        assert connect(simulator, "p2", api_timeout=5).compute.get_limits().absolute.instances == 20
        assert simulator.state("p1")["calls"]["server_list"] == 1

        # A request still parked in hang mode must not hold up shutdown; it sees the
        # connection drop instead of an answer.
        outcome: queue.Queue[Any] = queue.Queue()

        def park() -> None:
            try:
                outcome.put(requests.get(simulator.base_url + "p1/compute/", timeout=WAIT))
            except requests.ConnectionError as exc:
                outcome.put(exc)

        before = simulator.state("p1")["calls"].get("discovery", 0)
        parked = threading.Thread(target=park)
        parked.start()
        assert poll(lambda: simulator.state("p1")["calls"].get("discovery", 0) > before)
    finally:
        started = time.monotonic()
        simulator.stop()
        assert time.monotonic() - started < 10
    parked.join(WAIT)
    assert isinstance(outcome.get(timeout=1), requests.ConnectionError)


# -- control API, scenarios, determinism, CLI --------------------------------
def test_control_api_rejects_bad_input(sim: Simulator) -> None:
    for bad in ({"mode": "sleepy"}, {"error_rate": 1.5}, {"quota_instances": "ten"}, {"create_error": 404}, {"x": 1}):
        with pytest.raises(SimControlError) as err:
            sim.control("p1", **bad)
        assert err.value.status == 400
    with pytest.raises(SimControlError) as err:
        sim.state("nope")
    assert err.value.status == 404
    resp = requests.patch(sim.base_url + "_sim/providers/p1", data="{not json", timeout=10)
    assert resp.status_code == 400 and "error" in resp.json()
    assert sim.state("p1")["mode"] == "normal"
    assert [p["name"] for p in sim.request("GET", "providers")["providers"]] == ["p1", "p2"]


def test_scenario_yaml(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(
        """
seed: 5
providers:
  - name: slowcloud
    region: Zone-9
    credentials: {username: alice, password: pw, project: research, domain: Lab}
    quota: 4
    boot_seconds: 0
    latency_ms: 150
    images: [{name: centos-9, os_distro: centos}]
    flavors: [{name: gpu.large, vcpus: 8, ram: 65536, disk: 200}]
"""
    )
    with start_simulator(config=scenario) as sim:
        conn = connect(sim, "slowcloud")
        assert conn.image.find_image("centos-9", ignore_missing=False).name == "centos-9"
        assert conn.compute.find_flavor("gpu.large", ignore_missing=False).vcpus == 8
        started = time.monotonic()
        conn.compute.get_limits()
        assert time.monotonic() - started >= 0.15
        state = sim.state("slowcloud")
        assert (state["region"], state["quota_instances"], state["latency_ms"]) == ("Zone-9", 4, 150)


def test_seed_makes_ids_and_outcomes_deterministic() -> None:
    def run(seed: int) -> list[tuple[str, str]]:
        with start_simulator(providers=1, seed=seed, boot_seconds=0) as sim:
            sim.control("p1", error_rate=0.5)
            servers = sim.add_servers("p1", count=12)
            ids = {s["id"] for s in servers}
            return [(s["id"], s["status"]) for s in sim.servers("p1") if s["id"] in ids]

    first, again, other = run(42), run(42), run(43)
    assert first == again
    assert {status for _, status in first} == {"ACTIVE", "ERROR"}
    assert [i for i, _ in first] != [i for i, _ in other]


def test_cli_starts_serves_and_stops() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "--port", "0", "--providers", "2", "--boot-seconds", "0.1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        ready = lines.get(timeout=WAIT)
        assert ready.startswith("sim ready http://127.0.0.1:"), ready
        base_url = ready.split()[-1]
        providers = requests.get(base_url + "_sim/providers", timeout=10).json()["providers"]
        assert [p["name"] for p in providers] == ["p1", "p2"]
        conn = openstack.connect(
            auth_url=base_url + "p2/identity/v3",
            username="demo",
            password="secret",
            project_name="demo",
            user_domain_name="Default",
            project_domain_name="Default",
            load_yaml_config=False,
            load_envvars=False,
        )
        assert conn.compute.get_limits().absolute.instances == 20
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=WAIT) == 0
        finally:
            proc.kill()
            proc.communicate()


def test_brief_and_detailed_server_lists(sim: Simulator) -> None:
    conn = openstack.connect(**sim.connect_kwargs("p1"))
    made = sim.add_servers("p1", name="listed", count=3)
    brief = list(conn.compute.servers(details=False))
    assert sorted(s.id for s in brief) == sorted(s["id"] for s in made)
    assert {s.name for s in brief} == {s["name"] for s in made}
    detailed = list(conn.compute.servers(details=True, limit=2))  # pages through servers_links
    assert sorted(s.id for s in detailed) == sorted(s["id"] for s in made)
