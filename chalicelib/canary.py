"""Canary boots: one server made for a label, followed through every step a user's instance takes,
and deleted, so that a provider's settings are proven before a burst of instances relies on them.

Steps, each recorded on the provider item as it ends (its time, result and what it found), so the
API, the CLI and the dashboard can follow a canary while it runs:
  slot       one of the account's slots, reserved as an instance's is (the cap is never exceeded);
  auth       a Keystone token;
  resolve    the label's image, flavor and network;
  create     the server (tagged as ours, so that a crash leaves it findable);
  active     Nova says ACTIVE (or ERROR, or nothing within the provider's boot timeout);
  floating_ip  for providers with `floating_ip: auto`: attached and shown in the server's addresses;
  ssh        for labels with `ready: ssh`: an SSH banner from the address users would be given;
  host_keys  read from the console output;
  delete     the server (and its floating IP) gone.

A canary runs as an asynchronous function of its own. `Provider.canary_until` is its lease: one
canary per provider at a time. A runner that dies leaves the lease to run out; the sweeper then
ends the canary (giving its slot back), and its server, no longer covered by the lease, is deleted
as any leak is, after two sightings. The result feeds the provider's health as a launch's does.

Starting one needs no openstacksdk (the API starts them); running one imports the cloud adapter.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from pynamodb.exceptions import UpdateError

from chalicelib import faults, invoke, models, slots, timeutil
from chalicelib.errors import ApiError
from chalicelib.settings import settings

log = logging.getLogger("oms.canary")

RUNNING, PASSED, FAILED = "running", "passed", "failed"
STATES = (RUNNING, PASSED, FAILED)
ASKED, SCHEDULED = "asked", "scheduled"  # who started it: an admin, or the sweeper on an idle provider
STEPS = ("slot", "auth", "resolve", "create", "active", "floating_ip", "ssh", "host_keys", "delete")
DELETE_WAIT_SECONDS = 120.0  # for the server to be gone, beyond the boot timeout
# A canary runs in one function invocation (at most 15 minutes at Lambda): it waits for its server
# no longer than this, whatever the provider's boot timeout, and still has time to delete it.
MAX_BOOT_SECONDS = 660.0
INSTANCE_PREFIX = "canary-"  # a canary's server carries oms_instance_id "canary-<id>"


def boot_timeout(provider: models.Provider) -> float:
    """The provider's boot timeout, within what one function invocation can wait."""
    return min(float(provider.boot_timeout), MAX_BOOT_SECONDS)


def _lease_seconds(provider: models.Provider) -> float:
    return boot_timeout(provider) + DELETE_WAIT_SECONDS + 60


def running(provider: models.Provider, now_iso: str | None = None) -> dict | None:
    """The provider's canary while its lease holds, else None."""
    record = of(provider)
    if record is None or record.get("state") != RUNNING or not provider.canary_until:
        return None
    return record if provider.canary_until >= (now_iso or timeutil.now_iso()) else None


def of(provider: models.Provider) -> dict | None:
    canary = provider.canary
    if canary is None:
        return None
    return canary.as_dict() if hasattr(canary, "as_dict") else dict(canary)


@dataclass(frozen=True)
class Holder:
    """What the sweeper's leak pass needs of whoever holds a server or floating IP."""

    server_id: str | None
    floating_ip_id: str | None


def owners(provider: models.Provider) -> dict[str, Holder]:
    """The running canary as an owner of its server and floating IP (keyed as their tags name it),
    so the sweeper does not take them for leaks while its lease holds."""
    record = running(provider)
    if record is None:
        return {}
    return {INSTANCE_PREFIX + record["id"]: Holder(record.get("server_id"), record.get("floating_ip_id"))}


def start(provider: models.Provider, label: str, trigger: str = ASKED) -> dict:
    """Take the provider's canary lease and start the runner; returns the canary's record.
    409 while another runs; 422 for a label the provider does not map."""
    if label not in provider.labels.as_dict():
        raise ApiError("unprocessable", f"label {label} is not mapped on provider {provider.name}", "boot")
    now = timeutil.now()
    record = {
        "id": uuid.uuid4().hex[:12],
        "label": label,
        "trigger": trigger,
        "state": RUNNING,
        "started_at": timeutil.iso(now),
        "steps": [],
        "slot": False,
    }
    until = timeutil.iso(now + timedelta(seconds=_lease_seconds(provider)))
    lease = models.Provider.canary_until
    try:
        provider.update(
            actions=[models.Provider.canary.set(record), lease.set(until)],
            condition=lease.does_not_exist() | (lease < timeutil.iso(now)),
        )
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise
        provider.refresh(consistent_read=True)
        started = (of(provider) or {}).get("started_at", "?")
        raise ApiError(
            "conflict", f"a canary boot is already running on provider {provider.name} (started {started})", "boot"
        ) from None
    invoke.invoke_async("canary_boot", {"provider": provider.name, "canary": record["id"]})
    return record


