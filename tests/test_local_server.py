"""The local HTTP servers as a client meets them: the stack's server (methods, bursts) and
`chalice local --stage local` on the stack's moto, or on nothing."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.conftest import free_port, provider_body, register_down

ROOT = Path(__file__).resolve().parent.parent
CHALICE = Path(sys.executable).with_name("chalice")


def raw_call(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One call on a fresh connection, for methods `requests` would not send as they are."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# --- methods ---------------------------------------------------------------------------------


def test_a_method_the_server_does_not_know_is_405_in_our_shape_with_allow(stack):
    status, headers, body = raw_call(stack.url, "TRACE", "/providers")
    assert status == 405
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": {"code": "method_not_allowed", "message": "Unsupported method: TRACE"}}
    assert headers["Allow"] == "POST, GET"
    assert headers["X-Content-Type-Options"] == "nosniff"

    status, headers, body = raw_call(stack.url, "TRACE", "/providers/p-1/check?x=1")
    assert status == 405 and headers["Allow"] == "POST"

    # No path of ours: no Allow to name, the same error.
    status, headers, body = raw_call(stack.url, "PROPFIND", "/nowhere")
    assert status == 405 and "Allow" not in headers
    assert json.loads(body)["error"]["code"] == "method_not_allowed"


def test_a_method_a_known_path_does_not_serve_is_answered_alike_by_chalice(stack, admin_api):
    put = admin_api.call("PUT", "/providers")
    _, trace_headers, _ = raw_call(stack.url, "TRACE", "/providers")
    assert put.status_code == 405
    assert put.json() == {"error": {"code": "method_not_allowed", "message": "Unsupported method: PUT"}}
    assert put.headers["Allow"] == trace_headers["Allow"] == "POST, GET"


def test_the_http_layers_own_refusals_are_in_our_shape(stack):
    status, headers, body = raw_call(stack.url, "GET", "/health", headers={"X-Long": "x" * 70_000})
    assert status == 431
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "validation_error"


def test_openapi_lists_the_codes_the_servers_answer(stack):
    document = requests.get(stack.url + "openapi.json", timeout=30).json()
    codes = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert {"method_not_allowed", "unavailable"} <= set(codes)


# --- bursts ----------------------------------------------------------------------------------


def test_200_clients_posting_at_the_same_moment_all_get_their_answer(stack, admin_api):
    """chalice's own server (a listen backlog of 5) reset some of 20 such clients and left 40 of 200
    unanswered."""
    label = next(iter(register_down(admin_api)["labels"]))  # down: nothing launches
    clients = 200
    body = json.dumps({"label": label, "count": 1}).encode()
    headers = {"Authorization": f"Bearer {admin_api.key}", "Content-Type": "application/json"}
    parts = urlsplit(stack.url)
    barrier = threading.Barrier(clients)
    answers: list[object] = [None] * clients

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=90)
        try:
            barrier.wait(timeout=60)
            connection.request("POST", "/requests", body=body, headers=headers)
            response = connection.getresponse()
            answers[index] = (response.status, json.loads(response.read()))
        except Exception as error:  # noqa: BLE001 - kept as the answer, reported below
            answers[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    deadline = started + 150
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - started
    answered = [a for a in answers if isinstance(a, tuple) and a[0] == 202]
    ids = [body["id"] for _, body in answered]
    try:
        failed = [a[0] if isinstance(a, tuple) else a for a in answers if not (isinstance(a, tuple) and a[0] == 202)]
        assert not failed, f"{len(failed)} of {clients} without a 202 in {elapsed:.1f} s: {failed[:5]}"
        assert len(set(ids)) == clients
        print(f"{clients}/{clients} answered 202 in {elapsed:.1f} s")
    finally:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda request_id: admin_api.delete(f"/requests/{request_id}"), ids))


# --- chalice local ---------------------------------------------------------------------------


def _environment(**overrides: str) -> dict:
    """This machine's environment without the test session's settings, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMS_", "AWS_"))}
    env.update(overrides)
    return env


