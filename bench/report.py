"""bench/RESULTS.md and its plot, from the raw results of `python -m bench`."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import scenarios

PLOT = "active-over-time.png"
S1_TARGET_SECONDS = 2 * scenarios.BOOT_SECONDS + 3
TARGETS = {"s1_all": S1_TARGET_SECONDS, "s1_ratio": 20.0, "s2_all": 60.0, "sweep": 10.0, "api_import": 0.5}
VERSIONS = ("chalice", "boto3", "moto", "pynamodb", "openstacksdk", "keystoneauth1", "aws-xray-sdk", "matplotlib")


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


# --- numbers -----------------------------------------------------------------------------------


def spread(values: list[float | None], unit: str = " s", digits: int = 1) -> str:
    """'median [min–max]' of several runs ('n/a' when a run has no value)."""
    if not values or any(v is None for v in values):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}{unit}"
    return f"{statistics.median(values):.{digits}f}{unit} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def median(values: list[float]) -> float:
    return statistics.median(values)


def counts_median(dicts: list[dict[str, int]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: statistics.median([d.get(k, 0) for d in dicts]) for k in keys}


def verdict(ok: bool, over: str = "") -> str:
    return "met" if ok else f"**missed**{' ' + over if over else ''}"


# --- profile -----------------------------------------------------------------------------------


def profile_summary(path: Path, top: int = 8) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """From py-spy's collapsed stacks (idle threads are not sampled): the share of busy samples
    each function of ours (chalicelib, local) is on the stack of, and the share each module
    spends itself (the top frame), which says where the CPU goes."""
    if not path.exists():
        return [], []
    ours: Counter[str] = Counter()
    spent: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        seen = set()
        frames = [m.groups() for m in (re.match(r"(.+?) \((.+?)(?::\d+)?\)$", f) for f in stack.split(";")) if m]
        for function, filename in frames:
            module = _module(filename)
            key = f"{module}: {function}"
            if module.startswith(("chalicelib.", "local.pump", "local.scheduler")) and key not in seen:
                seen.add(key)
                ours[key] += samples
        if frames:
            spent[_module(frames[-1][1])] += samples
    if not total:
        return [], []

    def shares(counter: Counter[str]) -> list[tuple[float, str]]:
        return [(100.0 * n / total, key) for key, n in counter.most_common(top)]

    return shares(ours), shares(spent)


def _module(filename: str) -> str:
    """py-spy names files relative to their sys.path entry: chalicelib/launcher.py -> chalicelib.launcher."""
    name = filename.replace("\\", "/").split("site-packages/", 1)[-1].lstrip("/")
    return name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


# --- the document ------------------------------------------------------------------------------


def machine() -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown",
    )
    memory = next(
        (
            int(line.split()[1]) // 1024 // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    versions = []
    for name in VERSIONS:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return [
        f"- Machine: {os.cpu_count()} CPUs ({cpu}), {memory} GiB memory, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
    ]


def write(results: dict[str, Any], raw: Path, out: Path) -> None:
    s1, s2, base, cold = results["s1"], results.get("s2", []), results["baseline"], results["cold"]
    plot(s1, base, out.with_name(PLOT))
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m bench`) on {results['started']}"
        + (f" in {results['bench_seconds']} s" if "bench_seconds" in results else "")
        + ". Every OpenMultiStack run is a fresh local stack (moto server, the API, stream pump,",
        "scheduler, workers and watchers as `make run` runs them) against a fresh simulator process",
        "speaking OpenStack over HTTP to unmodified openstacksdk. Figures are the median of the runs,",
        "with [min–max] across them. Raw results of every run: `bench/raw/` (not kept in git).",
        "",
        *machine(),
        f"- Runs: S1 ×{len(s1)}, S2 ×{len(s2)}, baseline ×1 (see its notes), imports ×{cold['runs']} each",
        "",
    ]
    lines += _targets(s1, s2, base, cold)
    lines += _s1(s1, base)
    lines += _floor(s1, raw)
    if results.get("s1_ssh"):
        lines += _s1_ssh(results["s1_ssh"], s1)
    if results.get("s1_rate"):
        lines += s1_rate(results["s1_rate"])
    if results.get("pool"):
        lines += warm_pool(results["pool"])
    if s2:
        lines += _s2(s2)
    if "store" in results:
        lines += _store(results["store"], s1, s2)
    lines += _cold(cold)
    lines += _method(base)
    out.write_text("\n".join(lines) + "\n")


def _all_times(runs: list[dict], key: str) -> list[float | None]:
    return [r["times"][key] for r in runs]


def _targets(s1, s2, base, cold) -> list[str]:
    s1_all = median([r["times"]["all"] or float("inf") for r in s1])
    ratio = (base["times"]["all"] or 0) / s1_all if s1_all else 0
    over_cap = sum(len(r["over_cap"]) for r in s1 + s2)
    leaks = sum(sum(r["leaks"].values()) for r in s1 + s2 if "leaks" in r)
    rows = [
        (
            "S1: 100 ACTIVE",
            f"≤ {S1_TARGET_SECONDS:g} s",
            spread(_all_times(s1, "all")),
            s1_all <= TARGETS["s1_all"],
            f"by {s1_all - TARGETS['s1_all']:.1f} s",
        ),
        ("S1: against the baseline", "≥ 20×", f"{ratio:.0f}×", ratio >= TARGETS["s1_ratio"], ""),
        ("S1 and S2: servers over a cap", "0", str(over_cap), over_cap == 0, ""),
        (
            f"{'S1 and S2' if any('leaks' in r for r in s2) else 'S1'}: servers leaked after the teardown",
            "0",
            str(leaks),
            leaks == 0,
            "",
        ),
    ]
    if s2:
        s2_all = median([r["times"]["all"] or float("inf") for r in s2])
        sweep = median([r["sweep"]["seconds"] for r in s2])
        rows += [
            (
                "S2: 1,000 ACTIVE",
                "≤ 60 s",
                spread(_all_times(s2, "all")),
                s2_all <= TARGETS["s2_all"],
                f"by {s2_all - TARGETS['s2_all']:.0f} s",
            ),
            (
                "S2: one sweeper pass",
                "≤ 10 s",
                spread([r["sweep"]["seconds"] for r in s2]),
                sweep <= TARGETS["sweep"],
                f"by {sweep - TARGETS['sweep']:.1f} s",
            ),
        ]
    api = median(cold["imports"]["api"])
    rows.append(("API handler cold import", "< 0.5 s", spread(cold["imports"]["api"], digits=2), api < 0.5, ""))
    out = ["## Targets", "", "| what | target | measured | |", "| --- | --- | --- | --- |"]
    out += [f"| {what} | {target} | {got} | {verdict(ok, over)} |" for what, target, got, ok, over in rows]
    return out + ["", "Where a target is missed, the sections below say by how much and what stands in the way.", ""]


def _s1(s1: list[dict], base: dict) -> list[str]:
    scenario = scenarios.s1()
    out = [
        "## S1: 100 instances over seven accounts of 20",
        "",
        f"Boot {scenario.boot_seconds:g} s, API latency {scenario.latency_ms:g} ms on every call. Providers, in the",
        "baseline's order (OpenMultiStack registers them all with one priority and `max_instances` 20):",
        "",
        "| provider | trouble | ACTIVE on it (median) | `servers_peak` (max over runs) / cap |",
        "| --- | --- | --- | --- |",
    ]
    for p in scenario.providers:
        active = median([r["providers"][p.name]["active"] for r in s1])
        peak = max(r["providers"][p.name]["servers_peak"] for r in s1)
        out.append(f"| {p.name} | {p.fault or '—'} | {active:g} | {peak} / {p.cap} |")
    ratio = {k: (base["times"][k] / median([r["times"][k] for r in s1])) for k in ("first", "half", "p90", "all")}
    out += [
        "",
        f"![ACTIVE instances over time]({PLOT})",
        "",
        "| time to … ACTIVE | OpenMultiStack | baseline script | baseline / OpenMultiStack |",
        "| --- | --- | --- | --- |",
    ]
    for key, label in (("first", "first"), ("half", "50"), ("p90", "90"), ("all", "100")):
        times = f"{base['times'][key]:.1f} s"
        out.append(
            f"| {label} | {spread(_all_times(s1, key))} | {times} | {ratio[key]:.{1 if ratio[key] < 10 else 0}f}× |"
        )
    failovers = counts_median([r["failovers_by_class"] for r in s1])
    out += [
        "",
        f"- Failovers: {spread([r['failovers'] for r in s1], unit='', digits=0)} per run "
        f"({', '.join(f'{k} {v:g}' for k, v in failovers.items()) or 'none'}; medians); the baseline met "
        f"{base['failures']} failed tries.",
        f"- DELETE of the request to all 100 DELETED: {spread([r['delete_seconds'] for r in s1])}.",
        f"- Leaks after the teardown: {sum(sum(r['leaks'].values()) for r in s1)} servers in {len(s1)} runs. "
        f"The baseline left {sum(base['leaks'].values())} (the ERROR servers `create_server(wait=True)` raises on "
        "and does not delete).",
        f"- Instances FAILED: {sum(r['failed'] for r in s1)}; `servers_peak` above a cap: "
        f"{sum(len(r['over_cap']) for r in s1)} times.",
        "",
        "OpenStack API calls, from launch request to 100 ACTIVE (median per run; the baseline's in one run):",
        "",
        "| call | OpenMultiStack | baseline |",
        "| --- | --- | --- |",
    ]
    ours = counts_median([r["openstack_calls"] for r in s1])
    for kind in sorted(set(ours) | set(base["openstack_calls"])):
        out.append(f"| {kind} | {ours.get(kind, 0):g} | {base['openstack_calls'].get(kind, 0)} |")
    out.append(f"| **all** | **{sum(ours.values()):g}** | **{sum(base['openstack_calls'].values())}** |")
    return out + [""]


def _s1_ssh(runs: list[dict], s1: list[dict]) -> list[str]:
    scenario = scenarios.s1_ssh()
    out = [
        "## S1 with `ready: ssh`: reachable against Nova's ACTIVE",
        "",
        f"S1 again (`python -m bench.run S1-ssh`), with the label `ready: ssh`: each simulated sshd answers "
        f"{scenario.ready_seconds:g} s after",
        "Nova's ACTIVE (security groups open to all), and an instance is ACTIVE in the API only once its",
        "banner was read. In the same runs: when Nova said ACTIVE and when the watcher first read each",
        "banner (the simulator's records), and when the app called the instance ACTIVE (its log).",
        "",
        "| time to … | Nova ACTIVE | banner read | ACTIVE in the API (`ready: ssh`) | S1's ACTIVE (`ready: active`) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in (("first", "first"), ("half", "50"), ("p90", "90"), ("all", "100")):
        nova = spread([r["nova"]["active_times"][key] for r in runs])
        banner = spread([r["nova"]["banner_times"][key] for r in runs])
        out.append(f"| {label} | {nova} | {banner} | {spread(_all_times(runs, key))} | {spread(_all_times(s1, key))} |")
    lag = spread([r["nova"]["reachable_after_active_median"] for r in runs], digits=2)
    worst = spread([r["nova"]["reachable_after_active_max"] for r in runs], digits=2)
    failovers = counts_median([r["failovers_by_class"] for r in runs])
    return out + [
        "",
        f"- ACTIVE in the API after Nova's ACTIVE, per instance: median {lag}, worst {worst} "
        f"(sshd takes {scenario.ready_seconds:g} s of it; the rest is the watcher's rounds: a check made before sshd "
        "answers is reset, and tried again only in the next round, after its poll interval and server list).",
        f"- Failovers: {spread([r['failovers'] for r in runs], unit='', digits=0)} per run "
        f"({', '.join(f'{k} {v:g}' for k, v in failovers.items()) or 'none'}; medians); instances FAILED: "
        f"{sum(r['failed'] for r in runs)}; leaks after the teardown: {sum(sum(r['leaks'].values()) for r in runs)}.",
        "",
    ]


def s1_rate(runs: list[dict]) -> list[str]:
    """S1 plus an account that answers 429 past 10 requests a second: delivered all the same, and
    never held against it."""
    scenario = scenarios.s1_rate()
    limited = scenario.providers[-1]
    on = [r["providers"][limited.name] for r in runs]
    failovers = counts_median([r["failovers_by_class"] for r in runs])
    return [
        f"## S1-rate: S1 plus an eighth account limited to {limited.sim['rate_limit_per_second']} requests/s",
        "",
        f"`python -m bench.run S1-rate` (×{len(runs)}): S1's seven accounts plus `{limited.name}`, which the "
        f"simulator holds to {limited.sim['rate_limit_per_second']} requests a second over every API with no "
        f"burst, answering more with `429`, OVH's body and `Retry-After: {limited.sim['rate_limit_retry_after']}`. "
        "No `rate_limit_per_second` is set on our side: every 429 is the governor's to wait out.",
        "",
        "| figure | S1-rate |",
        "| --- | --- |",
        f"| ACTIVE | {spread([r['active'] for r in runs], unit='', digits=0)} of {scenario.count}; FAILED "
        f"{sum(r['failed'] for r in runs)}; servers over a cap {sum(len(r['over_cap']) for r in runs)}; leaks after "
        f"the teardown {sum(sum(r['leaks'].values()) for r in runs)} |",
        "| time to first / 50 / 90 / 100 ACTIVE | "
        + " / ".join(spread(_all_times(runs, key)) for key in ("first", "half", "p90", "all"))
        + " |",
        f"| ACTIVE on {limited.name} | {spread([p['active'] for p in on], unit='', digits=0)} |",
        f"| `429`s {limited.name} answered | {spread([p['rate_limited'] for p in on], unit='', digits=0)} "
        f"({spread([p['calls'].get('server_create', 0) for p in on], unit='', digits=0)} `POST /servers` sent to it) |",
        f"| failures recorded on {limited.name}'s health | {sum(p['faults_recorded'] for p in on)} |",
        f"| failovers | {spread([r['failovers'] for r in runs], unit='', digits=0)} "
        f"({', '.join(f'{k} {v:g}' for k, v in failovers.items()) or 'none'}; medians) |",
        "| DynamoDB writes (UpdateItem, PutItem), launch to 100 ACTIVE | "
        f"{spread([_writes(r) for r in runs], unit='', digits=0)} |",
        "",
        "A `rate_limited` failover is a create that met 429 at each of the governor's retries within its "
        "time budget: its instance goes back to PENDING with the attempt recorded, the account not excluded "
        "for it and nothing counted on its health. After a hold, all the account's waiting creates go at "
        "once and only some get through; setting `rate_limit_per_second` just under the account's limit "
        "paces them instead (not measured here).",
        "",
    ]


def warm_pool(run: dict) -> list[str]:
    """A label keeping 20 booted: requests for 20 ready in their own answer, one for 100 after."""
    rounds, big = run["rounds"], run["hundred"]
    answered = [r["answered_seconds"] for r in rounds]
    return [
        f"## P1: a warm pool of {run['pool']}",
        "",
        f"`python -m bench.pool` (seed {run['seed']}): seven simulated accounts of 20 (3 s boots, 50 ms a call, "
        f"as S1) and the label's pool at `min_ready` {run['pool']}. {len(rounds)} rounds each wait for a full "
        f"pool, POST a request for {run['pool']} and poll it until all are ACTIVE, then delete it; then one "
        "request for 100.",
        "",
        "| figure | P1 |",
        "| --- | --- |",
        f"| pool filled from nothing | {run['pool_filled_seconds']:.1f} s |",
        f"| request for {run['pool']}: POST answered, all ACTIVE in the answer (median [min–max] of "
        f"{len(rounds)}) | {spread(answered, digits=2)}; ACTIVE in the answer "
        f"{spread([r['active_in_answer'] for r in rounds], unit='', digits=0)} of {run['pool']} |",
        f"| request for 100: first {run['pool']} ACTIVE (in the POST's answer) | {big['first_20_seconds']:.2f} s |",
        f"| request for 100: all 100 ACTIVE | {big['all_100_seconds']:.1f} s |",
        f"| pool back at {run['pool']} ready after the request for 100 | {big['pool_back_seconds']:.1f} s |",
        f"| servers at once, most on one account (cap 20) | {max(big['servers_peak'].values())}; over a cap: "
        f"{len(big['over_cap'])} |",
        f"| every server gone after deleting the request and the pool | {run['servers_left_seconds']:.1f} s |",
        "",
        "A request takes the pool's ACTIVE instances in the POST itself (a plan written on the request, then "
        "one conditional write per instance, eight at once): the answer already lists them ACTIVE with their "
        "addresses. Most of the POST's time is moto's: in a profile of one POST for 20 (0.43 s), the twenty "
        "hand-overs took 0.22 s and reading the pool's instances and the providers 0.13 s, as the local "
        "DynamoDB serves calls about one at a time. The request for 100 also writes its 80 other instances "
        "before it answers. The refill starts beside the request and launches into the slots its instances "
        "leave free.",
        "",
    ]


def _floor(s1: list[dict], raw: Path) -> list[str]:
    boot = scenarios.BOOT_SECONDS
    phases = {k: median([r["phases"][k] for r in s1]) for k in s1[0]["phases"]}
    cpu = counts_median([r["cpu_seconds"] for r in s1])
    wall = median([r["wall_seconds"] for r in s1])
    floor = 2 * boot
    s1_all = median([r["times"]["all"] for r in s1])
    out = [
        "## S1: the physical floor, and where the rest goes",
        "",
        f"An instance cannot be ACTIVE before its server has booted ({boot:g} s after its create), and one",
        "that fails over boots twice: its first server reports ERROR only when its boot ends. So the",
        f"floor for S1 is about {floor:g} s plus the calls on the way. OpenMultiStack took {s1_all:.1f} s, "
        f"{s1_all - floor:.1f} s above {floor:g} s:",
        "",
        "| phase (median of runs) | seconds |",
        "| --- | --- |",
        f"| request accepted (`POST /requests`) | {median([r['accepted_seconds'] for r in s1]):.2f} |",
        f"| half of the first creates returned | {phases['created_median']:.2f} |",
        f"| last first create returned | {phases['created_max']:.2f} |",
        f"| ACTIVE seen after the boot ended: median / worst | {phases['seen_after_boot_median']:.2f} / "
        f"{phases['seen_after_boot_max']:.2f} |",
        f"| last instance ACTIVE that did not fail over | {phases['last_direct']:.2f} |",
        f"| last instance ACTIVE that failed over ({phases['failed_over']:g} did) | {phases['last_failed_over']:.2f} |",
        "",
        f"After the last first create returned ({phases['created_max']:.1f} s), the failover chain took "
        f"{phases['last_failed_over'] - phases['created_max']:.1f} s: a boot, the ERROR seen, the relaunch, a",
        "second boot, ACTIVE seen. Before it, the creates ran from the probes (one per provider, about a",
        "second in) to that last one: each needs two DynamoDB writes, and the local DynamoDB serves",
        "about a hundred a second (see below), so that window cannot shrink much on this stack.",
        "",
        f"CPU time while the 100 came up ({wall:.1f} s of wall time, 2 cores = {2 * wall:.1f} CPU-seconds): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items())
        + ". The app process holds the API, the stream pump, the workers and the watchers; moto is the",
        "local DynamoDB and Secrets Manager; sim is the simulated OpenStack.",
        "",
    ]
    for name, title in (("app", "the app process"), ("moto", "moto")):
        ours, spent = profile_summary(raw / "profile" / f"{name}.txt")
        if spent:
            out.append(f"py-spy's samples of {title} in an extra S1 run (not timed), as shares of its busy samples:")
            out.append("")
            if ours:
                out.append("- on the stack: " + "; ".join(f"`{key}` {share:.0f}%" for share, key in ours))
            out.append("- spent in (top frame): " + "; ".join(f"`{key}` {share:.0f}%" for share, key in spent))
            out.append("")
    return out


def _s2_teardown(s2: list[dict]) -> list[str]:
    torn = [r for r in s2 if "delete_seconds" in r]
    if not torn:
        return [
            "`make bench` does not tear S2 down (S1 checks teardowns and leaks); `python -m bench.run S2` does.",
            "",
        ]
    leaks = sum(sum(r["leaks"].values()) for r in torn)
    return [f"DELETE to all DELETED: {spread([r['delete_seconds'] for r in torn])}; servers leaked: {leaks}.", ""]


def _s2(s2: list[dict]) -> list[str]:
    scenario = scenarios.s2()
    dynamo = [{k.split(":", 1)[1]: v for k, v in r["aws_calls"].items() if k.startswith("dynamodb:")} for r in s2]
    per_instance = [sum(d.values()) / scenario.count for d in dynamo]
    by_op = counts_median(dynamo)
    sweep_calls = counts_median([r["sweep"]["openstack_calls"] for r in s2])
    sweep_dynamo = counts_median(
        [{k: v for k, v in r["sweep"]["aws_calls"].items() if k.startswith("dynamodb:")} for r in s2]
    )
    out = [
        "## S2: 1,000 instances over 52 accounts",
        "",
        "Fifty accounts of 20 hold exactly 1,000 instances, so the two failing accounts come on top of",
        "them: one in maintenance and one whose every build ends in ERROR; boot 3 s, latency 50 ms.",
        "",
        "| figure | median [min–max] |",
        "| --- | --- |",
        f"| time to first ACTIVE | {spread(_all_times(s2, 'first'))} |",
        f"| time to 500 ACTIVE | {spread(_all_times(s2, 'half'))} |",
        f"| time to all 1,000 ACTIVE | {spread(_all_times(s2, 'all'))} |",
        f"| last first create returned | {spread([r['phases']['created_max'] for r in s2])} |",
        f"| ACTIVE seen after the boot ended: median | {spread([r['phases']['seen_after_boot_median'] for r in s2])} |",
        f"| ACTIVE seen after the boot ended: worst | {spread([r['phases']['seen_after_boot_max'] for r in s2])} |",
        f"| failovers | {spread([r['failovers'] for r in s2], unit='', digits=0)} |",
        f"| DynamoDB operations per instance, launch to ACTIVE | {spread(per_instance, unit='', digits=1)} |",
        f"| one sweeper pass with 1,000 ACTIVE | {spread([r['sweep']['seconds'] for r in s2], digits=2)} |",
        "",
        *_s2_teardown(s2),
        "DynamoDB operations from the request to all ACTIVE (median per run): "
        + ", ".join(f"{k} {v:g}" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1]))
        + ".",
        "",
        "The creates, two writes each, keep moto busy until the last returns; the watchers' writes",
        "(ACTIVE with addresses) wait behind them, which is why ACTIVE is seen late in S2 and not in S1.",
        "",
        "One sweeper pass: OpenStack calls "
        + ", ".join(f"{k} {v:g}" for k, v in sweep_calls.items())
        + "; DynamoDB operations "
        + ", ".join(f"{k.split(':', 1)[1]} {v:g}" for k, v in sweep_dynamo.items())
        + ".",
        "",
    ]
    return out


def _writes(run: dict) -> int:
    return run["aws_calls"].get("dynamodb:UpdateItem", 0) + run["aws_calls"].get("dynamodb:PutItem", 0)


def _store(store: dict, s1: list[dict], s2: list[dict]) -> list[str]:
    """moto's own speed, and the floor it puts under S1 and S2."""
    rate = store["update"]["per_second"]
    s1_writes = median([_writes(r) for r in s1])
    out = [
        "## What stands in the way: the local DynamoDB",
        "",
        f"moto, the local stack's DynamoDB, serves {rate:.0f} conditional updates per second at most on this",
        f"machine ({store['update']['moto_cpu_ms']:.1f} ms of its CPU each, 16 clients; `python -m bench.store`),",
        f"and a query returning 20 instances costs it {store['query']['moto_cpu_ms']:.0f} ms: it runs on one core,",
        "and about half of each operation is building and serialising its response. An instance needs",
        "two writes before its boot can start (its claim before the create, its server id after it)",
        "and one when it is ACTIVE; they cannot be fewer without a server that no record knows of.",
        f"S1's 100 instances made {s1_writes:g} writes (median), so moto alone needs "
        f"{s1_writes / rate:.1f} s for them, {200 / rate:.1f} s of it before the last boot can start.",
    ]
    if s2:
        ops = median([sum(v for k, v in r["aws_calls"].items() if k.startswith("dynamodb:")) for r in s2])
        writes = median([_writes(r) for r in s2])
        out.append(
            f"S2 made {ops:g} DynamoDB operations ({writes:g} writes): at least {writes / rate:.0f} s of moto"
            " for the writes alone."
        )
    return out + [
        "On DynamoDB these writes take a few milliseconds each and run in parallel: the floor is a",
        "local one, and the figures above are the local stack's, not the service's.",
        "",
    ]


