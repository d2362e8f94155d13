"""Pure logic of the CLI's output: durations, tables, the --wait progress line, inventories."""

from __future__ import annotations

import json

import pytest

from oms_cli import output
from oms_cli.client import CliError


@pytest.mark.parametrize(
    ("text", "minutes"), [("45m", 45), ("90", 90), ("1h", 60), ("1h30m", 90), ("2H", 120), ("120s", 2)]
)
def test_durations(text, minutes):
    assert output.minutes(text) == minutes


@pytest.mark.parametrize(("text", "seconds"), [("40s", 40), ("15m", 900), ("2m30s", 150), ("1h0m5s", 3605), ("3", 180)])
def test_waits_may_be_in_seconds(text, seconds):
    assert output.seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1d", "m", "s", "-5", "\u00b2", "5s3m"])
def test_bad_durations_name_the_form(text):
    with pytest.raises(CliError, match="not a duration"):
        output.seconds(text)


def test_a_lifetime_is_whole_minutes():
    with pytest.raises(CliError, match="whole number of minutes"):
        output.minutes("45s")


def instance(name, state, provider, attempts=(), ipv4=("10.0.0.1",)):
    return {
        "id": "i-" + name,
        "name": name,
        "state": state,
        "provider": provider,
        "addresses": {"ipv4": list(ipv4), "ipv6": []},
        "attempts": list(attempts),
        "expires_at": None,
    }


def request(*instances):
    counts = dict.fromkeys(("PENDING", "LAUNCHING", "BUILDING", "ACTIVE", "DELETING", "DELETED", "FAILED"), 0)
    for i in instances:
        counts[i["state"]] += 1
    return {"count": len(instances), "counts": counts, "instances": list(instances)}


def test_progress_shows_active_spread_failovers_and_failures():
    attempt = {"provider": "p1", "error": "quota", "message": "Quota exceeded", "at": "2026-01-01T00:00:00Z"}
    r = request(
        instance("a", "ACTIVE", "p2", [attempt]),
        instance("b", "ACTIVE", "p3"),
        instance("c", "BUILDING", "p2"),
        instance("d", "FAILED", None),
    )
    assert output.progress_line(r, width=8) == "[####....] 2/4 ACTIVE  p2:1 p3:1  failovers 1  FAILED 1"
    seen: set = set()
    assert output.failover_lines(r, seen) == ["a: p1 failed (quota: Quota exceeded)"]
    assert output.failover_lines(r, seen) == []  # each failover is told once


def test_progress_and_timeouts_say_why_instances_wait_and_until_when():
    r = request(instance("a", "ACTIVE", "p2"), instance("b", "PENDING", None))
    r["waiting"] = {"count": 1, "reasons": {"all accounts full": 1}, "ready_eta": "2026-01-01T10:00:00Z"}
    assert output.progress_line(r, width=2).endswith("waiting 1: all accounts full, ready by 2026-01-01T10:00:00Z")
    r["waiting"] = {"count": 3, "reasons": {"all accounts full": 2, "none healthy": 1}, "ready_eta": None}
    assert output.waiting_text(r["waiting"]) == "waiting 3: all accounts full (2), none healthy (1), no ETA yet"


def test_launch_times_read_as_median_and_p90():
    times = {"samples": 12, "boot_seconds": {"median": 2.1, "p90": 3.0}, "ready_seconds": {"median": 40.2, "p90": 95.0}}
    assert output.launch_times(times) == "boot 2.1 s (p90 3.0), ready 40.2 s (p90 95.0), 12 launches"
    assert output.launch_times({"samples": 0}) == "not measured yet"


def test_tables_line_up_and_show_missing_values_as_dashes():
    text = output.table(
        [{"name": "a", "ipv4": ["1.2.3.4", "5.6.7.8"]}, {"name": "long-name", "ipv4": []}], ["name", "ipv4"]
    )
    assert text.splitlines() == ["NAME       IPV4", "a          1.2.3.4,5.6.7.8", "long-name  -"]


def test_inventories_hold_only_active_instances_with_an_address():
    instances = [instance("a", "ACTIVE", "p1"), instance("b", "BUILDING", "p1"), instance("c", "ACTIVE", "p2", ipv4=())]
    ansible = json.loads(output.inventory(instances, "ansible"))
    assert list(ansible["all"]["hosts"]) == ["a"] and ansible["all"]["hosts"]["a"]["ansible_host"] == "10.0.0.1"
    assert output.inventory(instances, "ssh-config", user="ubuntu") == "Host a\n    HostName 10.0.0.1\n    User ubuntu"
    assert output.inventory(instances, "csv").splitlines()[1] == "a,i-a,p1,10.0.0.1,10.0.0.1,"


def test_known_hosts_lines_and_an_ssh_config_that_trusts_exactly_them():
    with_keys = {
        **instance("web-1", "ACTIVE", "p1"),
        "access_ip": "203.0.113.7",
        "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "ecdsa-sha2-nistp256 AAAAE2VjZHNh"],
    }
    without = {**instance("web-2", "ACTIVE", "p1", ipv4=("10.0.0.2",)), "host_keys": []}
    gone = {**instance("web-3", "DELETED", "p1"), "host_keys": ["ssh-ed25519 AAAA"]}
    assert output.known_hosts([with_keys, without, gone]) == (
        "203.0.113.7 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n203.0.113.7 ecdsa-sha2-nistp256 AAAAE2VjZHNh\n"
    )
    config = output.inventory([with_keys, without], "ssh-config", "ubuntu", "/tmp/oms_known_hosts")
    first, second = config.split("\n\n")
    assert "HostName 203.0.113.7" in first and "UserKnownHostsFile /tmp/oms_known_hosts" in first
    assert "StrictHostKeyChecking yes" in first
    assert "UserKnownHostsFile" not in second  # no keys known: ssh's own rules apply


def test_a_start_is_a_date_time_or_a_duration_from_now():
    from datetime import UTC, datetime, timedelta

    assert output.start_at("2026-12-02T09:00:00Z") == "2026-12-02T09:00:00Z"
    start = datetime.strptime(output.start_at("+2m"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((start - datetime.now(UTC) - timedelta(minutes=2)).total_seconds()) < 5
    with pytest.raises(CliError):
        output.start_at("+soon")


def test_a_scheduled_request_shows_its_start_and_admission():
    assert output.scheduled_text({"start_at": None}) is None
    request = {
        "start_at": "2026-12-02T09:00:00Z",
        "launch_at": "2026-12-02T08:58:45Z",
        "admission": {"status": "at_risk", "reason": "needs 3; ...", "capacity": 1, "needed": 3},
    }
    assert output.scheduled_text(request) == (
        "starts at 2026-12-02T09:00:00Z, launch at 2026-12-02T08:58:45Z\nadmission at_risk: needs 3; ..."
    )