def due(provider: models.Provider, now) -> bool:
    """A scheduled canary is due: the provider asks for one every N hours, is idle (no instance
    holds a slot there), and its last canary started longer ago than that."""
    if not (provider.canary_label and provider.canary_every_hours) or int(provider.in_use):
        return False
    if provider.canary_label not in provider.labels.as_dict():
        return False
    if provider.canary_until and provider.canary_until >= timeutil.iso(now):
        return False
    last = (of(provider) or {}).get("started_at")
    every = timedelta(hours=float(provider.canary_every_hours))
    return last is None or timeutil.parse(last) + every <= now


def start_if_due(provider: models.Provider) -> bool:
    """The sweeper's call: start a scheduled canary when one is due. True when one started."""
    if not due(provider, timeutil.now()):
        return False
    try:
        start(provider, provider.canary_label, SCHEDULED)
    except ApiError:
        return False  # one started meanwhile
    return True


def end_stale(provider: models.Provider) -> bool:
    """The sweeper's call: a canary whose lease ran out while it still said "running" lost its
    runner. End it as failed and give its slot back (in the same write, so only once)."""
    record = of(provider)
    if record is None or record.get("state") != RUNNING or not provider.canary_until:
        return False
    now = timeutil.now_iso()
    if provider.canary_until >= now:
        return False
    item = models.Provider
    failed = {
        **record,
        "state": FAILED,
        "finished_at": now,
        "error": "interrupted: the canary stopped before it finished; its server, if any, is deleted as a leak",
        "slot": False,
    }
    actions = [item.canary.set(failed), item.canary_until.remove()]
    condition = (item.canary_until == provider.canary_until) & (item.canary["id"] == record["id"])
    if record.get("slot"):
        actions += [item.in_use.add(-1), item.slot_changes.add(1)]
        condition &= item.in_use >= 1
    try:
        provider.update(actions=actions, condition=condition)
    except UpdateError as error:
        if models.is_conditional_failure(error):
            return False
        raise
    log.warning("canary %s on %s: interrupted; ended by the sweeper", record["id"], provider.name)
    return True


class _Stop(Exception):
    """A step failed: the canary cleans up and ends."""


class _Run:
    """One canary's run: its record, written back after every step."""

    def __init__(self, provider: models.Provider, record: dict) -> None:
        self.provider = provider
        self.record = record
        self.key = INSTANCE_PREFIX + record["id"]
        self.deadline = timeutil.parse(record["started_at"]) + timedelta(seconds=boot_timeout(provider))
        self.failure: faults.CloudError | None = None

    def save(self, **changes) -> None:
        self.record.update(changes)
        item = models.Provider
        try:
            self.provider.update(
                actions=[item.canary.set(self.record)],
                condition=(item.canary["id"] == self.record["id"]) & (item.canary["state"] == RUNNING),
            )
        except UpdateError as error:
            if not models.is_conditional_failure(error):
                raise
            raise _Stop("the canary was ended by someone else (its lease ran out)") from None

    def step(self, name: str, action) -> object:
        """Run one step: record its time and what it found, or its failure (then stop)."""
        started = time.monotonic()
        try:
            detail, result = action()
        except faults.CloudError as error:
            self.failure = error
            self._add(name, False, started, error.message, error.error_class)
            raise _Stop(name) from None
        except Exception as error:  # a bug or an odd answer: the canary still ends and says so
            log.exception("canary %s on %s: step %s failed", self.record["id"], self.provider.name, name)
            self.failure = faults.CloudError(faults.UNKNOWN, f"{type(error).__name__}: {error}")
            self._add(name, False, started, self.failure.message, faults.UNKNOWN)
            raise _Stop(name) from None
        self._add(name, True, started, detail)
        return result

    def skip(self, name: str, why: str) -> None:
        self.record["steps"].append({"step": name, "ok": None, "seconds": 0.0, "detail": why})
        self.save()

    def _add(self, name: str, ok: bool, started: float, detail: str, error_class: str | None = None) -> None:
        entry = {"step": name, "ok": ok, "seconds": round(time.monotonic() - started, 3), "detail": detail[:500]}
        if error_class:
            entry["error_class"] = error_class
        self.record["steps"].append(entry)
        self.save()

    def left(self) -> float:
        return (self.deadline - timeutil.now()).total_seconds()


