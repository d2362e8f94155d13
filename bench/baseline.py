"""The baseline: the script a user would write without OpenMultiStack, with openstacksdk alone.

    for each instance:
        for each provider, in order:
            try: conn.create_server(..., wait=True); break
            except Exception: go on to the next provider

    python -m bench.baseline S1 --lanes 10 --out baseline.json

It runs against its own simulator, set up as the scenario says. Run as written, 100 instances
take about ten minutes (openstacksdk's `wait=True` polls every 5 s), more than `make bench` may
spend. So the instances are shared out over `--lanes` threads, each running the very same
sequential loop over its share with connections of its own. Each instance's duration is what the
sequential script would spend on it; the script's time to the n-th ACTIVE instance is the sum of
the durations of instances 1..n. `--lanes 1` runs the script exactly as written.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.run import Sim, cpu_seconds, emit, percentile_times
from sim.testing import connect_kwargs


def user_script(connections: list[tuple[str, Any]], indexes: list[int], results: dict[int, dict]) -> None:
    """One lane: the user's loop over its share of the instances."""
    for index in indexes:
        started = time.monotonic()
        tried: list[str] = []
        provider = server = None
        for name, conn in connections:
            try:
                server = conn.create_server(
                    f"baseline-{index:03d}",
                    image="ubuntu-22.04",
                    flavor="m1.small",
                    network="public",
                    wait=True,
                    timeout=600,
                )
                provider = name
                break
            except Exception as error:  # noqa: BLE001 - the user's script: try the next provider
                tried.append(f"{name}: {type(error).__name__}")
        results[index] = {
            "seconds": time.monotonic() - started,
            "provider": provider,
            "server_id": server.id if server is not None else None,
            "failures": tried,
        }


def cumulative(durations: list[float]) -> list[float]:
    """When each instance is ACTIVE in the sequential script: the running sum of durations."""
    total, out = 0.0, []
    for seconds in durations:
        total += seconds
        out.append(total)
    return out


def run(scenario: scenarios.Scenario, seed: int, lanes: int, workdir: Path) -> dict[str, Any]:
    import openstack

    sim = Sim(scenario, seed, workdir)
    names = [p.name for p in scenario.providers]
    try:
        before = {n: sim.state(n) for n in names}

        def connect(name: str) -> Any:
            state = before[name]
            return openstack.connect(
                **connect_kwargs(sim.auth_url(name), state["credentials"], state["region"], api_timeout=30)
            )

        cpu_before = cpu_seconds(sim.process.pid)
        results: dict[int, dict] = {}
        threads = []
        started = time.monotonic()
        for lane in range(lanes):
            connections = [(n, connect(n)) for n in names]
            share = list(range(lane, scenario.count, lanes))
            threads.append(threading.Thread(target=user_script, args=(connections, share, results), daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        after = {n: sim.state(n) for n in names}
        ordered = [results[i] for i in range(scenario.count)]
        up = [r for r in ordered if r["provider"]]
        active_times = [
            t for t, r in zip(cumulative([r["seconds"] for r in ordered]), ordered, strict=True) if r["provider"]
        ]
        calls: Counter[str] = Counter()
        for n in names:
            calls.update({k: v - before[n]["calls"].get(k, 0) for k, v in after[n]["calls"].items()})
        # The user deletes what it knows it made; what is left on the providers then has leaked.
        cleanup = {n: connect(n) for n in names}
        for r in up:
            cleanup[r["provider"]].compute.delete_server(r["server_id"], ignore_missing=True)
        leaks = {n: sim.state(n)["servers_live"] for n in names}
        return {
            "lanes": lanes,
            "count": scenario.count,
            "active": len(up),
            "times": percentile_times(active_times, scenario.count),
            "active_times": [round(t, 3) for t in active_times],
            "lane_wall_seconds": round(wall, 3),
            "instance_seconds": sorted(round(r["seconds"], 3) for r in ordered),
            "failures": sum(len(r["failures"]) for r in ordered),
            "by_provider": dict(Counter(r["provider"] for r in up)),
            "openstack_calls": {k: v for k, v in calls.items() if v},
            "servers_peak": {n: after[n]["servers_peak"] for n in names},
            "leaks": {n: c for n, c in leaks.items() if c},
            "sim_cpu_seconds": round(cpu_seconds(sim.process.pid) - cpu_before, 2),
        }
    finally:
        sim.stop()


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(scenarios.SCENARIOS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lanes", type=int, default=10, help="threads sharing the instances (1: as written)")
    parser.add_argument("--out", type=Path, help="write the result here as JSON (default: stdout)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="oms-baseline-"))
    emit(run(scenarios.SCENARIOS[args.scenario](), args.seed, args.lanes, workdir), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