def _cold(cold: dict) -> list[str]:
    package = cold["package"]
    return [
        "## Cold start",
        "",
        "Imports a new container does before its first event, in fresh interpreters with the prod",
        "stage's environment (tracing on):",
        "",
        "| function | imports | median [min–max] |",
        "| --- | --- | --- |",
        f"| API handler | `app` | {spread(cold['imports']['api'], digits=3)} |",
        f"| stream worker | `app`, then the launch path | {spread(cold['imports']['worker'], digits=3)} |",
        f"| sweeper | `app`, then the sweeper | {spread(cold['imports']['sweeper'], digits=3)} |",
        "",
        f"Deployment package (`python -m infra package`, stage prod): {package['zip_bytes'] / 2**20:.1f} MiB zipped, "
        f"{package['unzipped_bytes'] / 2**20:.1f} MiB unzipped, {package['files']} files "
        f"(Lambda's limit: 50 MiB zipped, 250 MiB unzipped).",
        "",
    ]


def _method(base: dict) -> list[str]:
    return [
        "## How it is measured",
        "",
        "- Times run from the `POST /requests` call. Each instance's ACTIVE time is the timestamp of the",
        "  app's own log record of that transition (millisecond resolution), so the measuring adds no",
        "  polling. DynamoDB operations are counted in botocore (every call the app process makes);",
        "  OpenStack calls, `servers_peak` and leaks are the simulator's own counters.",
        "- Before the request, one sweeper pass has checked every provider, as it would have in a",
        "  running service; the sweeper then runs every 60 s, as deployed, and watchers poll every 0.5 s.",
        "  Tracing is off (the deployed stages have it on).",
        "- Leaks are the servers still on any provider once every instance is DELETED.",
        "- The baseline runs the user's loop (`create_server(wait=True)` on each provider in order,",
        "  the next one on any exception) against its own simulator with the same settings. As",
        "  written it would take over ten minutes, more than `make bench` may spend, so its instances",
        f"  are shared over {base['lanes']} threads each running the same sequential loop; the sequential script's",
        "  time to the n-th ACTIVE is the sum of the first n instances' durations.",
        "  `python -m bench.baseline S1 --lanes 1` runs it as written.",
        *_sequential(base),
    ]


