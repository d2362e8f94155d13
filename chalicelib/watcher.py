"""Watching BUILD -> ACTIVE without holding the stream: one watcher per provider at a time.

The launch worker invokes it asynchronously after its creates. It lists the provider's servers
once per poll (not once per server), records ACTIVE with addresses, deletes ERROR servers and
fails their instances over, and exits when nothing there is still building or its budget ends;
the sweeper runs the same reconcile once per pass for whatever is left.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib import cloud, launcher, models, timeutil
from chalicelib.settings import settings

log = logging.getLogger("oms.watcher")


def building(provider_name: str) -> list[models.Instance]:
    return list(models.Instance.by_provider_state.query(provider_name, models.Instance.state == models.BUILDING))


def reconcile_building(
    provider: models.Provider, instances: list[models.Instance], servers: dict[str, cloud.Server]
) -> int:
    """Settle BUILDING instances against one server list taken *after* they were read (so every
    server of theirs existed when the list was made); returns how many still build."""
    still_building = 0
    now = timeutil.now()
    for instance in instances:
        server = servers.get(instance.server_id)
        if server is not None and server.status == "ACTIVE":
            models.transition(
                instance,
                models.ACTIVE,
                expected=[models.BUILDING],
                actions=[models.Instance.addresses.set({"ipv4": list(server.ipv4), "ipv6": list(server.ipv6)})],
            )
            continue
        if server is None:
            error = cloud.CloudError(cloud.BUILD_FAILED, f"server {instance.server_id} vanished while building")
        elif server.status == "ERROR":
            error = cloud.classify_fault(server.fault)
        elif _booting_for(instance, now) > settings.boot_timeout_seconds:
            error = cloud.CloudError(cloud.TIMEOUT, f"still {server.status} after {settings.boot_timeout_seconds} s")
        else:
            still_building += 1
            continue
        try:
            if server is not None:
                cloud.delete_server(provider, server.id)
        except cloud.CloudError as delete_error:
            log.warning("instance %s: could not delete failed server: %s", instance.id, delete_error.message)
            still_building += 1
            continue
        launcher.fail_over(instance, error, provider)
    return still_building


def _booting_for(instance: models.Instance, now) -> float:
    started = instance.launched_at or instance.created_at
    return (now - timeutil.parse(started)).total_seconds()


def _lease(provider_name: str, take: bool) -> bool:
    now = timeutil.now()
    until = timeutil.iso(now + timedelta(seconds=settings.watch_poll_seconds * 5 + 30))
    provider = models.Provider(provider_name)
    try:
        if take:
            free = models.Provider.watch_lease_until.does_not_exist() | (
                models.Provider.watch_lease_until < timeutil.iso(now)
            )
            provider.update(
                actions=[models.Provider.watch_lease_until.set(until)], condition=free & models.Provider.name.exists()
            )
        else:
            provider.update(
                actions=[models.Provider.watch_lease_until.remove()], condition=models.Provider.name.exists()
            )
    except UpdateError as error:
        if models.is_conditional_failure(error):
            return False
        raise
    return True


def building_exists(provider_name: str) -> bool:
    query = models.Instance.by_provider_state.query(provider_name, models.Instance.state == models.BUILDING, limit=1)
    return next(iter(query), None) is not None


def watch(provider_name: str) -> None:
    """Poll one provider until its BUILDING instances are settled or the budget is spent."""
    deadline = time.monotonic() + settings.watch_budget_seconds
    while _lease(provider_name, take=True):
        try:
            while time.monotonic() < deadline:
                provider = models.Provider.get(provider_name)
                instances = building(provider_name)
                if not instances:
                    break
                try:
                    servers = {s.id: s for s in cloud.our_servers(provider)}
                except cloud.CloudError as error:
                    log.warning("watcher %s: list failed: %s", provider_name, error.message)
                    servers = None
                if servers is not None and reconcile_building(provider, instances, servers) == 0:
                    break
                time.sleep(settings.watch_poll_seconds)
                _lease_renew(provider_name)  # every round, failed lists included
        except DoesNotExist:
            return
        finally:
            _lease(provider_name, take=False)
        # A launch may have added a BUILDING instance while we were leaving: look once more.
        if time.monotonic() >= deadline or not building_exists(provider_name):
            return


def _lease_renew(provider_name: str) -> None:
    until = timeutil.iso(timeutil.now() + timedelta(seconds=settings.watch_poll_seconds * 5 + 30))
    models.Provider(provider_name).update(
        actions=[models.Provider.watch_lease_until.set(until)], condition=models.Provider.name.exists()
    )
