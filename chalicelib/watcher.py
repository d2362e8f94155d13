"""Watching BUILD -> ACTIVE without holding the stream: one watcher per provider at a time.

The launch worker invokes it asynchronously after its creates. It lists the provider's servers
once per poll (not once per server), records ACTIVE with addresses, deletes ERROR servers and
fails their instances over, and exits when nothing there is still building or its budget ends;
the sweeper runs the same reconcile once per pass for whatever is left.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib import addresses, cloud, health, launcher, lifecycle, maintenance, models, reach, telemetry, timeutil
from chalicelib.settings import settings

log = logging.getLogger("oms.watcher")

SSH_CHECK_SECONDS = 3.0  # connect and banner, each; a filtered port costs this much per round
SSH_CHECKS_AT_ONCE = 16
REFRESH_SECONDS = 10.0  # how long a watcher trusts its list of BUILDING instances
RENEW_SECONDS = 10.0  # how often a watcher renews its lease (it lasts 5 polls + 30 s)


def building(provider_name: str) -> list[models.Instance]:
    return list(models.Instance.by_provider_state.query(provider_name, models.Instance.state == models.BUILDING))


def reconcile_building(
    provider: models.Provider,
    instances: list[models.Instance],
    servers: dict[str, cloud.Server],
    *,
    leased: bool,
) -> list[models.Instance]:
    """Settle BUILDING instances against one server list taken *after* they were read (so every
    server of theirs existed when the list was made); returns those that still build.

    A server that is ACTIVE makes its instance ACTIVE, unless the label asks for `ready: ssh`: then
    only once its sshd answers (`reach`), all such checks of a round in parallel. Only a caller
    holding the provider's watcher lease (`leased`) gives servers floating IPs: two passes giving
    one instance one each at once would take two, one over the quota when placement left exactly
    as many as the instances (the sweeper starts a watcher wherever instances still build)."""
    still_building: list[models.Instance] = []
    came_up = False
    now = timeutil.now()
    timeout = provider.boot_timeout
    waiting_for_ssh = []
    for instance in instances:
        server = servers.get(instance.server_id)
        if server is not None and server.status == "ACTIVE":
            if provider.floating_ip == addresses.FLOATING_IP_AUTO:
                step = _floating_ip_step(provider, instance, server, now, leased)
                if step != SHOWN:
                    if step == WAITING:  # given one now, or waiting for it to show in the addresses
                        still_building.append(instance)
                    continue
            # A label stored before `ready: ssh` became the default has no `ready`: it is `active`.
            if _mapping(provider, instance).get("ready") == reach.READY_SSH:
                waiting_for_ssh.append((instance, server))
            else:
                came_up = lifecycle.came_up(instance, server.addresses, family=provider.address_family) or came_up
            continue
        if server is None:
            error = cloud.CloudError(cloud.BUILD_FAILED, f"server {instance.server_id} vanished while building")
        elif server.status == "ERROR":
            error = cloud.classify_fault(server.fault)
        elif _booting_for(instance, now) > timeout:
            error = cloud.CloudError(cloud.TIMEOUT, f"still {server.status} after {timeout} s")
        else:
            still_building.append(instance)
            continue
        if not _give_up(provider, instance, server, error):
            still_building.append(instance)
    for (instance, server), answer in zip(waiting_for_ssh, _ssh_checks(provider, waiting_for_ssh), strict=True):
        if answer is not None:
            came_up = lifecycle.came_up(instance, server.addresses, answer, family=provider.address_family) or came_up
        elif _booting_for(instance, now) > timeout:
            ip = addresses.access_ip(server.addresses, provider.address_family)
            where = f"{ip or 'no address'}:{_ssh_port(provider, instance)}"
            error = cloud.CloudError(
                cloud.UNREACHABLE,
                f"ACTIVE, but no SSH banner from {where} within {timeout} s of its launch "
                "(is tcp/22 open in its security groups, and is the address reachable?)",
            )
            if not _give_up(provider, instance, server, error):
                still_building.append(instance)
        else:
            still_building.append(instance)
    if came_up:
        health.record_build_ok(provider)
    return still_building


SHOWN, WAITING, FAILED = "shown", "waiting", "failed"


def _floating_ip_step(
    provider: models.Provider, instance: models.Instance, server: cloud.Server, now, leased: bool
) -> str:
    """SHOWN once the server's addresses show its floating IP; else give it one if it has none
    and we hold the watcher lease (WAITING). A floating IP that cannot be had (quota, no external
    network) fails the instance over (FAILED, or WAITING when its server could not be deleted yet).

    Shown with none recorded, it may be one a pass that died before recording it attached: it is
    recorded now, or the sweeper would free it as a leak while the instance is reached at it."""
    if any(a.type == addresses.FLOATING for a in server.addresses):
        if instance.floating_ip_id is None and not _adopt_floating_ip(provider, instance, server):
            return WAITING
        return SHOWN
    if instance.floating_ip_id is not None:
        timeout = provider.boot_timeout
        if _booting_for(instance, now) <= timeout:
            return WAITING  # attached: Neutron and Nova take a moment to show it
        error = cloud.CloudError(cloud.TIMEOUT, f"floating IP {instance.floating_ip_id} not shown after {timeout} s")
        return FAILED if _give_up(provider, instance, server, error) else WAITING
    if not leased:
        return WAITING  # the watcher gives it one
    try:
        given = cloud.attach_floating_ip(provider, server.id, instance.id)
    except cloud.CloudError as error:
        log.warning("instance %s: no floating IP on %s: %s", instance.id, provider.name, error.message)
        return FAILED if _give_up(provider, instance, server, error) else WAITING
    if not lifecycle.record_floating_ip(instance, given.id):
        if instance.floating_ip_id != given.id:
            # Another pass gave it another first, or it moved on: nobody else knows of this one.
            _release_floating_ip(provider, instance, given.id)
        return WAITING if instance.state == models.BUILDING else FAILED
    return WAITING


def _adopt_floating_ip(provider: models.Provider, instance: models.Instance, server: cloud.Server) -> bool:
    """Record the floating IP left on the server's port for the instance, if any (a cloud may show
    one of its own: that one is not ours to record). False when that could not be known yet."""
    try:
        left = cloud.left_floating_ip(provider, server.id, instance.id)
    except cloud.CloudError as error:
        log.warning("instance %s: floating IPs of its port unreadable: %s", instance.id, error.message)
        return False
    if left is not None and lifecycle.record_floating_ip(instance, left.id):  # lost: another pass did, or it moved on
        log.warning("instance %s: kept floating IP %s, attached but not recorded before", instance.id, left.id)
    return True


def _release_floating_ip(provider: models.Provider, instance: models.Instance, floating_ip_id: str) -> None:
    try:
        cloud.release_floating_ip(provider, floating_ip_id)
    except cloud.CloudError as error:  # described with its instance: the sweeper frees it as a leak
        log.warning("instance %s: floating IP %s not released: %s", instance.id, floating_ip_id, error.message)


def _give_up(provider: models.Provider, instance: models.Instance, server, error: cloud.CloudError) -> bool:
    """Delete the instance's failed server (and its floating IP) and fail it over; False when the
    delete failed (it is tried again next round)."""
    if instance.floating_ip_id:
        _release_floating_ip(provider, instance, instance.floating_ip_id)
    try:
        if server is not None:
            cloud.delete_server(provider, server.id)
    except cloud.CloudError as delete_error:
        log.warning("instance %s: could not delete failed server: %s", instance.id, delete_error.message)
        return False
    launcher.fail_over(instance, error, provider)
    return True


def _mapping(provider: models.Provider, instance: models.Instance) -> dict:
    labels = provider.labels.as_dict() if hasattr(provider.labels, "as_dict") else dict(provider.labels)
    return labels.get(instance.label) or {}


def _ssh_port(provider: models.Provider, instance: models.Instance) -> int:
    return int(_mapping(provider, instance).get("ssh_port") or 22)


def _ssh_checks(provider: models.Provider, waiting: list[tuple]) -> list[list[str] | None]:
    """For each (instance, server): its host keys (possibly none) once its sshd answers, else None."""

    def check(item: tuple) -> list[str] | None:
        instance, server = item
        ip = addresses.access_ip(server.addresses, provider.address_family)
        if ip is None or reach.ssh_banner(ip, _ssh_port(provider, instance), SSH_CHECK_SECONDS) is None:
            return None
        try:
            return reach.host_keys(cloud.console_output(provider, server.id))
        except cloud.CloudError as error:
            log.warning("instance %s: console output unreadable (%s); no host keys", instance.id, error.message)
            return []

    if not waiting:
        return []
    with ThreadPoolExecutor(max_workers=min(SSH_CHECKS_AT_ONCE, len(waiting))) as pool:
        return list(pool.map(telemetry.carry(check, "ssh_check"), waiting))


def _booting_for(instance: models.Instance, now) -> float:
    started = instance.launched_at or instance.created_at
    return (now - timeutil.parse(started)).total_seconds()


def _lease_seconds() -> float:
    return settings.watch_poll_seconds * 5 + 30


def _lease_value() -> str:
    """Until when the lease holds, made unique to its holder (it still compares as a time)."""
    until = timeutil.now() + timedelta(seconds=_lease_seconds())
    return f"{timeutil.iso(until)}|{uuid.uuid4().hex[:12]}"


def _lease_due(held: str) -> bool:
    """True once the lease we hold was taken or renewed RENEW_SECONDS ago: a round that hangs
    on a slow provider (up to the OpenStack timeout) then still ends inside the lease."""
    until = timeutil.parse(held.partition("|")[0])
    return (until - timeutil.now()).total_seconds() < _lease_seconds() - RENEW_SECONDS


def _lease_write(provider_name: str, action, condition) -> bool:
    try:
        models.Provider(provider_name).update(actions=[action], condition=condition)
    except UpdateError as error:
        if models.is_conditional_failure(error):
            return False
        raise
    return True


def _lease_take(provider_name: str) -> str | None:
    """Take the provider's watcher lease if it is free or has run out; returns the value held."""
    lease = models.Provider.watch_lease_until
    value = _lease_value()
    free = lease.does_not_exist() | (lease < timeutil.now_iso())
    return value if _lease_write(provider_name, lease.set(value), free) else None


