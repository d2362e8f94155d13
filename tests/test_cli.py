"""The `oms` command line: the installed entry point, run as a user runs it, against the local stack."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import ADMIN_KEY, unique, wait_for

OMS = shutil.which("oms", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def cli_sim():
    """Three accounts: two with passwords, one with an application credential."""
    from sim.testing import start_simulator

    config = {
        "defaults": {"quota": 20, "boot_seconds": 0.3},
        "providers": [
            {"name": "alpha", "username": "ua", "password": "pa-" + uuid.uuid4().hex, "project": "pa"},
            {
                "name": "beta",
                "username": "ub",
                "password": "pb-" + uuid.uuid4().hex,
                "project": "pb",
                "region": "RegionTwo",
            },
            {"name": "gamma", "application_credential": {"id": "ac-gamma", "secret": "sg-" + uuid.uuid4().hex}},
        ],
    }
    with start_simulator(config=config, seed=3) as sim:
        yield sim


@pytest.fixture
def oms(tmp_path, stack):
    """Run the real `oms` with its own config folder; returns the finished process."""
    assert OMS, "no `oms` entry point in the virtual environment: run `make test` (it installs it)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMS_URL", "OMS_API_KEY"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")

    def run(*args: str, check: int | None = 0, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run([OMS, *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert "Traceback" not in done.stderr, done.stderr
        if check is not None:
            assert done.returncode == check, (args, done.returncode, done.stdout, done.stderr)
        return done

    run.env = env
    return run


def clouds_files(folder: Path, sim) -> Path:
    """clouds.yaml naming three clouds: alpha's password in secure.yaml, beta through a vendor
    profile in clouds-public.yaml, gamma with an application credential."""
    alpha, beta, gamma = (sim.state(n)["credentials"] for n in ("alpha", "beta", "gamma"))
    clouds = {
        "clouds": {
            "alpha": {
                "auth": {
                    "auth_url": sim.auth_url("alpha"),
                    "username": alpha["username"],
                    "project_name": alpha["project_name"],
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": "RegionOne",
            },
            "beta": {
                "profile": "simcloud",
                "auth": {
                    "username": beta["username"],
                    "password": beta["password"],
                    "project_name": beta["project_name"],
                },
            },
            "gamma": {
                "auth_type": "v3applicationcredential",
                "auth": {
                    "auth_url": sim.auth_url("gamma"),
                    "application_credential_id": gamma["application_credential_id"],
                    "application_credential_secret": gamma["application_credential_secret"],
                },
                "region_name": "RegionOne",
            },
        }
    }
    secure = {"clouds": {"alpha": {"auth": {"password": alpha["password"]}}}}
    public = {"public-clouds": {"simcloud": {"auth": {"auth_url": sim.auth_url("beta")}, "region_name": "RegionTwo"}}}
    for name, data in (("clouds.yaml", clouds), ("secure.yaml", secure), ("clouds-public.yaml", public)):
        (folder / name).write_text(yaml.safe_dump(data))
    return folder / "clouds.yaml"


def test_import_three_clouds_request_30_and_wait_inventory_in_every_format_then_delete(oms, cli_sim, tmp_path, stack):
    login = oms("login", "--url", stack.url, "--key", ADMIN_KEY)
    assert "logged in" in login.stdout and "bootstrap-admin (admin)" in login.stdout
    saved = Path(oms.env["XDG_CONFIG_HOME"]) / "oms" / "config.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700

    prefix, label = unique("cli") + "-", unique("lbl")
    clouds = clouds_files(tmp_path, cli_sim)
    imported = oms(
        "providers", "import", "--clouds-yaml", str(clouds), "--prefix", prefix,
        "--label", f"{label}=ubuntu-22.04,m1.small,public,ready=active", "--max-instances", "20",
    )  # fmt: skip
    assert imported.stdout.count("imported ") == 3, imported.stdout
    listed = json.loads(oms("providers", "list", "--json").stdout)
    ours = {p["name"]: p for p in listed if p["name"].startswith(prefix)}
    assert set(ours) == {prefix + "alpha", prefix + "beta", prefix + "gamma"}
    assert ours[prefix + "gamma"]["auth_type"] == "application_credential"
    assert ours[prefix + "beta"]["region"] == "RegionTwo"  # from the vendor profile
    assert ours[prefix + "beta"]["auth_url"] == cli_sim.auth_url("beta")
    for name in ours:
        assert "healthy" in oms("providers", "check", name).stdout
    assert prefix + "alpha" in oms("providers", "list").stdout

    waited = oms("request", "--label", label, "--count", "30", "--lifetime", "30m", "--wait", "--json", timeout=600)
    request = json.loads(waited.stdout)
    assert request["counts"]["ACTIVE"] == 30
    assert "30/30 ACTIVE" in waited.stderr  # the progress, on stderr
    spread = {i["provider"] for i in request["instances"]}
    assert spread <= set(ours) and len(spread) >= 2, spread

    ansible = json.loads(oms("inventory", request["id"], "--format", "ansible", "--user", "ubuntu").stdout)
    assert len(ansible["all"]["hosts"]) == 30  # Ansible's inventory file form: `ansible -i hosts.json`
    assert all(v["ansible_host"] and v["ansible_user"] == "ubuntu" for v in ansible["all"]["hosts"].values())
    ssh = oms("inventory", request["id"], "--format", "ssh-config").stdout
    assert ssh.count("Host ") == 30 and ssh.count("    HostName ") == 30
    as_json = json.loads(oms("inventory", request["id"], "--format", "json").stdout)
    assert len(as_json) == 30 and all(i["address"] for i in as_json)
    rows = list(csv.DictReader(io.StringIO(oms("inventory", request["id"], "--format", "csv").stdout)))
    assert len(rows) == 30 and all(r["address"] and r["provider"] in ours for r in rows)

    table = oms("ls", "--request", request["id"], "--state", "ACTIVE").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "STATE"] and len(table) == 31
    assert "now expires at" in oms("extend", request["id"], "30m").stdout
    assert json.loads(oms("show", request["id"], "--json").stdout)["id"] == request["id"]

    assert "deleting" in oms("delete-request", request["id"]).stdout
    wait_for(
        lambda: json.loads(oms("show", request["id"], "--json").stdout)["state"] == "deleted",
        timeout=120,
        what="all DELETED",
    )
    assert "removed provider" in oms("providers", "rm", *ours).stdout


def test_an_env_file_is_imported_through_openstacksdk(oms, cli_sim, tmp_path, stack):
    alpha = cli_sim.state("alpha")["credentials"]
    env_file = tmp_path / "openrc"
    env_file.write_text(
        f"export OS_AUTH_URL={cli_sim.auth_url('alpha')}\n"
        f"export OS_USERNAME={alpha['username']}\n"
        f'export OS_PASSWORD="{alpha["password"]}"\n'
        f"export OS_PROJECT_NAME={alpha['project_name']}\n"
        "export OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default\n"
        "export OS_REGION_NAME=RegionOne\n"
    )
    name = unique("envrc")
    env = {"OMS_URL": stack.url, "OMS_API_KEY": ADMIN_KEY}
    oms.env.update(env)
    oms("providers", "import", "--env-file", str(env_file), "--name", name, "--priority", "5")
    shown = json.loads(oms("providers", "show", name, "--json").stdout)
    assert (shown["username"], shown["region"], shown["priority"]) == (alpha["username"], "RegionOne", 5)
    assert (shown["address_family"], shown["boot_timeout_seconds"], shown["multipart_user_data"]) == (
        "ipv4",
        None,
        True,
    )
    oms(
        "providers", "edit", name, "--address-family", "ipv6", "--boot-timeout", "900", "--no-multipart-user-data",
        "--label", "small=ubuntu-22.04,m1.small,public,ssh_port=2222",
    )  # fmt: skip
    shown = json.loads(oms("providers", "show", name, "--json").stdout)
    assert (shown["address_family"], shown["boot_timeout_seconds"], shown["multipart_user_data"]) == (
        "ipv6",
        900,
        False,
    )
    assert shown["labels"]["small"] == {
        "image": "ubuntu-22.04", "flavor": "m1.small", "network": "public", "ready": "ssh", "ssh_port": 2222
    }  # fmt: skip
    assert "--label" in oms("providers", "edit", name, "--label", "small=i,f,colour=blue", check=2).stderr
    assert "healthy" in oms("providers", "check", name).stdout
    assert "disabled" in oms("providers", "disable", name).stdout
    assert json.loads(oms("providers", "show", name, "--json").stdout)["enabled"] is False
    oms("providers", "rm", name)


def test_wait_exits_1_when_not_all_came_up(oms, stack, provider):
    # The only provider offering the label is down: nothing can come up before the timeout.
    oms.env.update(OMS_URL=stack.url, OMS_API_KEY=ADMIN_KEY)
    waited = oms("request", "--label", "ubuntu-small", "--count", "2", "--wait", "--timeout", "4s", "--json", check=1)
    # It says why it waits (and that no slot is expected to free up: no ETA).
    assert "timed out: 0 of 2 ACTIVE; waiting 2: none healthy, no ETA yet" in waited.stderr
    oms("delete-request", json.loads(waited.stdout)["id"])


def test_a_canary_boot_prints_each_step_with_its_time_and_exits_0_when_it_passed(oms, stack, admin_api):
    from sim.testing import start_simulator
    from tests.conftest import SIM_SSH_PORT, register_sim_provider, ssh_ready_label

    with start_simulator(providers=1, boot_seconds=0.2, ssh_port=SIM_SSH_PORT) as sim:
        sim.control("p1", security_groups_open=True)
        label = unique("lbl")
        name = register_sim_provider(admin_api, sim, "p1", label, labels=ssh_ready_label(label))["name"]
        oms.env.update(OMS_URL=stack.url, OMS_API_KEY=ADMIN_KEY)
        done = oms("providers", "check", name, "--boot", label)
        lines = done.stdout.splitlines()
        assert lines[0].startswith("canary ") and f"booting {label} on {name}" in lines[0]
        steps = [line.split()[:2] for line in lines[1:-1]]
        assert [step for step, _ in steps] == [
            "slot", "auth", "resolve", "create", "active", "floating_ip", "ssh", "host_keys", "delete"
        ]  # fmt: skip
        assert {result for _, result in steps} == {"ok", "skipped"}
        assert lines[-1].startswith("passed in ")
        assert sim.state("p1")["servers_live"] == 0
        unmapped = oms("providers", "check", name, "--boot", "nope", check=1)
        assert unmapped.stderr == f"oms: label nope is not mapped on provider {name} (field boot)\n"


def test_errors_are_one_line_and_every_command_has_help(oms, stack):
    not_logged_in = oms("ls", check=1)
    assert not_logged_in.stderr.startswith("oms: not logged in")
    saved = Path(oms.env["XDG_CONFIG_HOME"]) / "oms" / "config.json"
    saved.parent.mkdir(parents=True)
    saved.write_text("{not json")
    assert "is not valid JSON" in oms("ls", check=1).stderr
    assert "logged in" in oms("login", "--url", stack.url, "--key", ADMIN_KEY).stdout  # the way out works
    oms.env.update(OMS_URL=stack.url, OMS_API_KEY=ADMIN_KEY)
    missing = oms("show", "r-0000000000000000", check=1)
    assert missing.stderr.strip() == "oms: request r-0000000000000000 not found"
    bad = oms("request", "--label", "no-such-label", "--count", "1", check=1)
    assert bad.stderr.startswith("oms: no enabled provider offers label no-such-label")
    assert "not a duration" in oms("extend", "r-1", "soon", check=2).stderr
    assert "oms: cannot reach" in oms("--url", "http://127.0.0.1:9", "ls", check=1).stderr
    # Arguments are checked before anything is created.
    before = len(json.loads(oms("--json", "ls").stdout))
    late = oms("request", "--label", "x", "--count", "100", "--wait", "--timeout", "soon", check=2)
    assert "not a duration" in late.stderr and len(json.loads(oms("--json", "ls").stdout)) == before
    private = Path(oms.env["XDG_CONFIG_HOME"]).parent / "id_ed25519"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n")
    refused = oms("request", "--label", "x", "--count", "1", "--ssh-key", str(private), check=2)
    assert "is a private key" in refused.stderr
    private_hook = oms("request", "--label", "x", "--count", "1", "--callback-url", "https://169.254.169.254/", check=1)
    assert private_hook.stderr.startswith("oms: callback_url host 169.254.169.254 resolves to an address that is not")
    # An empty filter is refused by the API, not dropped (`oms ls --request "$UNSET" | xargs oms rm`).
    assert "request_id must not be empty" in oms("ls", "--request", "", check=1).stderr
    # An id stays one path segment.
    assert "not found" in oms("rm", "../requests/r-0000", check=1).stderr
    assert "not a duration" in oms("extend", "r-1", "\u00b2", check=2).stderr
    for command in (
        [], ["login"], ["providers"], ["providers", "list"], ["providers", "show"], ["providers", "add"],
        ["providers", "edit"], ["providers", "rm"], ["providers", "check"], ["providers", "enable"],
        ["providers", "disable"], ["providers", "import"], ["request"], ["ls"], ["show"], ["rm"], ["extend"],
        ["delete-request"], ["inventory"],
    ):  # fmt: skip
        helped = oms(*command, "--help")
        assert helped.stdout.startswith("usage: oms"), command


def test_maintenance_windows_are_added_shown_and_removed(oms, stack, provider):
    from chalicelib import timeutil

    oms.env.update(OMS_URL=stack.url, OMS_API_KEY=ADMIN_KEY)
    name = provider["name"]
    later, later_end, sooner, sooner_end = (timeutil.in_minutes(m) for m in (600, 660, 60, 90))
    oms("providers", "maintenance", "add", name, "--start", later, "--end", later_end)
    added = oms("providers", "maintenance", "add", name, "--start", sooner, "--end", sooner_end,
                "--note", "kernel updates")  # fmt: skip
    assert f"1) {sooner}..{sooner_end} kernel updates; 2) {later}..{later_end}" in added.stdout
    assert "kernel updates" in oms("providers", "list").stdout
    assert "2) " in oms("providers", "show", name).stdout
    backwards = oms("providers", "maintenance", "add", name, "--start", later, "--end", sooner, check=1)
    assert "end must be after start" in backwards.stderr
    assert "no maintenance window 5" in oms("providers", "maintenance", "rm", name, "5", check=1).stderr
    oms("providers", "maintenance", "rm", name, "1")
    left = oms("providers", "maintenance", "rm", name, later, "--json")
    assert json.loads(left.stdout)["maintenance"] == []


def test_wait_names_the_waiting_reason_and_the_eta_the_api_gives(oms, stack, admin_api, tmp_path):
    """Issue 19: the only account is full with an instance expiring at a known time; `--wait` tells
    the new request's reason and its ETA (the API's `waiting.ready_eta`), then sees it come up once
    the product's clock reaches that expiry (moved, not waited out)."""
    from chalicelib import timeutil
    from sim.testing import start_simulator
    from tests.conftest import register_sim_provider, request_state

    def waiting() -> dict | None:
        pending = admin_api.get("/instances", params={"label": label, "state": "PENDING"}).json()["items"]
        return pending and request_state(admin_api, pending[0]["request_id"])["waiting"]

    label = unique("lbl")
    with start_simulator(providers=1, boot_seconds=0.2, seed=19) as sim:
        name = register_sim_provider(admin_api, sim, "p1", label, max_instances=1)["name"]
        first = admin_api.post("/requests", json={"label": label, "count": 1, "lifetime_minutes": 30}).json()
        wait_for(lambda: request_state(admin_api, first["id"])["state"] == "ready", what="first ready")
        # Its boot measured first, so that the ETA (which adds the measured boot) stays put meanwhile.
        wait_for(lambda: admin_api.get(f"/providers/{name}").json()["launch_times"]["samples"], what="boot measured")

        oms.env.update(OMS_URL=stack.url, OMS_API_KEY=ADMIN_KEY)
        progress = tmp_path / "progress.txt"
        with progress.open("w") as stderr:
            cli = subprocess.Popen(
                [OMS, "request", "--label", label, "--count", "1", "--lifetime", "2h", "--wait", "--timeout", "10m"],
                env=oms.env, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
            try:
                wait_for(lambda: (w := waiting()) and w["ready_eta"], what="an ETA")
                wait_for(lambda: "ready by" in progress.read_text(), what="the ETA shown")
                shown, api = progress.read_text(), waiting()
                # The first request expires: its slot goes to the waiting one, and --wait ends.
                timeutil.clock.advance((timeutil.parse(first["expires_at"]) - timeutil.now()).total_seconds() + 1)
                stdout, _ = cli.communicate(timeout=240)
            finally:
                if cli.poll() is None:
                    cli.kill()
                    cli.wait()
    assert cli.returncode == 0, (stdout, progress.read_text())
    assert api["reasons"] == {"all accounts full": 1} and api["ready_eta"] > first["expires_at"], api
    line = [line for line in shown.splitlines() if "ready by" in line][-1]
    assert "0/1 ACTIVE" in line and "waiting 1: all accounts full, ready by " in line, shown
    eta = timeutil.parse(line.rsplit("ready by ", 1)[1].split()[0])
    assert abs((eta - timeutil.parse(api["ready_eta"])).total_seconds()) <= 5, (line, api)
    request_id = stdout.split(":", 1)[0]
    assert stdout.startswith(f"{request_id}: 1/1 ACTIVE"), stdout
    oms("delete-request", request_id)
    admin_api.delete(f"/requests/{first['id']}")


def test_a_warm_pool_is_set_listed_taken_from_and_removed(oms, stack, admin_api, tmp_path):
    from sim.testing import start_simulator
    from tests.conftest import register_sim_provider

    oms.env.update(OMS_URL=stack.url, OMS_API_KEY=ADMIN_KEY)
    with start_simulator(providers=1, quota=20, boot_seconds=0.3, seed=5) as sim:
        label = unique("warm")
        register_sim_provider(admin_api, sim, "p1", label, max_instances=5)
        bad = oms("pools", "set", label, "--min-ready", "1", "--window", "weekdays 8-18", check=2)
        assert "DAYS HH:MM-HH:MM=COUNT" in bad.stderr
        # A window that holds all week: its 3 is the target, not --min-ready's 1.
        every_day = "mon-sun 00:00-24:00=3"
        shown = oms("pools", "set", label, "--min-ready", "1", "--window", every_day, "--time-zone", "Asia/Tokyo")
        assert f"pool {label}: keeps 3 ready now" in shown.stdout
        listing = lambda: json.loads(oms("pools", "list", "--json").stdout)  # noqa: E731
        ready = lambda: [p["counts"]["ready"] for p in listing() if p["label"] == label]  # noqa: E731
        wait_for(lambda: ready() == [3], what="3 ready in `oms pools list`")
        listed = oms("pools", "list").stdout
        assert "mon-sun 00:00-24:00=3 (Asia/Tokyo)" in listed and "120m" in listed
        took = oms("request", "--label", label, "--count", "2", "--lifetime", "10m")
        assert "(ready, 2 ready from the warm pool)" in took.stdout
        oms("pools", "rm", label)
        assert label not in oms("pools", "list").stdout
        assert f"pool {label} not found" in oms("pools", "rm", label, check=1).stderr