def run(provider_name: str, canary_id: str) -> dict | None:
    """Run the canary `canary_id` of the provider (the `canary_boot` function); returns its final
    record, or None when it is not (or no longer) this provider's running canary."""
    try:
        provider = models.Provider.get(provider_name, consistent_read=True)
    except models.Provider.DoesNotExist:
        return None
    record = of(provider)
    if record is None or record.get("id") != canary_id or record.get("state") != RUNNING:
        return None
    work = _Run(provider, record)
    try:
        _boot(work)
    except _Stop:
        pass
    finally:
        _clean_up(work)
    return _finish(work)


def _boot(work: _Run) -> None:
    from chalicelib import addresses, cloud, reach

    provider, label = work.provider, work.record["label"]
    mapping = provider.labels.as_dict().get(label) or {}
    work.step("slot", lambda: _take_slot(work))
    work.step("auth", lambda: (cloud.authenticate(provider) or "a Keystone token", None))
    resolved = work.step("resolve", lambda: _resolve(provider, label, mapping))

    def create():
        server_id = cloud.create_server(
            provider,
            name=f"oms-canary-{work.record['id']}",
            label=label,
            metadata=cloud.server_metadata(work.key, "canary", provider.canary_until or work.record["started_at"]),
            user_data=None,
        )
        work.record["server_id"] = server_id
        return f"server {server_id} ({'volume' if resolved.volume_size else 'image'} boot)", server_id

    server_id = work.step("create", create)
    server = work.step("active", lambda: _wait_active(work, server_id))
    if provider.floating_ip == addresses.FLOATING_IP_AUTO:
        server = work.step("floating_ip", lambda: _floating_ip(work, server_id))
    else:
        work.skip("floating_ip", "the provider gives no floating IPs (floating_ip: never)")
    if mapping.get("ready") != reach.READY_SSH:
        work.skip("ssh", "the label is ready once ACTIVE (ready: active)")
        work.skip("host_keys", "read only for labels with ready: ssh")
        return
    work.step("ssh", lambda: _wait_banner(work, server, int(mapping.get("ssh_port") or 22)))

    def host_keys():
        keys = reach.host_keys(cloud.console_output(provider, server_id))
        if not keys:
            return "none in the console output: users would have to trust the host on first use", keys
        return f"{len(keys)} ({', '.join(k.split()[0] for k in keys)})", keys

    work.step("host_keys", host_keys)


def _take_slot(work: _Run) -> tuple[str, None]:
    item = models.Provider
    taken = slots.reserve(
        work.provider,
        1,
        marking=[item.canary["slot"].set(True)],
        only_if=(item.canary["id"] == work.record["id"]) & (item.canary["state"] == RUNNING),
        enabled_only=False,
    )
    if not taken:
        provider = work.provider
        raise faults.CloudError(
            faults.QUOTA,
            f"no free slot: {int(provider.in_use)} in use of {provider.cap} (max_instances and known quota)",
        )
    work.record["slot"] = True
    return f"1 of {work.provider.cap} ({int(work.provider.in_use) + 1} in use with it)", None


def _resolve(provider: models.Provider, label: str, mapping: dict):
    from chalicelib import cloud

    resolved = cloud.resolve(provider, label)
    network = f"network {mapping['network']}" if mapping.get("network") else "no network named (Nova chooses)"
    return f"image {mapping['image']}, flavor {mapping['flavor']}, {network}", resolved


def _poll(work: _Run, look, what: str, error_class: str):
    """Call `look()` every poll interval until it returns something, or fail at the deadline."""
    while True:
        found = look()
        if found is not None:
            return found
        if work.left() <= 0:
            raise faults.CloudError(error_class, f"{what} within {boot_timeout(work.provider):g} s of the start")
        time.sleep(settings.watch_poll_seconds)