def _lease_renew(provider_name: str, held: str) -> str | None:
    """Extend the lease we hold; None when it is no longer ours (it ran out and another took it)."""
    lease = models.Provider.watch_lease_until
    value = _lease_value()
    return value if _lease_write(provider_name, lease.set(value), lease == held) else None


def _lease_release(provider_name: str, held: str) -> None:
    """Give the lease back, only if it is still ours."""
    lease = models.Provider.watch_lease_until
    _lease_write(provider_name, lease.remove(), lease == held)


def building_exists(provider_name: str) -> bool:
    query = models.Instance.by_provider_state.query(provider_name, models.Instance.state == models.BUILDING, limit=1)
    return next(iter(query), None) is not None


def watch(provider_name: str) -> None:
    """Poll one provider until its BUILDING instances are settled or the budget is spent."""
    deadline = time.monotonic() + settings.watch_budget_seconds
    while held := _lease_take(provider_name):
        lease = [held]  # _poll renews it in place, so that even a raising round releases the current one
        try:
            _poll(provider_name, lease, deadline)
        except DoesNotExist:
            return
        finally:
            if lease[0]:
                _lease_release(provider_name, lease[0])
        if not lease[0]:
            return  # another watcher has taken over
        # A launch may have added a BUILDING instance while we were leaving: look once more.
        if time.monotonic() >= deadline or not building_exists(provider_name):
            return


