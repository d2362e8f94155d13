"""Fixtures: one real local stack (moto server, HTTP API, stream pump, scheduler) on free ports.

The environment is set before anything imports `chalicelib`, whose settings are read once.
Tests share the stack and stay independent by naming what they create uniquely.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import ssl
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeXRayDaemon:
    """A UDP listener where the X-Ray daemon would be: every datagram the SDK sends, kept."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []
        threading.Thread(target=self._receive, name="fake-xray-daemon", daemon=True).start()

    def _receive(self) -> None:
        while True:
            self.datagrams.append(self.sock.recv(65536))

    def text(self) -> str:
        return b"\n".join(self.datagrams).decode(errors="replace")

    def entities(self) -> list[dict]:
        """Every segment and subsegment received, nested ones included."""
        found: list[dict] = []

        def walk(entity: dict) -> None:
            found.append(entity)
            for child in entity.get("subsegments", []):
                walk(child)

        for datagram in list(self.datagrams):
            _, _, body = datagram.partition(b"\n")  # a header line, then one JSON document
            walk(json.loads(body))
        return found


XRAY = FakeXRayDaemon()
ADMIN_KEY = "test-admin-" + uuid.uuid4().hex
_STATE = tempfile.mkdtemp(prefix="oms-test-")
os.environ.update(
    OMS_DEPLOYMENT="test",
    OMS_PORT=str(free_port()),
    OMS_MOTO_PORT=str(free_port()),
    OMS_STATE_DIR=str(Path(_STATE) / "state"),
    OMS_SWEEP_SECONDS="0.5",
    OMS_WATCH_POLL_SECONDS="0.3",
    OMS_OPENSTACK_TIMEOUT_SECONDS="5",
    OMS_CIRCUIT_COOLDOWN_SECONDS="2",
    OMS_DELETE_RETRY_SECONDS="1",
    # Instances that found no room are fired again this soon once room appears (30 s deployed):
    # a test's moments of waiting for room are a few seconds, like its cooldowns.
    OMS_REDRIVE_AFTER_SECONDS="2",
    OMS_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
    # Traced as deployed: the local stack opens a segment per invocation, sent to XRAY.
    OMS_TRACING="on",
    AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{XRAY.port}",
    AWS_ACCESS_KEY_ID="test",
    AWS_SECRET_ACCESS_KEY="test",
    AWS_DEFAULT_REGION="us-east-1",
)
os.environ.pop("OMS_AWS_ENDPOINT", None)
os.environ.pop("AWS_PROFILE", None)


