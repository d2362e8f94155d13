"""Traces, metrics and log lines from a real launch with a fail-over, on the local stack.

The stack traces as a deployed function does (conftest points it at a fake X-Ray daemon).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from tests.conftest import XRAY, register_sim_provider, request_state, unique, wait_for


def test_a_launch_with_a_failover_is_traced_measured_and_logged(admin_api, user_api, sim, capsys, caplog, monkeypatch):
    monkeypatch.setenv("OMS_METRICS", "emf")  # the embedded-metric lines Lambda would print
    caplog.set_level(logging.INFO, logger="oms")
    label = unique("lbl")
    sim.control("p2", create_error=503)  # preferred, and every create fails: a fail-over each
    failing = register_sim_provider(admin_api, sim, "p2", label, priority=10)["name"]
    working = register_sim_provider(admin_api, sim, "p1", label)["name"]
    before = len(XRAY.datagrams)

    request = user_api.post("/requests", json={"label": label, "count": 2}).json()
    wait_for(lambda: request_state(user_api, request["id"])["state"] == "ready", timeout=120, what="ready")

    # Traces: each provider call a subsegment annotated with provider, operation and outcome.
    # (A segment is sent when its invocation ends, which may be a moment after the state is.)
    def outcomes() -> set[tuple]:
        calls = [e for e in XRAY.entities() if e.get("name", "").startswith("openstack.")]
        return {(e["annotations"]["provider"], e["name"], e["annotations"]["outcome"]) for e in calls}

    expected = {(working, "openstack.create_server", "ok"), (failing, "openstack.create_server", "unavailable")}
    wait_for(lambda: expected <= outcomes(), timeout=30, what=f"traces of {expected}")
    calls = [e for e in XRAY.entities() if e.get("name", "").startswith("openstack.")]
    assert all(e["annotations"]["operation"] == e["name"].removeprefix("openstack.") for e in calls)
    # ...with the HTTP calls openstacksdk made inside them, and the boto3 ones.
    assert any("/servers" in e.get("http", {}).get("request", {}).get("url", "") for e in XRAY.entities())
    assert any(e.get("namespace") == "aws" and e.get("name") == "dynamodb" for e in XRAY.entities())
    # Only URLs and statuses: no header, no body (the canary test searches them for secrets).
    assert b"X-Auth-Token" not in b"".join(XRAY.datagrams[before:])

    # Metrics: embedded-metric-format lines, by provider and outcome.
    points = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    names = {
        (p["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], p.get("provider"), p.get("outcome")) for p in points
    }
    assert ("Launches", working, "ok") in names and ("Launches", failing, "unavailable") in names, names
    assert any(n == "Failovers" and p == failing for n, p, _ in names)
    assert any(n == "TimeToActive" and p == working for n, p, _ in names)
    assert all(p["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "OpenMultiStack" for p in points)

    # Log lines: the transitions carry instance, request, provider and states, as JSON fields.
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    mine = {i["id"] for i in request_state(user_api, request["id"])["instances"]}
    transitions = [r for r in caplog.records if getattr(r, "instance_id", None) in mine]
    assert {r.state_to for r in transitions} >= {"PENDING", "BUILDING", "ACTIVE"}
    line = json.loads(LambdaPowertoolsFormatter(service="test").format(transitions[-1]))
    assert {"instance_id", "request_id", "provider", "state_from", "state_to", "message", "level"} <= set(line)


def test_the_api_handler_imports_neither_openstacksdk_nor_the_xray_sdk():
    code = "import sys, app; print(sorted(m for m in ('openstack', 'aws_xray_sdk') if m in sys.modules))"
    env = {**os.environ, "OMS_TRACING": "on", "AWS_LAMBDA_FUNCTION_NAME": "api"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_json_lines_carry_the_lambda_request_id_of_their_invocation():
    import io
    from types import SimpleNamespace

    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    from chalicelib import telemetry

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(LambdaPowertoolsFormatter(service="test"))
    handler.addFilter(telemetry._InvocationId())
    logger = logging.getLogger("oms.test-json")
    logger.addHandler(handler)
    try:
        with telemetry.invocation("x", SimpleNamespace(aws_request_id="req-123")):
            logger.warning("instance i-1: ACTIVE", extra={"instance_id": "i-1", "provider": "p1", "state_to": "ACTIVE"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(out.getvalue())
    assert line["lambda_request_id"] == "req-123" and line["instance_id"] == "i-1" and line["state_to"] == "ACTIVE"