def _poll(provider_name: str, lease: list[str | None], deadline: float) -> None:
    """The watcher's rounds under the lease `lease[0]` (set to None once lost): one server list
    per round. The BUILDING instances are read again only when a server of ours that is not one of
    theirs has finished building since the last list (a later create's), when none is left, or
    after REFRESH_SECONDS; most rounds cost the provider one call and DynamoDB nothing."""
    instances: list[models.Instance] = []
    seen: set[str] = set()  # every instance read so far, settled ones included
    read_at: float | None = None
    others: dict[str, str] | None = None  # status of the other servers of ours at the last list
    reread_now = False
    while time.monotonic() < deadline:
        if read_at is None or time.monotonic() - read_at > REFRESH_SECONDS:
            provider = models.Provider.get(provider_name)
            if maintenance.current(provider, timeutil.now()):
                return  # no call during a maintenance window: the sweeper settles them after it
            instances, read_at = building(provider_name), time.monotonic()
            if not instances:
                return
            seen.update(i.id for i in instances)
        try:
            servers = {s.id: s for s in cloud.our_servers(provider)}
        except cloud.CloudError as error:
            log.warning("watcher %s: list failed: %s", provider_name, error.message)
        else:
            instances = reconcile_building(provider, instances, servers, leased=True)
            before, others = others, {s.id: s.status for s in servers.values() if s.instance_id not in seen}
            finished = before is not None and any(
                status != "BUILD" and before.get(server_id, "BUILD") == "BUILD" for server_id, status in others.items()
            )
            if finished or not instances:
                read_at = None
                # Nothing else builds: read now (once) whether there is more to settle.
                reread_now = not reread_now and "BUILD" not in others.values()
                if reread_now:
                    continue
        reread_now = False
        time.sleep(settings.watch_poll_seconds)
        if _lease_due(lease[0]):
            lease[0] = _lease_renew(provider_name, lease[0])  # failed lists included
            if not lease[0]:
                return
