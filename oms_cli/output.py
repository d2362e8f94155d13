"""What the CLI prints: tables for people, JSON for scripts, inventories for the next tool."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from oms_cli.client import CliError

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def seconds(text: str) -> int:
    """'40s', '45m', '1h', '1h30m', '2m30s' or a bare number of minutes, as seconds."""
    text = text.strip().lower()
    if text.isascii() and text.isdigit():
        return int(text) * 60
    match = _DURATION.match(text)
    if not text or not match:
        raise CliError(f"{text!r} is not a duration: use 40s, 45m, 90 (minutes), 1h or 1h30m", 2)
    hours, mins, secs = (int(part or 0) for part in match.groups())
    return hours * 3600 + mins * 60 + secs


def minutes(text: str) -> int:
    """A duration the API counts in minutes (a lifetime, an extension): whole minutes only."""
    total = seconds(text)
    if total % 60:
        raise CliError(f"{text!r} is not a whole number of minutes: lifetimes are counted in minutes (e.g. 2m)", 2)
    return total // 60


def start_at(text: str) -> str:
    """A request's start: a date-time as the API takes it, or `+DURATION` from now (+2m, +1h30m)."""
    if text.startswith("+"):
        return (datetime.now(UTC) + timedelta(seconds=seconds(text[1:]))).strftime("%Y-%m-%dT%H:%M:%SZ")
    return text  # the API says what is wrong with it, naming start_at


def scheduled_text(request: dict) -> str | None:
    """`starts at ..., launch at ...; admission at_risk: needs 3; ...` for a scheduled request."""
    if not request.get("start_at"):
        return None
    text = f"starts at {request['start_at']}, launch at {request.get('launch_at')}"
    admission = request.get("admission")
    if admission:
        text += f"\nadmission {admission['status']}: {admission['reason']}"
    return text


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


def details(item: dict) -> str:
    """One object for people: a `field: value` line each, nested values as compact JSON."""
    width = max(len(k) for k in item)
    lines = []
    for key, value in item.items():
        text = value if isinstance(value, str) else _cell(value) if value in (None, [], "") else json.dumps(value)
        lines.append(f"{key.ljust(width)}  {text}")
    return "\n".join(lines)


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain text table; missing or empty values show as '-'."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def instance_row(instance: dict) -> dict:
    return {
        "id": instance["id"],
        "name": instance["name"],
        "state": instance["state"],
        "provider": instance["provider"],
        "ipv4": instance["addresses"]["ipv4"],
        "address": _address(instance),
        "expires": instance.get("expires_at"),
    }


def rooms(capacity: dict) -> str:
    """Each limited resource's room, as the instances it takes, e.g. `instances 20, cores 10 (20 of
    20)`: the resource's own room and limit in brackets where an instance takes more than one."""
    parts = []
    for name, room in capacity.get("rooms", {}).items():
        units = f" ({room['room']} of {room['limit']})" if room["per_instance"] > 1 else ""
        parts.append(f"{name} {room['instances']}{units}")
    return ", ".join(parts)


def provider_row(provider: dict) -> dict:
    capacity = provider["capacity"]
    cap = capacity["max_instances"]
    if capacity["quota_instances"] is not None:
        cap = min(cap, capacity["quota_instances"])
    return {
        "name": provider["name"],
        "region": provider.get("region"),
        "health": "maintenance" if provider["health"].get("maintenance") else provider["health"]["state"],
        "in_use": f"{capacity['in_use']}/{cap}",
        "quota": rooms(capacity),
        "priority": provider.get("priority"),
        "enabled": "yes" if provider["enabled"] else "no",
        "labels": sorted(provider["labels"]),
        "maintenance": window(provider["maintenance"][0]) if provider.get("maintenance") else None,
        "last_error": last_error(provider["health"]),
    }


_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _days(days: list[str]) -> str:
    """Days as `oms pools set --window` takes them: a run of days as a range (mon-fri)."""
    ordered = sorted(days, key=_WEEK.index)
    first, last = _WEEK.index(ordered[0]), _WEEK.index(ordered[-1])
    if len(ordered) > 2 and last - first + 1 == len(ordered):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(ordered)


POOL_COLUMNS = ["label", "target", "ready", "booting", "min_ready", "windows", "max_idle", "key"]


def pool_row(pool: dict) -> dict:
    """A warm pool as a table row: its target now, its instances, and its schedule in short."""
    windows = ", ".join(f"{_days(w['days'])} {w['from']}-{w['to']}={w['min_ready']}" for w in pool["schedule"])
    return {
        "label": pool["label"],
        "target": pool["target"],
        "ready": pool["counts"]["ready"],
        "booting": pool["counts"]["booting"] + pool["counts"]["pending"],
        "min_ready": pool["min_ready"],
        "windows": f"{windows} ({pool['time_zone']})" if windows else "",
        "max_idle": f"{pool['max_idle_minutes']}m",
        "key": "yes" if pool.get("ssh_public_key") else "",
    }


def window(item: dict) -> str:
    """A maintenance window in one line: `START..END note`."""
    return f"{item['start']}..{item['end']}" + (f" {item['note']}" if item.get("note") else "")


def windows(items: list[dict]) -> str:
    """A provider's maintenance windows, numbered as `oms providers maintenance rm` takes them."""
    return "; ".join(f"{n}) {window(item)}" for n, item in enumerate(items, 1))


def last_error(health: dict) -> str | None:
    """The provider's last error with when it happened (it may be old: the state says if it holds)."""
    if not health["last_error"]:
        return None
    at = health.get("last_error_at")
    return f"{health['last_error']} (at {at})" if at else health["last_error"]


# --- --wait ------------------------------------------------------------------------------


