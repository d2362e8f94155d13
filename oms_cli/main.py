"""`oms`: OpenMultiStack from the terminal. Every command speaks the REST API (docs/API.md)."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oms_cli import importer, output
from oms_cli.client import Client, CliError, quote, save_config

STATES = ("PENDING", "LAUNCHING", "BUILDING", "ACTIVE", "DELETING", "DELETED", "FAILED")


def out(text: str) -> None:
    print(text, flush=True)


def show(args: argparse.Namespace, data: Any, text: str) -> None:
    out(output.dump(data) if args.json else text)


# --- login -------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> int:
    client = Client(args.url, args.key)
    me = client.get("/me")
    path = save_config(client.url, client.key)
    out(f"logged in to {client.url} as {me['name']} ({me['role']}); saved in {path}")
    return 0


# --- providers ---------------------------------------------------------------------------


_LABEL_USAGE = "NAME=IMAGE,FLAVOR[,NETWORK][,ready=ssh|active][,ssh_port=PORT]"


def _label(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition("=")
    parts = [p for p in rest.split(",") if "=" not in p]
    options = dict(p.split("=", 1) for p in rest.split(",") if "=" in p)
    if not name or len(parts) not in (2, 3) or not all(parts) or set(options) - {"ready", "ssh_port"}:
        raise CliError(f"--label {text!r}: use {_LABEL_USAGE}", 2)
    mapping = dict(zip(("image", "flavor", "network"), parts, strict=False))
    if "ready" in options:
        mapping["ready"] = options["ready"]
    if "ssh_port" in options:
        if not options["ssh_port"].isdigit():
            raise CliError(f"--label {text!r}: ssh_port must be a port number", 2)
        mapping["ssh_port"] = int(options["ssh_port"])
    return name, mapping


def _shared_fields(args: argparse.Namespace) -> dict:
    fields: dict[str, Any] = {}
    if args.max_instances is not None:
        fields["max_instances"] = args.max_instances
    if args.priority is not None:
        fields["priority"] = args.priority
    if args.label:
        fields["labels"] = dict(_label(text) for text in args.label)
    if getattr(args, "floating_ip", None):
        fields["floating_ip"] = args.floating_ip
    if getattr(args, "floating_network", None):
        fields["floating_network"] = args.floating_network
    if getattr(args, "ssh_security_group", None):
        fields["ssh_security_group"] = args.ssh_security_group
    if getattr(args, "canary_label", None):
        fields["canary_label"] = args.canary_label
    if getattr(args, "canary_every_hours", None) is not None:
        fields["canary_every_hours"] = args.canary_every_hours
    if getattr(args, "address_family", None):
        fields["address_family"] = args.address_family
    if getattr(args, "boot_timeout", None) is not None:
        fields["boot_timeout_seconds"] = args.boot_timeout
    if getattr(args, "multipart_user_data", None) is not None:
        fields["multipart_user_data"] = args.multipart_user_data
    if getattr(args, "rate_limit", None) is not None:
        fields["rate_limit_per_second"] = args.rate_limit
    if getattr(args, "max_concurrent_creates", None) is not None:
        fields["max_concurrent_creates"] = args.max_concurrent_creates
    return fields


_FLAG_FIELDS = (
    "auth_url",
    "region",
    "username",
    "password",
    "project_name",
    "project_id",
    "user_domain_name",
    "project_domain_name",
    "application_credential_id",
    "application_credential_secret",
    "interface",
)


def _flag_fields(args: argparse.Namespace) -> dict:
    fields = {k: getattr(args, k) for k in _FLAG_FIELDS if getattr(args, k, None) is not None}
    if getattr(args, "insecure", False):
        fields["verify_tls"] = False
    return {**fields, **_shared_fields(args)}


def cmd_providers_list(args: argparse.Namespace, client: Client) -> int:
    items = client.all("/providers")
    columns = [
        "name",
        "region",
        "health",
        "in_use",
        "quota",
        "priority",
        "enabled",
        "labels",
        "maintenance",
        "last_error",
    ]
    show(args, items, output.table([output.provider_row(p) for p in items], columns))
    return 0


def cmd_providers_show(args: argparse.Namespace, client: Client) -> int:
    provider = client.get(f"/providers/{quote(args.name)}")
    shown = {**provider, "quota": output.rooms(provider["capacity"])}
    shown["launch_times"] = output.launch_times(provider.get("launch_times"))
    if "maintenance" in provider:
        shown["maintenance"] = output.windows(provider["maintenance"])
    show(args, provider, output.details(shown))
    return 0


def _when(text: str, flag: str) -> str:
    """An ISO 8601 time as the API takes it (a time without an offset is UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag} {text!r}: use an ISO 8601 time such as 2026-11-25T17:00:00Z", 2) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_maintenance_add(args: argparse.Namespace, client: Client) -> int:
    path = f"/providers/{quote(args.name)}"
    window = {"start": _when(args.start, "--start"), "end": _when(args.end, "--end"), "note": args.note or ""}
    windows = client.get(path)["maintenance"]
    provider = client.call("PATCH", path, {"maintenance": [*windows, window]})
    show(args, provider, f"{provider['name']} maintenance: {output.windows(provider['maintenance'])}")
    return 0


