"""The benchmark harness (bench/): its arithmetic, its report, and one small run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import baseline, report, run, scenarios

ROOT = Path(__file__).resolve().parent.parent


def test_the_sequential_scripts_times_are_running_sums_of_instance_durations():
    assert baseline.cumulative([2.0, 3.0, 5.5]) == [2.0, 5.0, 10.5]
    times = [float(n) for n in range(1, 101)]
    assert run.percentile_times(times, 100) == {"first": 1.0, "half": 50.0, "p90": 90.0, "all": 100.0}
    assert run.percentile_times(times[:40], 100)["all"] is None  # never reached: no figure is made up


def test_spread_is_the_median_with_min_and_max_and_admits_a_missing_run():
    assert report.spread([3.0, 1.0, 2.0]) == "2.0 s [1.0–3.0]"
    assert report.spread([7.25]) == "7.2 s"
    assert report.spread([1.0, None]) == "n/a"
    assert report.counts_median([{"a": 1}, {"a": 3, "b": 2}, {"a": 2}]) == {"a": 2, "b": 0}


def test_the_profile_summary_counts_a_function_once_per_sample(tmp_path):
    stacks = tmp_path / "app.txt"
    stacks.write_text(
        "run (threading.py:10);launch (chalicelib/launcher.py:5);launch (chalicelib/launcher.py:9) 3\n"
        "run (threading.py:10);list (openstack/resource.py:7) 1\n"
    )
    ours, spent = report.profile_summary(stacks)
    assert ours == [(75.0, "chalicelib.launcher: launch")]  # once per sample, though twice on its stack
    assert spent == [(75.0, "chalicelib.launcher"), (25.0, "openstack.resource")]


def test_a_small_run_end_to_end_writes_the_report_and_its_plot(tmp_path):
    """The harness itself, on the smoke scenario: a fresh local stack and simulator, instances up
    on the provider that works, torn down, nothing leaked, and a report made of the result."""
    out = tmp_path / "smoke.json"
    subprocess.run(
        [sys.executable, "-m", "bench.run", "smoke", "--sweep-pass", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    assert result["active"] == 6 and result["failed"] == 0
    assert result["providers"]["b"]["active"] == 6
    assert result["failovers_by_class"].get("build_failed", 0) >= 1  # "a" was tried and failed over
    assert sum(result["leaks"].values()) == 0 and result["not_deleted"] == 0 and not result["over_cap"]
    assert result["aws_calls"]["dynamodb:UpdateItem"] > 0 and result["openstack_calls"]["server_create"] >= 6
    assert result["sweep"]["openstack_calls"]["server_list"] == 2

    # The report from this result standing in for every scenario (figures only need to be there).
    s1 = dict(result, providers={p.name: result["providers"]["b"] for p in scenarios.s1().providers})
    nova = {"active_times": {"first": 0.5, "half": 3.0, "p90": 4.0, "all": None}, "banner_times": result["times"]}
    results = {
        "started": "now",
        "s1": [s1, s1],
        "s1_ssh": [dict(s1, nova=dict(reachable_after_active_median=1.2, reachable_after_active_max=2.5, **nova))],
        "s2": [result],
        "baseline": dict(result, failures=3, leaks={"p6": 2}, active_times=[5.0, 10.0, 15.0], lanes=20),
        "cold": {
            "runs": 2,
            "imports": {"api": [0.2, 0.3], "worker": [0.9, 1.0], "sweeper": [0.8, 0.9]},
            "package": {"zip_bytes": 30 << 20, "unzipped_bytes": 60 << 20, "files": 100, "build_seconds": 9.0},
        },
    }
    results["baseline"]["times"] = {"first": 5.0, "half": 400.0, "p90": 700.0, "all": 800.0}
    document = tmp_path / "RESULTS.md"
    report.write(results, tmp_path, document)
    text = document.read_text()
    assert "## Targets" in text and "## S1" in text and "## S2" in text and "## Cold start" in text
    assert "## S1 with `ready: ssh`" in text and "| 100 | n/a |" in text and "median 1.20 s, worst 2.50 s" in text
    assert "| API handler cold import | < 0.5 s | 0.25 s [0.20–0.30] | met |" in text
    assert (tmp_path / report.PLOT).read_bytes().startswith(b"\x89PNG")