class Api:
    """A thin HTTP client for the API under test: `api.post("/requests", json=..., key=...)`."""

    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.session = requests.Session()

    def call(self, method: str, path: str, *, key: str | None = "default", **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        key = self.key if key == "default" else key
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.session.request(method, self.base_url + path, headers=headers, timeout=60, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.call("POST", path, **kwargs)

    def patch(self, path: str, **kwargs) -> requests.Response:
        return self.call("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.call("DELETE", path, **kwargs)

    def as_key(self, key: str | None) -> Api:
        return Api(self.base_url, key)


def pytest_collection_modifyitems(items: list) -> None:
    """tests/api first: they point the models at moto in-process, which must not happen while a
    live stack's pump and scheduler (started by the first test that needs them) are at work."""
    in_process = Path(__file__).parent / "api"
    items.sort(key=lambda item: not Path(str(item.path)).is_relative_to(in_process))


@pytest.fixture(scope="session")
def stack():
    from chalicelib.settings import settings
    from local.stack import LocalStack

    with LocalStack(settings) as running:
        yield running


@pytest.fixture(scope="session")
def admin_api(stack) -> Api:
    return Api(stack.url, ADMIN_KEY)


@pytest.fixture(autouse=True)
def _forget_providers(request):
    """Delete the providers a test registered once it ends, so that later passes do not sweep them
    too. Instances a test left on them are retired first; on the live stack their teardowns get a
    few seconds (in-process nothing tears them down, and such a provider stays)."""
    if "admin_api" not in request.fixturenames:
        yield
        return
    from chalicelib import lifecycle, models

    if "sim" in request.fixturenames:
        request.getfixturevalue("sim")  # set up first, so torn down after this: deletes can finish

    def names() -> set[str]:
        return {p.name for p in models.Provider.by_kind.query("provider")}

    before = names()
    yield
    admin_api = request.getfixturevalue("admin_api")
    patience = 0 if "aws_in_process" in request.fixturenames else 3
    for name in names() - before:
        for instance in models.Instance.by_provider_state.query(name):
            lifecycle.retire(instance)
        deadline = time.monotonic() + patience
        while admin_api.delete(f"/providers/{name}").status_code == 409 and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture
def user_api(admin_api) -> Api:
    """A fresh user key, so each test sees only what it made."""
    response = admin_api.post("/keys", json={"name": "user-" + uuid.uuid4().hex[:8], "role": "user"})
    assert response.status_code == 201, response.text
    return admin_api.as_key(response.json()["key"])


def wait_for(predicate, timeout: float = 180.0, interval: float = 0.2, what: str = "condition"):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout` s.
    (A wait the product measures on its clock is not waited out: the test moves timeutil.clock.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not met in {timeout} s")


def slots_given_back(api: Api, provider_name: str) -> None:
    """Wait (briefly) for every slot of the provider to be free once its instances ended: each
    slot is given back in the write just after its instance's DELETED. A slot that leaked would
    stand for OMS_LAUNCH_STALE_SECONDS (120 s) before the sweeper corrected it: this wait cannot
    hide one."""
    wait_for(
        lambda: api.get(f"/providers/{provider_name}").json()["capacity"]["in_use"] == 0,
        timeout=10,
        what=f"every slot of {provider_name} given back",
    )


def request_state(api: Api, request_id: str) -> dict:
    return api.get(f"/requests/{request_id}").json()


def first_attempt(api: Api, request_id: str) -> dict | None:
    """The first attempt recorded on the request's first instance (why it failed over), if any."""
    attempts = request_state(api, request_id)["instances"][0]["attempts"]
    return attempts[0] if attempts else None


def dump_tables() -> str:
    """Every item of every table, as text: where a secret must never be found."""
    from chalicelib import aws
    from chalicelib.settings import settings

    client = aws.client("dynamodb")
    items = []
    for table in (
        settings.providers_table,
        settings.requests_table,
        settings.instances_table,
        settings.keys_table,
        settings.pools_table,
    ):
        for page in client.get_paginator("scan").paginate(TableName=table):
            items.extend(page["Items"])
    return json.dumps(items)


def arrange(instance, state: str, **fields) -> None:
    """Put an instance in `state` (with `fields`) as if the pipeline had: a test's starting point.
    The product writes states only through chalicelib.lifecycle."""
    from chalicelib import models

    actions = [models.Instance.state.set(state)]
    actions += [getattr(models.Instance, name).set(value) for name, value in fields.items()]
    instance.update(actions=actions)


def unique(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sim_label(**extra) -> dict:
    """A label mapping of the simulator's image and flavor that is ready once Nova says ACTIVE:
    what tests that are not about readiness map (a label written without `ready` waits for SSH)."""
    return {"image": "ubuntu-22.04", "flavor": "m1.small", "network": "public", "ready": "active", **extra}


def provider_body(**overrides) -> dict:
    body = {
        "name": unique(),
        "auth_url": "http://127.0.0.1:9/p/identity/v3",
        "username": "demo",
        "password": "secret-" + uuid.uuid4().hex,
        "project_name": "demo",
        "max_instances": 20,
        # A label of its own, so that no other test's requests are launched there.
        "labels": {unique("lbl"): sim_label()},
    }
    body.update(overrides)
    return body


def register_down(admin_api: Api, **overrides) -> dict:
    """Register a provider through the API, then mark it down (circuit open for an hour).

    API tests use these: requests are accepted and wait in PENDING, as they do while every
    provider is down, and no launch is attempted on an auth_url that leads nowhere.
    """
    from chalicelib import models, timeutil

    response = admin_api.post("/providers", json=provider_body(**overrides))
    assert response.status_code == 201, response.text
    name = response.json()["name"]
    models.Provider(name).update(
        actions=[
            models.Provider.health_state.set("down"),
            models.Provider.retry_at.set(timeutil.in_minutes(60)),
        ]
    )
    return admin_api.get(f"/providers/{name}").json()


@pytest.fixture
def provider(admin_api) -> dict:
    """A provider offering label `ubuntu-small`, down: requests for it wait in PENDING."""
    return register_down(admin_api, labels={"ubuntu-small": sim_label()})


@pytest.fixture
def sim():
    """A fresh OpenStack simulator (providers p1..p7) for one test."""
    from sim.testing import start_simulator

    with start_simulator(providers=7, quota=20, boot_seconds=0.5, seed=7) as running:
        yield running


SIM_SSH_PORT = 2222  # the simulator's sshd stand-ins listen here in tests: 22 would need root


def ssh_ready_label(label: str, network: str = "public") -> dict:
    """A label mapping on the simulator that is ready only once sshd answers on SIM_SSH_PORT."""
    return {label: sim_label(network=network, ready="ssh", ssh_port=SIM_SSH_PORT)}


def sim_provider_body(sim, sim_name: str, **fields) -> dict:
    """A provider body for simulator account `sim_name`: its URL and credentials, plus `fields`."""
    credentials = sim.state(sim_name)["credentials"]
    return {
        "auth_url": sim.auth_url(sim_name),
        "username": credentials["username"],
        "password": credentials["password"],
        "project_name": credentials["project_name"],
        **fields,
    }


def register_sim_provider(admin_api: Api, sim, sim_name: str, label: str, **overrides) -> dict:
    """Register simulator provider `sim_name` under a unique name, mapping `label` to its image."""
    defaults = {"name": unique(sim_name), "region": "RegionOne", "max_instances": 20, "labels": {label: sim_label()}}
    body = sim_provider_body(sim, sim_name, **{**defaults, **overrides})
    response = admin_api.post("/providers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


class CallbackReceiver:
    """An HTTP server in a thread that records each POST and answers the next status queued
    (200 when none is)."""

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        """`tls`: (certificate file, key file) to answer https on `localhost`."""
        self.received: list[tuple[dict, bytes]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://localhost:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_callback(secret: str, headers: dict, body: bytes) -> bool:
    """The receiver's check, as API.md gives it."""
    timestamp = headers["x-oms-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-oms-signature"])