def cmd_maintenance_rm(args: argparse.Namespace, client: Client) -> int:
    path = f"/providers/{quote(args.name)}"
    windows = client.get(path)["maintenance"]
    if args.which.isdigit():
        keep = [w for n, w in enumerate(windows, 1) if n != int(args.which)]
    else:
        start = _when(args.which, "WINDOW")
        keep = [w for w in windows if w["start"] != start]
    if len(keep) == len(windows):
        raise CliError(f"{args.name} has no maintenance window {args.which} (see oms providers show)", 1)
    provider = client.call("PATCH", path, {"maintenance": keep})
    show(args, provider, f"{provider['name']} maintenance: {output.windows(provider['maintenance']) or 'none'}")
    return 0


def cmd_providers_add(args: argparse.Namespace, client: Client) -> int:
    body = {"name": args.name, **_flag_fields(args)}
    if args.username and "password" not in body:
        if not sys.stdin.isatty():
            raise CliError("no --password given and no terminal to ask for it on", 2)
        body["password"] = getpass.getpass(f"password for {args.username} at {args.name}: ")
    provider = client.call("POST", "/providers", body)
    show(args, provider, f"added provider {provider['name']} ({provider['auth_type']})")
    return 0


def cmd_providers_edit(args: argparse.Namespace, client: Client) -> int:
    body = _flag_fields(args)
    if not body:
        raise CliError("nothing to change: give at least one option (see oms providers edit --help)", 2)
    provider = client.call("PATCH", f"/providers/{quote(args.name)}", body)
    show(args, provider, f"changed provider {provider['name']}")
    return 0


def cmd_providers_rm(args: argparse.Namespace, client: Client) -> int:
    for name in args.names:
        client.call("DELETE", f"/providers/{quote(name)}")
        out(f"removed provider {name}")
    return 0


def cmd_providers_check(args: argparse.Namespace, client: Client) -> int:
    if args.boot:
        return _boot_canary(args, client)
    provider = client.call("POST", f"/providers/{quote(args.name)}/check", {})
    health = provider["health"]
    error = output.last_error(health)
    text = f"{provider['name']}: {health['state']}" + (f" ({error})" if error else "")
    show(args, provider, text)
    return 0 if health["state"] == "healthy" else 1


