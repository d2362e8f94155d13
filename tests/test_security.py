"""Security on the live stack: nothing leaks, and local state stays private.

Who may call which route is tested in-process (tests/api/test_access.py).
"""

from __future__ import annotations

import json
import logging
import socket
import stat
import uuid
from pathlib import Path

from chalicelib.settings import settings
from tests.conftest import XRAY, dump_tables, register_sim_provider, request_state, sim_label, unique, wait_for


def _listening_sockets() -> dict[int, str]:
    """Listening TCP sockets of this machine: port -> local address (from /proc/net/tcp{,6})."""
    found: dict[int, str] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] != "0A":  # LISTEN
                continue
            if width == 8:
                ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1])
            else:
                raw = bytes.fromhex(address)
                ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
            found[int(port, 16)] = ip
    return found


def test_every_local_service_listens_on_loopback_only(stack, sim):
    listening = _listening_sockets()
    sim_port = int(sim.base_url.rstrip("/").rsplit(":", 1)[1])
    ports = {"api": settings.port, "moto": settings.moto_port, "simulator": sim_port}
    for what, port in ports.items():
        assert port in listening, f"{what} is not listening on {port}"
        assert listening[port] in ("127.0.0.1", "::1"), f"{what} listens on {listening[port]}"


def test_state_files_are_private(stack):
    folder = Path(settings.state_dir)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = [p for p in folder.iterdir() if p.is_file()]
    assert files, "the stack wrote no state files"
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


# --- secrets ----------------------------------------------------------------------------


def _stream_records() -> str:
    """Every record still in the instances table's stream, from its start."""
    from chalicelib import aws

    arn = aws.client("dynamodb").describe_table(TableName=settings.instances_table)["Table"]["LatestStreamArn"]
    streams = aws.client("dynamodbstreams")
    records = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    assert records, "the stream had no records: the search would prove nothing"
    return json.dumps(records, default=str)


def test_rotated_credentials_are_used_from_the_next_call_and_the_old_ones_never_again(admin_api, sim):
    label = unique("lbl")
    provider = register_sim_provider(admin_api, sim, "p1", label)
    name = provider["name"]
    good = sim.state("p1")["credentials"]["password"]
    assert admin_api.post(f"/providers/{name}/check").json()["health"]["state"] == "healthy"

    # A wrong password, then the right one again: each check uses exactly the version just set.
    assert admin_api.patch(f"/providers/{name}", json={"password": "not-" + good}).status_code == 200
    checked = admin_api.post(f"/providers/{name}/check").json()["health"]
    assert checked["state"] == "down" and "auth" in checked["last_error"].lower(), checked
    assert admin_api.patch(f"/providers/{name}", json={"password": good}).status_code == 200
    assert admin_api.post(f"/providers/{name}/check").json()["health"]["state"] == "healthy"


