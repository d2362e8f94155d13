"""The scheduled pass: expiry, provider health and quota. Cost grows with providers, not instances.

Each provider is checked in parallel under one time budget, so a hung provider cannot stall the
pass or the others; what does not answer in time counts as a failure (unavailable).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta

from chalicelib import cloud, fleet, health, invoke, launcher, models, placement, slots, timeutil, watcher, worker
from chalicelib.settings import settings

log = logging.getLogger("oms.sweeper")

# Threads of a pass that outlive its budget (a hung provider) must not block the next pass.
_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sweep")


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)
    timed_out: list[str] = field(default_factory=list)
    redriven: int = 0
    watched: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    retried_deletes: list[str] = field(default_factory=list)
    leaks_deleted: list[str] = field(default_factory=list)


def expire(now: str | None = None) -> list[str]:
    """Retire every live instance whose lifetime has ended; returns their ids."""
    now = now or timeutil.now_iso()
    expired = []
    for state in (models.PENDING, models.LAUNCHING, models.BUILDING, models.ACTIVE):
        for instance in models.Instance.by_state_expires.query(
            state, range_key_condition=models.Instance.expires_at <= now
        ):
            try:
                if fleet.retire(instance, expired_by=now):
                    expired.append(instance.id)
            except Exception:  # one instance must not stop the pass
                log.exception("sweep: expiring %s failed", instance.id)
    return expired


def _due_for_check(provider: models.Provider) -> bool:
    """Every provider is checked each pass, except one whose open circuit is still cooling down."""
    retry_at = timeutil.parse(provider.retry_at) if provider.retry_at else None
    return placement.circuit_state(provider.health_state, retry_at, timeutil.now()) != placement.OPEN


def check_providers(report: SweepReport) -> None:
    providers = [p for p in models.Provider.by_kind.query("provider") if _due_for_check(p)]
    futures = {_pool.submit(health.check, p): p for p in providers}
    done, late = wait(futures, timeout=settings.sweep_budget_seconds)
    for future in done:
        provider = futures[future]
        if future.exception() is not None:
            log.error("health check of %s crashed: %s", provider.name, future.exception())
            continue
        report.checked[provider.name] = future.result().health_state
    for future in late:
        provider = futures[future]
        report.timed_out.append(provider.name)
        health.record_failure(
            provider, cloud.CloudError(cloud.UNAVAILABLE, f"no answer within {settings.sweep_budget_seconds} s")
        )


def redrive(report: SweepReport) -> None:
    """Fire PENDING instances again where room has appeared (a provider came back, quota rose)."""
    now = timeutil.now()
    for provider in models.Provider.by_kind.query("provider"):
        retry_at = timeutil.parse(provider.retry_at) if provider.retry_at else None
        if not provider.enabled or placement.circuit_state(provider.health_state, retry_at, now) == placement.OPEN:
            continue
        room = provider.cap - int(provider.in_use)
        if room > 0:
            report.redriven += launcher.redrive(provider, room, settings.redrive_after_seconds)


def watch_building(report: SweepReport) -> None:
    """Start a build watcher wherever instances are BUILDING (its lease keeps it one per provider)."""
    for provider in models.Provider.by_kind.query("provider"):
        if watcher.building_exists(provider.name):
            invoke.invoke_async("build_watcher", {"provider": provider.name})
            report.watched.append(provider.name)


def resolve_stuck(report: SweepReport) -> None:
    """Finish what a crashed or failed worker left: stale LAUNCHING claims (adopt the server made
    for them, or re-queue), leaked servers (deleted once seen in two passes), and DELETING
    instances whose teardown has not gone through."""
    older_than = timeutil.iso(timeutil.now() - timedelta(seconds=settings.launch_stale_seconds))
    for provider in models.Provider.by_kind.query("provider"):
        try:
            _resolve_stuck_on(provider, older_than, report)
        except Exception:  # one provider's trouble must not stop the pass for the others
            log.exception("sweep: resolving stuck instances on %s failed", provider.name)


def _resolve_stuck_on(provider: models.Provider, older_than: str, report: SweepReport) -> None:
    servers = None
    if _due_for_check(provider):  # one server list per provider per pass, unless its circuit is open
        try:
            servers = cloud.our_servers(provider)
        except cloud.CloudError as error:
            log.warning("sweep: cannot list servers of %s: %s", provider.name, error.message)
    launching = [
        i
        for i in models.Instance.by_provider_state.query(provider.name, models.Instance.state == models.LAUNCHING)
        if worker.stale(i)
    ]
    for instance in launching if servers is not None else []:
        if launcher.resume_stale_launch(instance, provider, servers):
            report.adopted.append(instance.id)
            invoke.invoke_async("build_watcher", {"provider": provider.name})
    if servers is not None:
        _delete_leaks(provider, servers, report)
    deleting = models.Instance.by_provider_state.query(
        provider.name,
        models.Instance.state == models.DELETING,
        filter_condition=models.Instance.state_changed_at < older_than,
    )
    for instance in deleting:
        worker.teardown(instance.id)
        report.retried_deletes.append(instance.id)


def _leaked(servers: list[cloud.Server]) -> set[str]:
    """Servers of this deployment that no live instance claims (its own, or being launched)."""
    ids = list({s.instance_id for s in servers if s.instance_id})
    owners = {i.id: i for i in models.Instance.batch_get(ids, consistent_read=True)} if ids else {}
    leaked = set()
    for server in servers:
        owner = owners.get(server.instance_id)
        live = owner is not None and owner.state in slots.HOLDING
        if not live or owner.server_id not in (None, server.id):
            leaked.add(server.id)
    return leaked


def _delete_leaks(provider: models.Provider, servers: list[cloud.Server], report: SweepReport) -> None:
    """Delete leaked servers seen in two consecutive passes (a server between its create and its
    record is never a suspect twice: its instance is LAUNCHING, which claims it)."""
    leaked = _leaked(servers)
    previous = set(provider.leak_suspects or ())
    for server_id in leaked & previous:
        try:
            cloud.delete_server(provider, server_id)
            report.leaks_deleted.append(server_id)
            log.info("sweep: deleted leaked server %s on %s", server_id, provider.name)
        except cloud.CloudError as error:
            log.warning("sweep: deleting leaked server %s on %s failed: %s", server_id, provider.name, error.message)
    suspects = leaked - previous
    if suspects != previous:
        suspects_attr = models.Provider.leak_suspects
        provider.update(actions=[suspects_attr.set(suspects) if suspects else suspects_attr.remove()])


def sweep() -> SweepReport:
    report = SweepReport(expired=expire())
    check_providers(report)
    resolve_stuck(report)
    watch_building(report)
    redrive(report)
    if report.expired or report.timed_out:
        log.info("sweep: expired %d, timed out %s", len(report.expired), report.timed_out)
    return report