def _boot_canary(args: argparse.Namespace, client: Client) -> int:
    """Start a canary boot and, unless --no-wait, print its steps as they end, then its result."""
    timeout = output.seconds(args.timeout)
    path = f"/providers/{quote(args.name)}"
    canary = client.call("POST", f"{path}/check", {"boot": args.boot})["canary"]
    if not args.json:
        out(f"canary {canary['id']}: booting {canary['label']} on {args.name}")
    shown = 0
    deadline = time.monotonic() + timeout
    while not args.no_wait and canary["state"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
        now = client.get(path)["canary"]
        if not now or now["id"] != canary["id"]:
            raise CliError(f"the canary {canary['id']} on {args.name} was replaced by another", 1)
        canary = now
        if not args.json:
            for step in canary["steps"][shown:]:
                out(output.canary_step(step))
            shown = len(canary["steps"])
    if args.json:
        out(output.dump(canary))
    elif canary["state"] != "running":
        out(output.canary_result(canary))
    else:
        waited = "started" if args.no_wait else f"still running after {args.timeout}"
        out(f"{waited}: follow it with `oms providers show {args.name}`")
    if canary["state"] == "running":
        return 0 if args.no_wait else 1
    return 0 if canary["state"] == "passed" else 1


def _set_enabled(enabled: bool):
    def run(args: argparse.Namespace, client: Client) -> int:
        for name in args.names:
            client.call("PATCH", f"/providers/{quote(name)}", {"enabled": enabled})
            out(f"{'enabled' if enabled else 'disabled'} provider {name}")
        return 0

    return run


def cmd_providers_import(args: argparse.Namespace, client: Client) -> int:
    if args.clouds_yaml and args.env_file:
        raise CliError("give --clouds-yaml FILE or --env-file FILE, not both", 2)
    if args.env_file:
        if not args.name:
            raise CliError("--env-file needs --name: an env file does not name its cloud", 2)
        found = [(args.name, importer.from_env_file(args.env_file))]
    else:
        found = importer.from_clouds_yaml(args.clouds_yaml, args.cloud or os.environ.get("OS_CLOUD") or None)
        if args.name:
            if len(found) != 1:
                raise CliError("--name needs exactly one cloud: add --cloud NAME", 2)
            found = [(args.name, found[0][1])]
    shared = _shared_fields(args)
    created = []
    for cloud, body in found:
        name = importer.provider_name(args.prefix + cloud)
        provider = client.call("POST", "/providers", {**body, **shared, "name": name})
        created.append(provider)
        if not args.json:
            out(f"imported {cloud} as provider {name} ({provider['auth_type']}, region {provider['region'] or '-'})")
    if args.json:
        out(output.dump(created))
    return 0


# --- requests and instances ----------------------------------------------------------------


def _read(path: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_bytes().decode()
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{what} {path} is not UTF-8 text") from None


def _public_key(path: str) -> str:
    text = _read(path, "SSH key").strip()
    if "PRIVATE KEY" in text:
        raise CliError(f"{path} is a private key: give the public one ({path}.pub), which is all a server needs", 2)
    return text


_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^(?P<days>[a-z,-]+)\s+(?P<start>\d\d:\d\d)-(?P<end>\d\d:\d\d)=(?P<count>\d+)$")


def _pool_window(text: str) -> dict:
    """'mon-fri 08:00-18:00=20' (days as ranges or lists: sat,sun) as the API takes a window."""
    match = _WINDOW.match(text.strip().lower())
    if match is None:
        raise CliError(f"--window {text!r}: write it as DAYS HH:MM-HH:MM=COUNT, e.g. 'mon-fri 08:00-18:00=20'", 2)
    days: list[str] = []
    for part in match["days"].split(","):
        first, _, last = part.partition("-")
        if first not in _DAY_NAMES or (last and last not in _DAY_NAMES):
            raise CliError(f"--window {text!r}: days are {', '.join(_DAY_NAMES)} (ranges such as mon-fri)", 2)
        span = _DAY_NAMES[_DAY_NAMES.index(first) : _DAY_NAMES.index(last or first) + 1]
        days += [d for d in span if d not in days]
    return {"days": days, "from": match["start"], "to": match["end"], "min_ready": int(match["count"])}


def cmd_pools_list(args: argparse.Namespace, client: Client) -> int:
    items = client.get("/pools")["items"]
    show(args, items, output.table([output.pool_row(p) for p in items], output.POOL_COLUMNS))
    return 0


def cmd_pools_set(args: argparse.Namespace, client: Client) -> int:
    body: dict[str, Any] = {"min_ready": args.min_ready, "time_zone": args.time_zone}
    if args.window:
        body["schedule"] = [_pool_window(w) for w in args.window]
    if args.max_idle:
        body["max_idle_minutes"] = output.minutes(args.max_idle)
    if args.ssh_key:
        body["ssh_public_key"] = _public_key(args.ssh_key)
    pool = client.call("PUT", f"/pools/{quote(args.label)}", body)
    show(args, pool, f"pool {pool['label']}: keeps {pool['target']} ready now\n" + output.details(pool))
    return 0


def cmd_pools_rm(args: argparse.Namespace, client: Client) -> int:
    client.call("DELETE", f"/pools/{quote(args.label)}")
    out(f"removed pool {args.label}: its idle instances are being deleted")
    return 0


def cmd_request(args: argparse.Namespace, client: Client) -> int:
    timeout = output.seconds(args.timeout)  # every argument is checked before anything is created
    body: dict[str, Any] = {"label": args.label, "count": args.count, "lifetime_minutes": output.minutes(args.lifetime)}
    if args.ssh_key:
        body["ssh_public_key"] = _public_key(args.ssh_key)
    if args.user_data:
        body["user_data"] = _read(args.user_data, "user data")
    if args.name_prefix:
        body["name_prefix"] = args.name_prefix
    if args.callback_url:
        body["callback_url"] = args.callback_url
    if args.start_at:
        body["start_at"] = output.start_at(args.start_at)
    request = client.call("POST", "/requests", body)
    scheduled = output.scheduled_text(request)
    if not args.wait:
        pooled = sum(1 for i in request["instances"] if i.get("pooled_at"))
        warm = f", {pooled} ready from the warm pool" if pooled else ""
        text = f"requested {request['count']} x {request['label']}: {request['id']} ({request['state']}{warm})"
        show(args, request, text + (f"\n{scheduled}" if scheduled else ""))
        return 0
    if scheduled and not args.json:
        sys.stderr.write(scheduled + "\n")
    try:
        request = wait(client, request, timeout)
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; {request['id']} goes on (oms show {request['id']})", 130) from None
    instances = sorted(request["instances"], key=lambda i: i["name"])
    text = output.table([output.instance_row(i) for i in instances], ["name", "state", "provider", "address", "id"])
    show(args, request, f"{request['id']}: {request['counts']['ACTIVE']}/{request['count']} ACTIVE\n{text}")
    return 0 if request["counts"]["ACTIVE"] == request["count"] else 1


SCHEDULED_POLL_SECONDS = 2.0  # how often --wait looks at a request still scheduled


def wait(client: Client, request: dict, timeout: float) -> dict:
    """Poll until every instance is ACTIVE, the request can get no further, or `timeout` s pass.
    Progress goes to stderr (stdout stays for the result): on a terminal one line redrawn in
    place, elsewhere a line whenever it changes, and a line for each failover as it happens.
    """
    tty = sys.stderr.isatty()
    deadline = time.monotonic() + timeout
    seen: set[tuple] = set()
    last = None
    while True:
        request = client.get(f"/requests/{quote(request['id'])}")
        if request["state"] == "scheduled":  # not launched yet: the timeout counts from the launch
            line = f"scheduled: starts at {request['start_at']}, launch at {request['launch_at']}"
            if line != last:
                sys.stderr.write(("\r\033[K" if tty else "") + line + ("" if tty else "\n"))
                sys.stderr.flush()
            last = line
            deadline = time.monotonic() + timeout
            time.sleep(SCHEDULED_POLL_SECONDS)
            continue
        for line in output.failover_lines(request, seen):
            sys.stderr.write(("\r\033[K" if tty else "") + line + "\n")
        line = output.progress_line(request)
        if tty:
            sys.stderr.write("\r\033[K" + line)
        elif line != last:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        last = line
        counts = request["counts"]
        on_the_way = counts["PENDING"] + counts["LAUNCHING"] + counts["BUILDING"]
        if counts["ACTIVE"] == request["count"] or not on_the_way or time.monotonic() > deadline:
            if tty:
                sys.stderr.write("\n")
            if counts["ACTIVE"] < request["count"]:
                why = "timed out" if on_the_way else "gave up"
                waiting = f"; {output.waiting_text(request['waiting'])}" if request.get("waiting") else ""
                sys.stderr.write(f"{why}: {counts['ACTIVE']} of {request['count']} ACTIVE{waiting}\n")
            return request
        time.sleep(1.0)


def cmd_ls(args: argparse.Namespace, client: Client) -> int:
    items = client.all(
        "/instances", state=args.state, provider=args.provider, request_id=args.request, label=args.label
    )
    columns = ["id", "name", "state", "provider", "ipv4", "expires"]
    show(args, items, output.table([output.instance_row(i) for i in items], columns))
    return 0


def cmd_show(args: argparse.Namespace, client: Client) -> int:
    kind = "requests" if args.id.startswith("r-") else "instances"
    item = client.get(f"/{kind}/{quote(args.id)}")
    show(args, item, output.details(item))
    return 0


def cmd_rm(args: argparse.Namespace, client: Client) -> int:
    for instance_id in args.ids:
        instance = client.call("DELETE", f"/instances/{quote(instance_id)}")
        out(f"{instance_id}: {instance['state']}")
    return 0


def cmd_extend(args: argparse.Namespace, client: Client) -> int:
    if not args.id.startswith("r-"):
        raise CliError("extend works on a request (r-...): its instances all move together", 2)
    request = client.call("POST", f"/requests/{quote(args.id)}/extend", {"minutes": output.minutes(args.duration)})
    lines = [f"{request['id']} now expires at {request['expires_at']}"]
    lines += [f"warning: {w['message']}" for w in request.get("warnings", [])]
    show(args, request, "\n".join(lines))
    return 0


def cmd_delete_request(args: argparse.Namespace, client: Client) -> int:
    request = client.call("DELETE", f"/requests/{quote(args.id)}")
    show(args, request, f"{request['id']}: {request['state']} ({request['count']} instances)")
    return 0


def cmd_inventory(args: argparse.Namespace, client: Client) -> int:
    request = client.get(f"/requests/{quote(args.id)}")
    known = None
    if args.known_hosts:
        if args.format != "ssh-config":
            raise CliError("--known-hosts goes with --format ssh-config", 2)
        known = os.path.abspath(args.known_hosts)
        try:
            with open(known, "w", encoding="utf-8") as file:
                file.write(output.known_hosts(request["instances"]))
        except OSError as error:
            raise CliError(f"cannot write {args.known_hosts}: {error.strerror}") from None
    out(output.inventory(request["instances"], args.format, args.user, known))
    return 0


# --- the parser ------------------------------------------------------------------------------


def _provider_options(parser: argparse.ArgumentParser, *, shared_only: bool = False) -> None:
    parser.add_argument("--max-instances", type=int, help="the most instances kept there at once (default 20)")
    parser.add_argument("--priority", type=int, help="0..1000, lower is used first (default 100)")
    parser.add_argument(
        "--label",
        action="append",
        metavar=_LABEL_USAGE,
        help="a label users can request and what it means there (repeat for more; replaces the labels); "
        "ready=ssh (the default): ready once sshd answers on ssh_port (22), ready=active: once Nova says ACTIVE",
    )
    parser.add_argument(
        "--floating-ip",
        choices=("never", "auto"),
        help="auto: give each instance a floating IP (clouds that give servers only private addresses)",
    )
    parser.add_argument("--floating-network", metavar="NAME", help="the external network floating IPs come from")
    parser.add_argument(
        "--ssh-security-group",
        metavar="NAME",
        help="a security group to ensure (tcp/22 open, IPv4 and IPv6) and give every server",
    )
    parser.add_argument(
        "--canary-label", metavar="LABEL", help="with --canary-every-hours: the label a scheduled canary boots"
    )
    parser.add_argument(
        "--canary-every-hours",
        type=int,
        metavar="N",
        help="boot a canary every N hours while the provider is idle; its result counts on its health",
    )
    parser.add_argument(
        "--address-family",
        choices=("ipv4", "ipv6"),
        help="the family of the address to SSH to when a server has both (default ipv4)",
    )
    parser.add_argument(
        "--boot-timeout",
        type=int,
        metavar="SECONDS",
        help="30..7200: how long an instance there may take to be ready (default: the deployment's)",
    )
    parser.add_argument(
        "--multipart-user-data",
        action=argparse.BooleanOptionalAction,
        help="--no-multipart-user-data for clouds that refuse MIME multipart user data (ConoHa)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        metavar="PER_SECOND",
        help="the most requests a second to the account, from each function instance (OVH: 20; default: "
        "no limit); a 429 with Retry-After is waited out either way and never counts on its health",
    )
    parser.add_argument(
        "--max-concurrent-creates",
        type=int,
        metavar="N",
        help="1..100: the most server creates under way there at once (default 8)",
    )
    if shared_only:
        return
    parser.add_argument("--auth-url", dest="auth_url", help="Keystone URL, e.g. https://identity.example.com/v3")
    parser.add_argument("--region")
    parser.add_argument("--username")
    parser.add_argument("--password", help="prompted for when --username is given without it")
    parser.add_argument("--project-name", dest="project_name")
    parser.add_argument("--project-id", dest="project_id")
    parser.add_argument("--user-domain-name", dest="user_domain_name")
    parser.add_argument("--project-domain-name", dest="project_domain_name")
    parser.add_argument("--app-cred-id", dest="application_credential_id", help="application credential id")
    parser.add_argument("--app-cred-secret", dest="application_credential_secret", help="application credential secret")
    parser.add_argument("--interface", choices=["public", "internal", "admin"])
    parser.add_argument("--insecure", action="store_true", help="do not verify the provider's TLS certificate")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="oms",
        description="OpenMultiStack from the terminal: provider accounts, requests, instances, inventories.",
        epilog="Connection: --url/--key, else OMS_URL/OMS_API_KEY, else what `oms login` saved.",
    )
    root.add_argument("--url", help="the API's address (default: OMS_URL or the saved login)")
    root.add_argument("--key", help="an API key (default: OMS_API_KEY or the saved login)")
    root.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str, parent=commands) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help, description=help)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        sub.set_defaults(handler=handler)
        return sub

    login = command("login", None, "check a URL and key and save them for the next commands (mode 0600)")
    login.add_argument("--url", default=argparse.SUPPRESS, help="the API's address, e.g. http://127.0.0.1:8000")
    login.add_argument("--key", default=argparse.SUPPRESS, help="your API key")
    login.set_defaults(login=True)

    providers = commands.add_parser("providers", help="provider accounts (admin key for changes)")
    verbs = providers.add_subparsers(dest="verb", required=True, metavar="VERB")
    command("list", cmd_providers_list, "list providers with health and capacity", verbs)
    command("show", cmd_providers_show, "one provider in full", verbs).add_argument("name")
    add = command("add", cmd_providers_add, "register a provider account", verbs)
    add.add_argument("name")
    _provider_options(add)
    edit = command("edit", cmd_providers_edit, "change a provider (a new password rotates it)", verbs)
    edit.add_argument("name")
    _provider_options(edit)
    command("rm", cmd_providers_rm, "remove providers (they must have no live instances)", verbs).add_argument(
        "names", nargs="+", metavar="NAME"
    )
    check = command(
        "check",
        cmd_providers_check,
        "check a provider's health and quota now, or prove it end to end with a canary boot (--boot)",
        verbs,
    )
    check.add_argument("name")
    check.add_argument(
        "--boot",
        metavar="LABEL",
        help="boot one server of LABEL, follow it through every step (auth, create, ACTIVE, floating IP, "
        "SSH banner, host keys), delete it, and report each step's time; exit 1 if a step failed",
    )
    check.add_argument("--no-wait", action="store_true", help="with --boot: start it and return at once")
    check.add_argument("--timeout", default="15m", help="with --boot: how long to follow it (default 15m)")
    windows = verbs.add_parser(
        "maintenance", help="announced maintenance windows: no launch that would run into one, no call during one"
    )
    window_verbs = windows.add_subparsers(dest="window_verb", required=True, metavar="VERB")
    window_add = command("add", cmd_maintenance_add, "record a maintenance window of a provider", window_verbs)
    window_add.add_argument("name")
    window_add.add_argument("--start", required=True, help="ISO 8601, e.g. 2026-11-25T17:00:00Z (no offset: UTC)")
    window_add.add_argument("--end", required=True, help="ISO 8601, after --start")
    window_add.add_argument("--note", help="what the provider announced")
    window_rm = command("rm", cmd_maintenance_rm, "remove a maintenance window of a provider", window_verbs)
    window_rm.add_argument("name")
    window_rm.add_argument("which", metavar="WINDOW", help="its number in `oms providers show`, or its start")
    command("enable", _set_enabled(True), "let providers take new launches", verbs).add_argument(
        "names", nargs="+", metavar="NAME"
    )
    command("disable", _set_enabled(False), "stop new launches on providers", verbs).add_argument(
        "names", nargs="+", metavar="NAME"
    )
    imp = command(
        "import",
        cmd_providers_import,
        "register providers from clouds.yaml (secure.yaml and vendor profiles honoured) or an OS_* env file; "
        "with neither option, the clouds.yaml the openstack CLI reads",
        verbs,
    )
    imp.add_argument(
        "--clouds-yaml",
        metavar="FILE",
        help="a clouds.yaml (secure.yaml and clouds-public.yaml beside it); default: the first of "
        "$OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml",
    )
    imp.add_argument(
        "--cloud", metavar="NAME", help="only this cloud of the clouds.yaml (default: $OS_CLOUD, else all)"
    )
    imp.add_argument("--env-file", metavar="FILE", help="an OpenStack RC file (export OS_AUTH_URL=... lines)")
    imp.add_argument("--name", help="the provider's name (needed with --env-file; default: the cloud's name)")
    imp.add_argument("--prefix", default="", help="put this before every imported provider's name")
    _provider_options(imp, shared_only=True)

    pools = commands.add_parser("pools", help="warm pools: instances kept booted per label (admin key for changes)")
    pool_verbs = pools.add_subparsers(dest="verb", required=True, metavar="VERB")
    command("list", cmd_pools_list, "list warm pools with their target and instances", pool_verbs)
    pool_set = command(
        "set",
        cmd_pools_set,
        "keep instances of a label booted and idle, so requests get them at once (replaces its settings)",
        pool_verbs,
    )
    pool_set.add_argument("label")
    pool_set.add_argument("--min-ready", type=int, required=True, help="instances kept ready outside the windows")
    pool_set.add_argument(
        "--window",
        action="append",
        metavar="'DAYS HH:MM-HH:MM=N'",
        help="keep N ready then instead, e.g. 'mon-fri 08:00-18:00=20' (repeat; the first that holds wins)",
    )
    pool_set.add_argument("--time-zone", default="UTC", help="the windows' IANA time zone (default UTC)")
    pool_set.add_argument("--max-idle", help="replace an idle instance after this long: 2h, 90m (default 2h)")
    pool_set.add_argument(
        "--ssh-key",
        metavar="FILE",
        help="boot pool instances with this public key too: requests with this key (or none) may take them; "
        "requests with another key or user data never do",
    )
    command("rm", cmd_pools_rm, "remove a warm pool (its idle instances are deleted)", pool_verbs).add_argument("label")

    request = command("request", cmd_request, "request instances of a label", commands)
    request.add_argument("--label", required=True)
    request.add_argument("--count", type=int, required=True)
    request.add_argument("--lifetime", default="60m", help="how long they live: 45m, 1h, 1h30m (default 60m)")
    request.add_argument("--ssh-key", metavar="FILE", help="a public key file, e.g. ~/.ssh/id_ed25519.pub")
    request.add_argument("--user-data", metavar="FILE", help="cloud-init user data (at most 16 KiB)")
    request.add_argument("--name-prefix", help="instance names start with this ([a-z0-9-], at most 32)")
    request.add_argument(
        "--callback-url",
        metavar="URL",
        help="POST signed events here (ready, failed, expiring): https to a public host; a receiver checks them "
        "with the key's callback_secret (POST /keys, GET /me; API.md, Callbacks)",
    )
    request.add_argument(
        "--start-at",
        metavar="TIME",
        help="schedule it: ready by TIME (2026-12-02T09:00:00Z, or +30m, +2h from now), at most 7 days ahead; "
        "the lifetime counts from it, and the answer forecasts whether there will be room",
    )
    request.add_argument(
        "--wait",
        action="store_true",
        help="show progress on stderr until all are ACTIVE (through a scheduled start): ACTIVE per provider, "
        "failovers and, while instances wait, why and when they are expected ready ('waiting 2: all accounts "
        "full, ready by 2026-05-04T10:20:00Z', UTC); exit 1 if not all came up",
    )
    request.add_argument("--timeout", default="15m", help="how long --wait waits: 40s, 15m, 1h (default 15m)")

    ls = command("ls", cmd_ls, "list instances", commands)
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--provider")
    ls.add_argument("--request", metavar="REQUEST_ID")
    ls.add_argument("--label")
    command("show", cmd_show, "one instance (i-...) or request (r-...) in full", commands).add_argument("id")
    command("rm", cmd_rm, "delete instances", commands).add_argument("ids", nargs="+", metavar="INSTANCE_ID")
    extend = command("extend", cmd_extend, "give a request's instances more time", commands)
    extend.add_argument("id", metavar="REQUEST_ID")
    extend.add_argument("duration", help="how much longer: 30m, 1h, ...")
    command("delete-request", cmd_delete_request, "delete every instance of a request", commands).add_argument(
        "id", metavar="REQUEST_ID"
    )
    inv = command("inventory", cmd_inventory, "a request's ACTIVE instances for ansible, ssh, scripts", commands)
    inv.add_argument("id", metavar="REQUEST_ID")
    inv.add_argument("--format", choices=output.FORMATS, default="ansible")
    inv.add_argument("--user", help="the login user to put in the inventory (ansible_user, ssh User)")
    inv.add_argument(
        "--known-hosts",
        metavar="FILE",
        help="with --format ssh-config: write the instances' host keys (read from their consoles) to FILE "
        "and have the config trust exactly those, so ssh never asks",
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if getattr(args, "login", False):
            return cmd_login(args)
        return args.handler(args, Client(args.url, args.key))
    except CliError as error:
        print(f"oms: {error.message}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print("oms: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug of ours: one line, and the traceback only when asked for
        if os.environ.get("OMS_DEBUG"):
            raise
        print(f"oms: unexpected {error.__class__.__name__}: {error} (OMS_DEBUG=1 shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