def test_canary_credentials_appear_nowhere_but_in_secrets_manager(admin_api, user_api, caplog):
    """Unique canary secrets go through registration, checks, launches with failures, a rotation
    and a teardown; then every place the service writes to is searched for them."""
    from chalicelib import aws, credentials
    from sim.testing import start_simulator

    canaries = {what: f"canary-{what}-{uuid.uuid4().hex}" for what in ("password", "app-secret", "rotated")}
    config = {
        "providers": [
            {"name": "cpw", "password": canaries["password"], "quota": 20, "boot_seconds": 0.3, "error_rate": 0.4},
            {
                "name": "cac",
                "application_credential": {"id": "ac-" + uuid.uuid4().hex[:8], "secret": canaries["app-secret"]},
                "quota": 20,
                "boot_seconds": 0.3,
            },
        ]
    }
    seen: list[str] = []
    recorder = admin_api.as_key(admin_api.key)
    recorder.session.hooks["response"].append(lambda r, *a, **kw: seen.append(f"{r.headers}\n{r.text}"))
    user = admin_api.as_key(user_api.key)
    user.session.hooks["response"] = recorder.session.hooks["response"]
    caplog.set_level(logging.DEBUG)
    traced_from = len(XRAY.datagrams)

    with start_simulator(config=config, seed=11) as canary_sim:
        label = unique("lbl")
        mapping = {label: sim_label()}
        pw_name, ac_name = unique("cpw"), unique("cac")
        cpw, cac = (canary_sim.state(n)["credentials"] for n in ("cpw", "cac"))
        common = {"labels": mapping}
        bodies = [
            {
                **common,
                "name": pw_name,
                "auth_url": canary_sim.auth_url("cpw"),
                "username": cpw["username"],
                "password": canaries["password"],
                "project_name": cpw["project_name"],
            },
            {
                **common,
                "name": ac_name,
                "auth_url": canary_sim.auth_url("cac"),
                "application_credential_id": cac["application_credential_id"],
                "application_credential_secret": canaries["app-secret"],
                "priority": 200,
            },
        ]
        for body in bodies:
            assert recorder.post("/providers", json=body).status_code == 201
        for name in (pw_name, ac_name):
            assert recorder.post(f"/providers/{name}/check").json()["health"]["state"] == "healthy"

        # Launches with failures on the password provider (40 % of creates fail), failing over.
        request = user.post("/requests", json={"label": label, "count": 8}).json()
        wait_for(lambda: request_state(user, request["id"])["counts"]["ACTIVE"] == 8, timeout=120, what="8 ACTIVE")
        servers = json.dumps([canary_sim.servers(n) for n in ("cpw", "cac")])  # with what we sent them
        assert servers.count('"metadata"') >= 8
        # A rotation to a wrong password (auth failures), and back.
        recorder.patch(f"/providers/{pw_name}", json={"password": canaries["rotated"]})
        assert recorder.post(f"/providers/{pw_name}/check").json()["health"]["state"] == "down"
        recorder.patch(f"/providers/{pw_name}", json={"password": canaries["password"]})
        assert recorder.post(f"/providers/{pw_name}/check").json()["health"]["state"] == "healthy"
        # The teardown.
        assert user.delete(f"/requests/{request['id']}").status_code == 202
        wait_for(lambda: request_state(user, request["id"])["state"] == "deleted", timeout=120, what="DELETED")
        for path in ("/", "/openapi.json", "/providers?limit=500", f"/providers/{pw_name}", "/instances?limit=500"):
            recorder.get(path)
        user.get("/providers?limit=500")
        for name in (pw_name, ac_name):
            assert recorder.delete(f"/providers/{name}").status_code == 204

    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records) + caplog.text
    places = {
        "API responses": "\n".join(seen),
        "log records": logged,
        "DynamoDB tables": dump_tables(),
        "the instances stream": _stream_records(),
        "servers and their metadata at the provider": servers,
        "X-Ray segments": b"\n".join(XRAY.datagrams[traced_from:]).decode(errors="replace"),
    }
    assert len(seen) > 20 and caplog.records, "nothing was recorded: the search would prove nothing"
    assert any(r.name.startswith(("keystoneauth", "openstack")) for r in caplog.records), "no OpenStack logs seen"
    assert '"openstack.create_server"' in places["X-Ray segments"], "no traces seen"
    leaky = sorted(
        {r.name for r in caplog.records if any(c in f"{r.getMessage()} {r.exc_text}" for c in canaries.values())}
    )
    assert not leaky, f"canaries in the logs of {leaky}"
    for where, text in places.items():
        for what, canary in canaries.items():
            assert canary not in text, f"the {what} canary leaked into {where}"
    # Where they are: Secrets Manager (the secret is deleted with its provider, so look at a fresh one).
    arn, version = credentials.store("canary-probe", {"password": canaries["password"]})
    try:
        assert canaries["password"] in aws.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        assert credentials.load("canary-probe", version) == {"password": canaries["password"]}
    finally:
        credentials.delete("canary-probe")
