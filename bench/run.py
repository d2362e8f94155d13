"""One benchmark run of OpenMultiStack, in a process of its own:

    python -m bench.run S1 --seed 1 --out run.json

It starts the simulator (its own process) with the scenario's providers, the whole local stack
(moto in its own process; the API, stream pump, scheduler, workers and watchers in this one, as
`python -m local` runs them), registers the providers through the API, requests the instances
through the API, waits for them to come up, deletes the request and waits for the teardown.

What it measures it observes from outside our code: the app's own log records (each state
change is logged with its instance and the time to the millisecond), every AWS call made through
botocore in this process (counted by service and operation), the simulator's counters (calls by
kind, servers live and at peak), and CPU time per process from /proc.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench import scenarios

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# --- observers ---------------------------------------------------------------------------


class Events(logging.Handler):
    """Keeps the app's state-change log records: (seconds since start, instance, state, provider, class)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.start = time.time()
        self.items: list[tuple[float, str, str, str | None, str | None]] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        to = getattr(record, "state_to", None)
        if to is None:
            return
        with self._changed:
            self.items.append(
                (
                    record.created - self.start,
                    record.instance_id,
                    to,
                    getattr(record, "provider", None),
                    getattr(record, "error_class", None),
                )
            )
            self._changed.notify_all()

    def reached(self, state: str) -> dict[str, float]:
        """First time each instance was logged entering `state`."""
        first: dict[str, float] = {}
        for at, instance, to, _, _ in list(self.items):
            if to == state and instance not in first:
                first[instance] = at
        return first

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
        return True


class AwsCalls:
    """Counts every AWS API call botocore makes in this process, by service and operation."""

    def __init__(self) -> None:
        import botocore.client

        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        original = botocore.client.BaseClient._make_api_call
        counts, lock = self.counts, self._lock

        def counted(client, operation_name, api_params):
            with lock:
                counts[f"{client.meta.service_model.service_name}:{operation_name}"] += 1
            return original(client, operation_name, api_params)

        botocore.client.BaseClient._make_api_call = counted

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


# --- the run -----------------------------------------------------------------------------


