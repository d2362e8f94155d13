"""`python -m local` as a user runs it: one command, private state, and state kept across restarts."""

from __future__ import annotations

import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.conftest import free_port, provider_body

ROOT = Path(__file__).resolve().parent.parent


def start(env: dict, timeout: float = 120.0) -> tuple[subprocess.Popen, dict]:
    process = subprocess.Popen(
        [sys.executable, "-m", "local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [output.put(line) for line in process.stdout], daemon=True).start()
    lines = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not {"url", "key"} <= set(lines):
        try:
            line = output.get(timeout=1.0)
        except queue.Empty:
            assert process.poll() is None, "the stack exited during start"
            continue
        if match := re.match(r"OpenMultiStack is running at (\S+)", line):
            lines["url"] = match.group(1)
        if match := re.match(r"admin key: (\S+)", line):
            lines["key"] = match.group(1)
    assert {"url", "key"} <= set(lines), "no ready lines"
    return process, lines


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0


def test_stack_keeps_providers_requests_and_keys_across_restarts(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMS_", "AWS_"))}
    env.update(OMS_PORT=str(port), OMS_MOTO_PORT=str(free_port()), OMS_STATE_DIR=str(tmp_path / "state"))
    process, ready = start(env)
    try:
        url, key = ready["url"], ready["key"]
        assert url == f"http://127.0.0.1:{port}/"
        auth = {"Authorization": f"Bearer {key}"}
        assert requests.get(url + "health", timeout=10).json() == {"status": "ok"}
        provider = provider_body()
        assert requests.post(url + "providers", json=provider, headers=auth, timeout=30).status_code == 201
        label = next(iter(provider["labels"]))
        request = requests.post(url + "requests", json={"label": label, "count": 3}, headers=auth, timeout=30)
        assert request.status_code == 202
        user = requests.post(url + "keys", json={"name": "u", "role": "user"}, headers=auth, timeout=30).json()
    finally:
        stop(process)

    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (state / "admin-key").read_text().strip() == key

    process, ready = start(env)
    try:
        assert ready["key"] == key, "the generated admin key is kept in the state folder"
        got = requests.get(url + f"providers/{provider['name']}", headers=auth, timeout=30)
        assert got.status_code == 200 and got.json()["labels"] == provider["labels"]
        again = requests.get(url + f"requests/{request.json()['id']}", headers=auth, timeout=30).json()
        # Its provider's auth_url leads nowhere: each instance tried it once and waits for room.
        assert again["counts"]["PENDING"] == 3
        user_auth = {"Authorization": f"Bearer {user['key']}"}
        assert requests.get(url + "requests", headers=user_auth, timeout=30).status_code == 200
    finally:
        stop(process)


def test_demo_mode_serves_instances_with_no_openstack_account(tmp_path):
    """`make demo`: simulated providers are registered, and a request comes up ACTIVE."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMS_", "AWS_"))}
    env.update(
        OMS_PORT=str(port),
        OMS_MOTO_PORT=str(free_port()),
        OMS_SIM_PORT=str(free_port()),
        OMS_STATE_DIR=str(tmp_path / "state"),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "local", "--demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        key = None
        for line in process.stdout:
            if line.startswith("admin key: "):
                key = line.split()[-1]
                break
        assert key, "no admin key printed"
        url, auth = f"http://127.0.0.1:{port}/", {"Authorization": f"Bearer {key}"}
        names = sorted(p["name"] for p in requests.get(url + "providers", headers=auth, timeout=30).json()["items"])
        assert names == [f"demo-p{n}" for n in range(1, 7)]  # 6 accounts of 20: room for 100
        pool = requests.get(url + "pools/ubuntu-small", headers=auth, timeout=30).json()
        assert pool["target"] == 10, pool
        request = requests.post(url + "requests", json={"label": "ubuntu-small", "count": 6}, headers=auth, timeout=30)
        assert request.status_code == 202
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = requests.get(url + f"requests/{request.json()['id']}", headers=auth, timeout=30).json()
            if state["state"] == "ready":
                break
            time.sleep(0.5)
        assert state["state"] == "ready", state["counts"]
        assert all(i["addresses"]["ipv4"] for i in state["instances"])
        # demo-p3 gives servers only private addresses: its instances are reached by floating IP.
        spread = {i["provider"] for i in state["instances"]}
        assert "demo-p3" in spread and len(spread) >= 3, spread  # spread over the accounts
        assert "demo-p6" not in spread  # in maintenance: its share failed over
        for instance in state["instances"]:
            kinds = {ip["type"] for ip in instance["ips"] if ip["addr"] == instance["access_ip"]}
            assert kinds == ({"floating"} if instance["provider"] == "demo-p3" else {"fixed"}), instance
    finally:
        stop(process)