def _lines(process: subprocess.Popen) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return lines


def _wait_for_line(process: subprocess.Popen, lines: queue.Queue[str], pattern: str, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert process.poll() is None, f"exited ({process.returncode}) before printing {pattern!r}"
            continue
        if match := re.match(pattern, line):
            return match
    raise AssertionError(f"no line {pattern!r} in {timeout} s")


def _chalice_local(env: dict, port: int) -> tuple[subprocess.Popen, str]:
    """`chalice local --stage local` in the project, once it answers /health."""
    process = subprocess.Popen(
        [str(CHALICE), "local", "--stage", "local", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"chalice local exited ({process.returncode})"
        try:
            if requests.get(url + "health", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.2)
    _stop(process)
    raise AssertionError("chalice local did not answer /health in 60 s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_chalice_local_serves_the_api_on_make_motos_data(tmp_path):
    """`make moto` then `chalice local --stage local`: the same tables, so the printed admin key works."""
    moto_port = free_port()
    env = _environment(OMS_MOTO_PORT=str(moto_port), OMS_STATE_DIR=str(tmp_path / "state"))
    moto = subprocess.Popen(
        [sys.executable, "-m", "local", "--moto-only"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    served = None
    try:
        lines = _lines(moto)
        ready = _wait_for_line(moto, lines, r"moto \(DynamoDB, Secrets Manager\) is running at (\S+)", 120)
        assert ready.group(1) == f"http://127.0.0.1:{moto_port}"
        key = _wait_for_line(moto, lines, r"admin key: (\S+)", 30).group(1)
        # Only OMS_MOTO_PORT comes from this environment: credentials, region and deployment are the stage's.
        served, url = _chalice_local(_environment(OMS_MOTO_PORT=str(moto_port)), free_port())
        auth = {"Authorization": f"Bearer {key}"}
        assert requests.get(url + "me", headers=auth, timeout=30).json()["role"] == "admin"
        provider = provider_body()
        created = requests.post(url + "providers", json=provider, headers=auth, timeout=30)
        assert created.status_code == 201, created.text
        names = [p["name"] for p in requests.get(url + "providers", headers=auth, timeout=30).json()["items"]]
        assert names == [provider["name"]]
        label = next(iter(provider["labels"]))
        request = requests.post(url + "requests", json={"label": label, "count": 2}, headers=auth, timeout=30)
        assert request.status_code == 202, request.text
    finally:
        if served is not None:
            _stop(served)
        _stop(moto)
    assert moto.returncode == 0


def test_chalice_local_with_no_database_answers_503_naming_what_to_start():
    from app import app
    from chalicelib import auth

    nothing_there = free_port()
    served, url = _chalice_local(_environment(OMS_MOTO_PORT=str(nothing_there)), free_port())
    try:
        assert requests.get(url + "health", timeout=30).json() == {"status": "ok"}
        headers = {"Authorization": f"Bearer {auth.new_key()[1]}"}
        backend_free = {"/health", "/openapi.json", "/", "/static/{name}"}
        calls = [
            (method, re.sub(r"\{[^}]+\}", "x", path))
            for path, views in app.routes.items()
            if path not in backend_free
            for method in views
        ]
        assert len(calls) > 15

        def call(method_path: tuple[str, str]) -> tuple[str, str, requests.Response]:
            method, path = method_path
            return method, path, requests.request(method, url.rstrip("/") + path, json={}, headers=headers, timeout=60)

        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(call, calls))
        message = f"the database at http://127.0.0.1:{nothing_there} does not answer: start it with `make moto`"
        for method, path, response in answers:
            assert response.status_code == 503, (method, path, response.status_code, response.text)
            error = response.json()["error"]
            assert error["code"] == "unavailable"
            assert error["message"].startswith(message), error["message"]
            assert "Traceback" not in response.text
        print(f"{len(answers)} routes answered 503 in {time.monotonic() - started:.1f} s")
    finally:
        _stop(served)