def _sequential(base: dict) -> list[str]:
    """The check of the lanes' estimate against the script run as written, when kept."""
    path = Path(__file__).with_name("baseline-sequential.json")
    if not path.exists():
        return []
    written = json.loads(path.read_text())
    estimate, real = base["times"]["all"], written["times"]["all"]
    same = written["failures"] == base["failures"] and written["leaks"] == base["leaks"]
    return [
        f"- The estimate checked against the script run as written ({written.get('measured', 'date unknown')}, kept in",
        f"  `bench/baseline-sequential.json`): 100 ACTIVE after {real:.0f} s, with {written['failures']} failed tries"
        f" and {sum(written['leaks'].values())} servers leaked{' (the same)' if same else ''}; this run's",
        f"  {base['lanes']}-lane estimate is {estimate:.0f} s ({100 * (estimate / real - 1):+.0f} %).",
    ]


def plot(s1: list[dict], base: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ours, both) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for n, run in enumerate(s1, 1):
        times = run["active_times"]
        ours.step([0, *times], range(len(times) + 1), where="post", label=f"run {n}")
        both.step(
            [0.1, *times],
            range(len(times) + 1),
            where="post",
            color="tab:blue",
            alpha=0.6,
            label="OpenMultiStack" if n == 1 else None,
        )
    ours.axvline(S1_TARGET_SECONDS, color="tab:red", linestyle="--", label=f"target {S1_TARGET_SECONDS:g} s")
    ours.axvline(2 * scenarios.BOOT_SECONDS, color="grey", linestyle=":", label="floor (two boots)")
    ours.set(title="S1: OpenMultiStack", xlabel="seconds since POST /requests", ylabel="instances ACTIVE")
    ours.legend(loc="lower right")
    times = base["active_times"]
    both.step([0.1, *times], range(len(times) + 1), where="post", color="tab:orange", label="baseline script")
    both.set_xscale("log")
    both.set(title="S1: against the baseline (log time)", xlabel="seconds since start", ylabel="instances ACTIVE")
    both.legend(loc="upper left")
    for axis in (ours, both):
        axis.grid(alpha=0.3)
        axis.set_ylim(0, 105)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
