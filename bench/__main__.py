"""Run the benchmarks and write bench/RESULTS.md with its plot (`make bench`).

    python -m bench                      # every scenario, the default number of runs
    python -m bench --runs 5 --s2-runs 3 # more runs for tighter medians
    python -m bench --from bench/raw     # only rewrite RESULTS.md from the kept raw results

Each OpenMultiStack run is a fresh process (`python -m bench.run`): fresh moto, fresh tables,
a fresh simulator. The raw results of every run are kept as JSON in bench/raw/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import coldstart, report

HERE = Path(__file__).resolve().parent


def _python_module(module: str, *args: str, out: Path, log: Path) -> dict[str, Any]:
    with log.open("w") as stream:
        subprocess.run(
            [sys.executable, "-m", module, *args, "--out", str(out)],
            cwd=HERE.parent,
            stdout=stream,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return json.loads(out.read_text())


def measure(
    raw: Path, runs: int, s2_runs: int, cold_runs: int, lanes: int, ssh_runs: int, rate_runs: int
) -> dict[str, Any]:
    raw.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    steps: list[tuple[str, Any]] = []
    for n in range(1, runs + 1):
        steps.append((f"S1 run {n}/{runs}", lambda n=n: ("s1", _oms("S1", n, raw, sweep=False))))
    for n in range(1, ssh_runs + 1):
        steps.append((f"S1-ssh run {n}/{ssh_runs}", lambda n=n: ("s1_ssh", _oms("S1-ssh", n, raw, sweep=False))))
    for n in range(1, rate_runs + 1):
        steps.append((f"S1-rate run {n}/{rate_runs}", lambda n=n: ("s1_rate", _oms("S1-rate", n, raw, sweep=False))))
    if report.py_spy():
        # One more S1 run under py-spy, for where the time goes; sampling slows it, so it is not timed.
        steps.append(("S1 run under py-spy", lambda: ("s1_profiled", _oms("S1", 0, raw, sweep=False, profile=True))))
    steps.append(
        (
            "warm pool",
            lambda: ("pool", _python_module("bench.pool", out=raw / "pool.json", log=raw / "pool.log")),
        )
    )
    steps.append(("baseline", lambda: ("baseline", _baseline(raw, lanes))))
    for n in range(1, s2_runs + 1):
        # Tearing 1,000 down takes longer than launching them, and no S2 figure needs it: S1 checks
        # teardowns and leaks (`python -m bench.run S2` alone measures S2's teardown too).
        steps.append((f"S2 run {n}/{s2_runs}", lambda n=n: ("s2", _oms("S2", n, raw, sweep=True, teardown=False))))
    steps.append(("cold start", lambda: ("cold", _cold(raw, cold_runs))))
    steps.append(
        (
            "moto's speed",
            lambda: ("store", _python_module("bench.store", out=raw / "store.json", log=raw / "store.log")),
        )
    )
    for title, step in steps:
        started = time.monotonic()
        print(f"bench: {title}...", flush=True)
        key, value = step()
        if key in ("s1", "s1_ssh", "s1_rate", "s2"):
            results.setdefault(key, []).append(value)
        else:
            results[key] = value
        print(f"bench: {title} took {time.monotonic() - started:.0f} s", flush=True)
    (raw / "all.json").write_text(json.dumps(results, indent=1))
    return results


def _oms(
    scenario: str, n: int, raw: Path, *, sweep: bool, profile: bool = False, teardown: bool = True
) -> dict[str, Any]:
    args = [scenario, "--seed", str(n)]
    if sweep:
        args.append("--sweep-pass")
    if not teardown:
        args.append("--no-teardown")
    if profile:
        args += ["--profile", str(raw / "profile")]
    name = f"{scenario.lower()}-{n}"
    return _python_module("bench.run", *args, out=raw / f"{name}.json", log=raw / f"{name}.log")


def _baseline(raw: Path, lanes: int) -> dict[str, Any]:
    args = ("S1", "--seed", "1", "--lanes", str(lanes))
    return _python_module("bench.baseline", *args, out=raw / "baseline.json", log=raw / "baseline.log")


def _cold(raw: Path, runs: int) -> dict[str, Any]:
    coldstart.import_seconds("api", 1)  # a first run compiles bytecode; it is not counted
    return {
        "runs": runs,
        "imports": {name: coldstart.import_seconds(name, runs) for name in coldstart.FUNCTIONS},
        "package": coldstart.package_size(raw / "package"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="S1 runs (default 3)")
    parser.add_argument("--s2-runs", type=int, default=2, help="S2 runs (default 2)")
    parser.add_argument("--ssh-runs", type=int, default=2, help="S1-ssh runs: S1 with `ready: ssh` (default 2)")
    parser.add_argument(
        "--rate-runs", type=int, default=1, help="S1-rate runs: S1 plus a rate-limited account (default 1)"
    )
    parser.add_argument("--cold-runs", type=int, default=7, help="fresh interpreters per import timing")
    parser.add_argument("--lanes", type=int, default=20, help="baseline lanes (1 runs the script as written)")
    parser.add_argument("--raw", type=Path, default=HERE / "raw", help="where the raw results go")
    parser.add_argument("--from", dest="reuse", type=Path, help="skip measuring: report these raw results")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.reuse:
        results = json.loads((args.reuse / "all.json").read_text())
        raw = args.reuse
    else:
        results = measure(args.raw, args.runs, args.s2_runs, args.cold_runs, args.lanes, args.ssh_runs, args.rate_runs)
        raw = args.raw
        results["bench_seconds"] = round(time.monotonic() - started)
        (raw / "all.json").write_text(json.dumps(results, indent=1))
    report.write(results, raw, args.out)
    print(f"bench: wrote {args.out} and {args.out.with_name(report.PLOT)} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
