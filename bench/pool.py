"""Warm pools (issue 19): how fast a request is ready when its label keeps 20 booted.

    python -m bench.pool [--rounds 5] [--out FILE]

Seven simulated accounts of 20 (140 slots; 3 s boots, 50 ms of latency per call, as S1), the
label's pool at `min_ready` 20. Each round waits for the pool to be full, POSTs a request for 20
and polls the request until it is ready (all ACTIVE), then deletes it. Then one request for 100:
its first 20 (the pool's) and all 100 ACTIVE, and how long the pool takes to be back at 20. The
simulator's `servers_peak` per account says whether a cap was ever exceeded.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.run import configure, emit, register, start

POOL = 20


def scenario() -> scenarios.Scenario:
    return scenarios.Scenario(
        name="P1", count=POOL, providers=tuple(scenarios.Provider(f"p{n}") for n in range(1, 8)), timeout_seconds=180
    )


def _wait(what: str, predicate, timeout: float, interval: float = 0.02) -> float:
    """Poll until `predicate()` holds; the seconds it took."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)
    return time.perf_counter() - started


def run(rounds: int, seed: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="oms-bench-pool-"))
    admin_key = configure(workdir)
    logging.basicConfig(level=logging.WARNING)

    plan = scenario()
    sim, stack, api, base = start(plan, seed, workdir, admin_key)
    result: dict[str, Any] = {"scenario": plan.name, "seed": seed, "pool": POOL, "rounds": []}

    def pool() -> dict:
        return api.get(f"{base}/pools/{scenarios.LABEL}", timeout=30).json()

    def request(request_id: str) -> dict:
        return api.get(f"{base}/requests/{request_id}", timeout=30).json()

    def active(request_id: str) -> int:
        return request(request_id)["counts"]["ACTIVE"]

    try:
        register(api, base, sim, plan)
        api.put(f"{base}/pools/{scenarios.LABEL}", json={"min_ready": POOL}, timeout=30).raise_for_status()
        result["pool_filled_seconds"] = round(
            _wait("the pool filled", lambda: pool()["counts"]["ready"] == POOL, 180, 0.2), 2
        )
        for _ in range(rounds):
            _wait("the pool full again", lambda: pool()["counts"]["ready"] == POOL, 180, 0.2)
            started = time.perf_counter()
            response = api.post(
                f"{base}/requests", json={"label": scenarios.LABEL, "count": POOL, "lifetime_minutes": 30}, timeout=60
            )
            answered = time.perf_counter() - started
            response.raise_for_status()
            made = response.json()
            ready = answered
            if made["counts"]["ACTIVE"] < POOL:
                ready += _wait("the request ready", lambda made=made: active(made["id"]) == POOL, 120)
            result["rounds"].append(
                {
                    "answered_seconds": round(answered, 3),
                    "ready_seconds": round(ready, 3),
                    "active_in_answer": made["counts"]["ACTIVE"],
                    "from_pool": sum(1 for i in made["instances"] if i["pooled_at"]),
                }
            )
            api.delete(f"{base}/requests/{made['id']}", timeout=60).raise_for_status()

        _wait("the pool full again", lambda: pool()["counts"]["ready"] == POOL, 180, 0.2)
        started = time.perf_counter()
        response = api.post(
            f"{base}/requests", json={"label": scenarios.LABEL, "count": 100, "lifetime_minutes": 30}, timeout=60
        )
        answered = time.perf_counter() - started
        response.raise_for_status()
        big = response.json()
        first = answered
        if big["counts"]["ACTIVE"] < POOL:
            first += _wait("20 ACTIVE", lambda: active(big["id"]) >= POOL, 60)
        everything = answered + _wait("100 ACTIVE", lambda: active(big["id"]) == 100, plan.timeout_seconds, 0.2)
        refilled = everything + _wait("the pool back to 20", lambda: pool()["counts"]["ready"] == POOL, 180, 0.2)
        peaks = {p.name: sim.state(p.name)["servers_peak"] for p in plan.providers}
        result["hundred"] = {
            "answered_seconds": round(answered, 3),
            "active_in_answer": big["counts"]["ACTIVE"],
            "first_20_seconds": round(first, 3),
            "all_100_seconds": round(everything, 2),
            "pool_back_seconds": round(refilled, 2),
            "servers_peak": peaks,
            "over_cap": {name: peak - 20 for name, peak in peaks.items() if peak > 20},
        }
        api.delete(f"{base}/requests/{big['id']}", timeout=60).raise_for_status()
        api.delete(f"{base}/pools/{scenarios.LABEL}", timeout=60).raise_for_status()
        result["servers_left_seconds"] = round(
            _wait(
                "every server deleted", lambda: all(not sim.client.servers(p.name) for p in plan.providers), 180, 0.5
            ),
            2,
        )
    finally:
        stack.stop()
        sim.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="requests for 20 from a full pool (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the result here as JSON (default: stdout)")
    args = parser.parse_args(argv)
    emit(run(args.rounds, args.seed), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