def _wait_active(work: _Run, server_id: str):
    from chalicelib import cloud

    def look():
        server = cloud.get_server(work.provider, server_id)
        if server is None:
            raise faults.CloudError(faults.BUILD_FAILED, f"server {server_id} vanished while building")
        if server.status == "ERROR":
            raise cloud.classify_fault(server.fault)
        return server if server.status == "ACTIVE" else None

    server = _poll(work, look, "not ACTIVE", faults.TIMEOUT)
    return f"ACTIVE with {', '.join(a.addr for a in server.addresses) or 'no address'}", server


def _floating_ip(work: _Run, server_id: str):
    from chalicelib import addresses, cloud

    given = cloud.attach_floating_ip(work.provider, server_id, work.key)
    work.record["floating_ip_id"] = given.id
    work.save()

    def look():
        server = cloud.get_server(work.provider, server_id)
        shown = server is not None and any(a.type == addresses.FLOATING for a in server.addresses)
        return server if shown else None

    server = _poll(work, look, f"floating IP {given.address} not shown in the server's addresses", faults.TIMEOUT)
    return f"{given.address} attached and shown", server


def _wait_banner(work: _Run, server, port: int):
    from chalicelib import addresses, reach

    ip = addresses.access_ip(server.addresses, work.provider.address_family)
    if ip is None:
        raise faults.CloudError(faults.UNREACHABLE, "the server has no address to reach it at")

    def look():
        return reach.ssh_banner(ip, port, min(3.0, max(0.5, work.left())))

    banner = _poll(
        work,
        look,
        f"no SSH banner from {ip}:{port} (is tcp/{port} open in its security groups, and is the address reachable?)",
        faults.UNREACHABLE,
    )
    return f"{banner} from {ip}:{port}", banner


def _clean_up(work: _Run) -> None:
    """Delete what the canary made and give its slot back, whatever happened before."""
    from chalicelib import cloud

    provider, record = work.provider, work.record
    server_id, floating_ip_id = record.get("server_id"), record.get("floating_ip_id")
    if server_id or floating_ip_id:

        def delete():
            if floating_ip_id:
                cloud.release_floating_ip(provider, floating_ip_id)
            if server_id:
                cloud.delete_server(provider, server_id)
                gone_by = time.monotonic() + DELETE_WAIT_SECONDS
                while cloud.get_server(provider, server_id) is not None:
                    if time.monotonic() > gone_by:
                        raise faults.CloudError(
                            faults.TIMEOUT, f"server {server_id} still there {DELETE_WAIT_SECONDS:g} s after its delete"
                        )
                    time.sleep(settings.watch_poll_seconds)
            return "server and floating IP gone" if floating_ip_id else "server gone", None

        try:
            work.step("delete", delete)
        except _Stop:
            pass  # recorded; the tagged server is deleted as a leak once the lease runs out
    if record.get("slot"):
        _give_slot_back(work)


def _give_slot_back(work: _Run) -> None:
    item = models.Provider
    try:
        work.provider.update(
            actions=[item.in_use.add(-1), item.slot_changes.add(1), item.canary["slot"].set(False)],
            condition=(item.canary["id"] == work.record["id"]) & (item.canary["slot"] == True) & (item.in_use >= 1),  # noqa: E712
        )
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise
        return  # the sweeper ended it (and gave the slot back) meanwhile
    work.record["slot"] = False


def _finish(work: _Run) -> dict | None:
    """Let the result count on the provider's health, then write it and give the lease back (in
    that order: whoever sees the canary ended sees its health counted)."""
    from chalicelib import health

    record, provider = work.record, work.provider
    failed = next((s for s in record["steps"] if s["ok"] is False), None)
    now = timeutil.now()
    record.update(
        state=FAILED if failed else PASSED,
        finished_at=timeutil.iso(now),
        seconds=round((now - timeutil.parse(record["started_at"])).total_seconds(), 3),
    )
    if failed is None:
        health.record_launch_ok(provider)
        health.record_build_ok(provider)
    else:
        record.update(failed_step=failed["step"], error=f"{failed['step']}: {failed['detail']}")
        if failed["step"] not in ("slot", "delete") and work.failure is not None:
            health.record_outcome(provider, work.failure)
    item = models.Provider
    try:
        provider.update(
            actions=[item.canary.set(record), item.canary_until.remove()],
            condition=(item.canary["id"] == record["id"]) & (item.canary["state"] == RUNNING),
        )
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise
        return None  # ended by the sweeper meanwhile
    log.info("canary %s on %s: %s", record["id"], provider.name, record.get("error") or "passed")
    return record