def canary_step(step: dict) -> str:
    """One canary step: its name, result, time and what it found."""
    result = {True: "ok", False: "FAILED", None: "skipped"}[step["ok"]]
    failed = f" [{step['error_class']}]" if step.get("error_class") else ""
    return f"  {step['step']:<12} {result:<8} {step['seconds']:>7.2f} s  {step['detail']}{failed}"


def canary_result(canary: dict) -> str:
    if canary["state"] == "passed":
        return f"passed in {canary.get('seconds', 0):.1f} s"
    return f"failed at {canary.get('failed_step', '?')}: {canary.get('error', '')}"


def progress_line(request: dict, width: int = 30) -> str:
    """`[#####.....] 12/30 ACTIVE  p1:5 p2:7  failovers 3` for one request."""
    count = request["count"]
    active = request["counts"]["ACTIVE"]
    filled = round(width * active / count) if count else width
    spread = Counter(i["provider"] for i in request["instances"] if i["state"] == "ACTIVE")
    failovers = sum(len(i["attempts"]) for i in request["instances"])
    failed = request["counts"]["FAILED"]
    parts = [f"[{'#' * filled}{'.' * (width - filled)}] {active}/{count} ACTIVE"]
    if spread:
        parts.append(" ".join(f"{p}:{n}" for p, n in sorted(spread.items())))
    parts.append(f"failovers {failovers}")
    if failed:
        parts.append(f"FAILED {failed}")
    if request.get("waiting"):
        parts.append(waiting_text(request["waiting"]))
    return "  ".join(parts)


def waiting_text(waiting: dict) -> str:
    """`waiting 3: all accounts full, ready by 2026-01-01T10:00:00Z` for a request's waiting summary."""
    reasons = ", ".join(
        f"{reason}" if len(waiting["reasons"]) == 1 else f"{reason} ({n})" for reason, n in waiting["reasons"].items()
    )
    eta = f"ready by {waiting['ready_eta']}" if waiting.get("ready_eta") else "no ETA yet"
    return f"waiting {waiting['count']}: {reasons}, {eta}"


def launch_times(times: dict | None) -> str:
    """`boot 2.1 s (p90 3.0), ready 40.2 s (p90 95.0), 12 launches` for a provider's measurements."""
    if not times or not times.get("samples"):
        return "not measured yet"
    boot, ready = times["boot_seconds"], times["ready_seconds"]
    return (
        f"boot {boot['median']} s (p90 {boot['p90']}), ready {ready['median']} s (p90 {ready['p90']}), "
        f"{times['samples']} launches"
    )


def failover_lines(request: dict, seen: set[tuple]) -> list[str]:
    """Attempts not reported yet, one line each (they are how failovers show as they happen)."""
    lines = []
    for instance in request["instances"]:
        for attempt in instance["attempts"]:
            key = (instance["id"], attempt["provider"], attempt["at"])
            if key not in seen:
                seen.add(key)
                lines.append(
                    f"{instance['name']}: {attempt['provider']} failed ({attempt['error']}: {attempt['message']})"
                )
    return lines


# --- inventory ---------------------------------------------------------------------------

FORMATS = ("ansible", "ssh-config", "json", "csv")


def _address(instance: dict) -> str | None:
    """The address to connect to: the service's `access_ip` (chosen by type and family)."""
    if instance.get("access_ip"):
        return instance["access_ip"]
    addresses = instance["addresses"]  # a record from before access_ip was kept
    return (addresses["ipv4"] or addresses["ipv6"] or [None])[0]


def known_hosts(instances: list[dict]) -> str:
    """known_hosts lines for the ACTIVE instances whose host keys the service read from their
    consoles: ssh then trusts them without asking (no trust on first use)."""
    lines = []
    for i in instances:
        if i["state"] == "ACTIVE" and _address(i):
            lines += [f"{_address(i)} {key}" for key in i.get("host_keys") or []]
    return "\n".join(lines) + ("\n" if lines else "")


def inventory(instances: list[dict], fmt: str, user: str | None = None, known_hosts_file: str | None = None) -> str:
    """ACTIVE instances with an address, as the next tool takes them. With `known_hosts_file`, the
    ssh-config trusts exactly the host keys written there."""
    running = [i for i in instances if i["state"] == "ACTIVE" and _address(i)]
    if fmt == "ansible":
        # Ansible's YAML/JSON inventory file (`ansible -i hosts.json`): hosts map to their variables.
        hosts = {}
        for i in running:
            hosts[i["name"]] = {"ansible_host": _address(i), "oms_id": i["id"], "oms_provider": i["provider"]}
            if user:
                hosts[i["name"]]["ansible_user"] = user
        return dump({"all": {"hosts": hosts}})
    if fmt == "ssh-config":
        blocks = []
        for i in running:
            lines = [f"Host {i['name']}", f"    HostName {_address(i)}"]
            if user:
                lines.append(f"    User {user}")
            if known_hosts_file and i.get("host_keys"):
                lines += [f"    UserKnownHostsFile {known_hosts_file}", "    StrictHostKeyChecking yes"]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)
    if fmt == "json":
        return dump([{**instance_row(i), "ipv6": i["addresses"]["ipv6"], "address": _address(i)} for i in running])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["name", "id", "provider", "address", "ipv4", "ipv6"])
        for i in running:
            addresses = i["addresses"]
            writer.writerow(
                [
                    i["name"],
                    i["id"],
                    i["provider"],
                    _address(i),
                    " ".join(addresses["ipv4"]),
                    " ".join(addresses["ipv6"]),
                ]
            )
        return out.getvalue().rstrip("\n")
    raise CliError(f"unknown format {fmt}: use one of {', '.join(FORMATS)}", 2)