class Sim:
    """The simulator in its own process, with the scenario's providers."""

    def __init__(self, scenario: scenarios.Scenario, seed: int, workdir: Path) -> None:
        import yaml

        config = workdir / "sim.yaml"
        config.write_text(yaml.safe_dump(scenario.sim_config(seed)))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sim", "--port", "0", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line.startswith("sim ready "):
            self.process.kill()
            raise RuntimeError(f"the simulator did not start: {line!r}")
        self.base_url = line.split()[-1]
        from sim.testing import Simulator

        self.client = Simulator.__new__(Simulator)
        self.client.base_url = self.base_url

    def auth_url(self, name: str) -> str:
        return f"{self.base_url}{name}/identity/v3"

    def state(self, name: str) -> dict[str, Any]:
        return self.client.state(name)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def configure(workdir: Path) -> str:
    """The environment of a fresh local stack; set before chalicelib is imported."""
    admin_key = "bench-admin-" + uuid.uuid4().hex
    os.environ.update(
        OMS_DEPLOYMENT="bench",
        OMS_PORT=str(free_port()),
        OMS_MOTO_PORT=str(free_port()),
        OMS_STATE_DIR=str(workdir / "state"),
        OMS_BOOTSTRAP_ADMIN_KEY=admin_key,
        OMS_TRACING="off",
        OMS_SWEEP_SECONDS="60",  # as deployed (the local stack's default is 5 s)
        OMS_LOG_LEVEL="INFO",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    for name in ("OMS_AWS_ENDPOINT", "AWS_PROFILE"):
        os.environ.pop(name, None)
    return admin_key


def start(scenario: scenarios.Scenario, seed: int, workdir: Path, admin_key: str) -> tuple[Sim, Any, Any, str]:
    """The scenario's simulator and a fresh local stack (after `configure`), and an admin's HTTP
    session on the stack with its base URL."""
    import requests

    from chalicelib.settings import settings
    from local.stack import LocalStack

    sim = Sim(scenario, seed, workdir)
    stack = LocalStack(settings).start()
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {admin_key}"
    return sim, stack, api, stack.url.rstrip("/")


def register(api: Any, base: str, sim: Sim, scenario: scenarios.Scenario) -> None:
    """Register the scenario's simulated accounts as providers, each with its cap and the label."""
    for provider in scenario.providers:
        response = api.post(
            base + "/providers",
            json={
                "name": provider.name,
                "auth_url": sim.auth_url(provider.name),
                "region": "RegionOne",
                "username": "demo",
                "password": "secret",
                "project_name": "demo",
                "max_instances": provider.cap,
                "labels": {scenarios.LABEL: scenario.label()},
            },
            timeout=60,
        )
        response.raise_for_status()


def percentile_times(times: list[float], count: int) -> dict[str, float | None]:
    """Seconds to the first, 50th, 90th and last (count-th) ACTIVE instance."""
    ordered = sorted(times)

    def at(n: int) -> float | None:
        return round(ordered[n - 1], 3) if len(ordered) >= n else None

    return {"first": at(1), "half": at(count // 2), "p90": at(count * 9 // 10), "all": at(count)}


def run(
    scenario: scenarios.Scenario, seed: int, sweep_pass: bool, profile: Path | None = None, teardown: bool = True
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="oms-bench-"))
    admin_key = configure(workdir)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    events = Events()
    logging.getLogger("oms").addHandler(events)
    logging.getLogger("oms").setLevel(logging.INFO)
    logging.getLogger("oms").propagate = False  # the records are kept, not printed
    aws = AwsCalls()

    from chalicelib import models

    sim, stack, api, base = start(scenario, seed, workdir, admin_key)
    result: dict[str, Any] = {"scenario": scenario.name, "seed": seed, "count": scenario.count}
    try:
        register(api, base, sim, scenario)
        # One sweep pass checks every provider first, as in a running service.
        _sweep_pass(stack, sim, scenario, aws)
        faults_recorded = _faults_recorded()
        sims_before = {p.name: sim.state(p.name) for p in scenario.providers}
        aws_before = aws.snapshot()
        cpu_before = _cpu(stack, sim)

        profilers = _profile(profile, {"app": os.getpid(), "moto": stack._moto.pid}) if profile else []
        events.start = time.time()
        response = api.post(
            base + "/requests",
            json={"label": scenarios.LABEL, "count": scenario.count, "lifetime_minutes": 60},
            timeout=120,
        )
        accepted = time.time() - events.start
        response.raise_for_status()
        request_id = response.json()["id"]

        def settled() -> bool:
            return len(events.reached(models.ACTIVE)) + len(events.reached(models.FAILED)) >= scenario.count

        events.wait(settled, scenario.timeout_seconds)
        up_at = time.time() - events.start
        cpu_after = _cpu(stack, sim)
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        aws_launch = aws.snapshot() - aws_before
        sims_after = {p.name: sim.state(p.name) for p in scenario.providers}
        active = events.reached(models.ACTIVE)
        instances = list(models.Instance.by_request.query(request_id))
        result.update(
            accepted_seconds=round(accepted, 3),
            active=len(active),
            failed=sum(1 for i in instances if i.state == models.FAILED),
            times=percentile_times(list(active.values()), scenario.count),
            active_times=sorted(round(t, 3) for t in active.values()),
            failovers=sum(len(i.attempts) for i in instances),
            failovers_by_class=dict(Counter(a.error for i in instances for a in i.attempts)),
            providers={
                p.name: {
                    "cap": p.cap,
                    "fault": p.fault,
                    "active": sum(1 for i in instances if i.provider == p.name and i.state == models.ACTIVE),
                    "servers_peak": sims_after[p.name]["servers_peak"],
                    "calls": _diff(sims_after[p.name]["calls"], sims_before[p.name]["calls"]),
                    # Requests it refused over its rate limit, and failures held against its health.
                    "rate_limited": sims_after[p.name]["rate_limited"] - sims_before[p.name]["rate_limited"],
                    "faults_recorded": faults_recorded[p.name],
                }
                for p in scenario.providers
            },
            openstack_calls=dict(
                sum((Counter(_diff(sims_after[n]["calls"], sims_before[n]["calls"])) for n in sims_after), Counter())
            ),
            aws_calls=dict(aws_launch),
            cpu_seconds={k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after},
            wall_seconds=round(up_at, 3),
            phases=_phases(events, scenario),
            events=[list(e) for e in events.items],
        )
        if scenario.ready == "ssh":
            result["nova"] = _nova_times(sim, scenario, instances, active, events.start)
        if sweep_pass:
            result["sweep"] = _sweep_pass(stack, sim, scenario, aws)
        result["over_cap"] = {
            name: info["servers_peak"] - info["cap"]
            for name, info in result["providers"].items()
            if info["servers_peak"] > info["cap"]
        }
        if teardown:
            result.update(
                _teardown(api, f"{base}/requests/{request_id}", request_id, events, len(active), sim, scenario)
            )
    finally:
        stack.stop()
        sim.stop()
    return result


def _faults_recorded() -> Counter[str]:
    """Failures recorded on each provider's health from now on (the only way to degraded or down),
    counted as they are recorded: a provider never counted was never marked down."""
    from chalicelib import health

    counts: Counter[str] = Counter()
    record = health.record_failure

    def counted(provider, error, **kwargs):
        counts[provider.name] += 1
        return record(provider, error, **kwargs)

    health.record_failure = counted
    return counts


def _profile(folder: Path, pids: dict[str, int]) -> list[subprocess.Popen]:
    """py-spy sampling each process (all threads, idle ones left out) until interrupted; the
    samples go to FOLDER/NAME.txt as collapsed stacks."""
    folder.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    profilers = [
        subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(folder / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    time.sleep(1.0)  # py-spy attaches
    return profilers


def _teardown(api: Any, url: str, request_id: str, events: Events, active: int, sim: Sim, scenario) -> dict[str, Any]:
    """DELETE the request; every instance must reach DELETED, and no server may stay behind."""
    from chalicelib import models

    started = time.time()
    api.delete(url, timeout=300).raise_for_status()
    events.wait(lambda: len(events.reached(models.DELETED)) >= active, scenario.timeout_seconds)
    seconds = time.time() - started
    left = [i for i in models.Instance.by_request.query(request_id) if i.state != models.DELETED]
    return {
        "delete_seconds": round(seconds, 3),
        "not_deleted": len(left),
        "leaks": {p.name: sim.state(p.name)["servers_live"] for p in scenario.providers},
    }


def _nova_times(
    sim: Sim, scenario: scenarios.Scenario, instances: list, active: dict[str, float], start: float
) -> dict[str, Any]:
    """For the servers of the instances that came up (`ready: ssh`): when Nova said ACTIVE, and
    when a client (the watcher) first read the sshd banner, as the simulator recorded them; the
    app's own ACTIVE (`active`, from its log) is when it called the instance reachable."""
    from datetime import datetime

    up = {i.server_id: i.id for i in instances if i.id in active}
    servers = [s for p in scenario.providers for s in sim.client.servers(p.name) if s["id"] in up]

    def since_start(stamp: str | None) -> float | None:
        return None if stamp is None else datetime.fromisoformat(stamp).timestamp() - start

    nova = {s["id"]: since_start(s["active_at"]) for s in servers}
    banner = [t for t in (since_start(s["first_banner_at"]) for s in servers) if t is not None]
    lag = sorted(active[up[server_id]] - at for server_id, at in nova.items())
    return {
        "active_times": percentile_times(list(nova.values()), scenario.count),
        "banner_times": percentile_times(banner, scenario.count),
        "reachable_after_active_median": _median(lag),
        "reachable_after_active_max": round(max(lag), 3) if lag else None,
    }


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _cpu(stack: Any, sim: Sim) -> dict[str, float]:
    return {"app": cpu_seconds(os.getpid()), "moto": cpu_seconds(stack._moto.pid), "sim": cpu_seconds(sim.process.pid)}


def _phases(events: Events, scenario: scenarios.Scenario) -> dict[str, Any]:
    """Where an instance's time goes: until its create returned (BUILDING), then the boot, then
    until the watcher saw it ACTIVE; and what a failover added."""
    first_building: dict[str, float] = {}
    last_building: dict[str, float] = {}
    failed_over: set[str] = set()
    for at, instance, to, _, _ in events.items:
        if to == "BUILDING":
            first_building.setdefault(instance, at)
            last_building[instance] = at
        elif to in ("PENDING", "FAILED"):
            failed_over.add(instance)
    active = events.reached("ACTIVE")
    to_created = sorted(first_building.values())
    lag = sorted(active[i] - last_building[i] - scenario.boot_seconds for i in active if i in last_building)
    return {
        "created_median": _median(to_created),
        "created_max": round(max(to_created), 3) if to_created else None,
        "seen_after_boot_median": _median(lag),
        "seen_after_boot_max": round(max(lag), 3) if lag else None,
        "failed_over": len(failed_over),
        "last_direct": round(max((active[i] for i in active if i not in failed_over), default=0), 3),
        "last_failed_over": round(max((active[i] for i in active if i in failed_over), default=0), 3),
    }


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    middle = len(values) // 2
    value = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
    return round(value, 3)


def _sweep_pass(stack: Any, sim: Sim, scenario: scenarios.Scenario, aws: AwsCalls) -> dict[str, Any]:
    """One scheduled pass with everything up, timed and counted (the scheduler held off meanwhile)."""
    import importlib

    from chalice.app import ScheduledEventConfig
    from chalice.local import LambdaContext

    from local.scheduler import scheduled_event
    from local.stack import _registered

    handler = _registered(importlib.import_module("app"), ScheduledEventConfig)
    with stack.scheduler.paused():
        before = {p.name: sim.state(p.name)["calls"] for p in scenario.providers}
        aws_before = aws.snapshot()
        started = time.perf_counter()
        handler(scheduled_event("us-east-1"), LambdaContext("sweep", 512, max_runtime_ms=900_000))
        seconds = time.perf_counter() - started
        aws_during = aws.snapshot() - aws_before
        after = {p.name: sim.state(p.name)["calls"] for p in scenario.providers}
    calls = sum((Counter(_diff(after[n], before[n])) for n in after), Counter())
    return {"seconds": round(seconds, 3), "openstack_calls": dict(calls), "aws_calls": dict(aws_during)}


def emit(result: dict[str, Any], out: Path | None) -> None:
    """A result as JSON, to `out` or to stdout."""
    text = json.dumps(result, indent=1)
    if out:
        out.write_text(text)
    else:
        print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(scenarios.SCENARIOS))
    parser.add_argument("--seed", type=int, default=1, help="the simulator's seed (which builds fail)")
    parser.add_argument("--sweep-pass", action="store_true", help="also time one sweeper pass once all are up")
    parser.add_argument(
        "--no-teardown", dest="teardown", action="store_false", help="stop once all are up (no DELETE, no leak check)"
    )
    parser.add_argument("--profile", type=Path, help="sample the app and moto with py-spy into this folder")
    parser.add_argument("--out", type=Path, help="write the result here as JSON (default: stdout)")
    args = parser.parse_args(argv)
    emit(run(scenarios.SCENARIOS[args.scenario](), args.seed, args.sweep_pass, args.profile, args.teardown), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
