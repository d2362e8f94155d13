"""The scheduled pass: expiry, then per provider health, quota, reconcile, leaks, stuck deletes
and `in_use` drift, then re-drive, warm pools, callbacks and the waiting instances' ETAs. Its cost
grows with providers, not instances.

Every provider gets one job, run in parallel under one time budget, so a hung provider cannot
stall the pass or the others. A job makes a fixed handful of OpenStack calls: a token (when the
cached one has expired) and `GET /limits` for health and quota, then one server list against
which its BUILDING, ACTIVE, stale LAUNCHING and DELETING instances and its leaks are settled.
Only deletes add calls, one per server to delete. A job whose check has not answered within
the budget counts as a failed check; the job itself runs on and its results land next pass.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from pynamodb.exceptions import DoesNotExist

from chalicelib import (
    addresses,
    callbacks,
    canary,
    cloud,
    eta,
    fleet,
    health,
    invoke,
    launcher,
    lifecycle,
    maintenance,
    models,
    pools,
    schedule,
    slots,
    teardown,
    telemetry,
    timeutil,
    watcher,
)
from chalicelib.settings import settings

log = logging.getLogger("oms.sweeper")

CHECKING = "checking"  # a job's health check has not answered yet

# Threads of a pass that outlive its budget (a hung provider) must not block the next pass.
_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sweep")


@dataclass
class ProviderPass:
    """What one provider's job did in a pass (written by that job's thread only)."""

    # Health after the check: None when not checked (circuit open), "checking" while it runs.
    checked: str | None = None
    listed: bool = False  # the server list came back, so instances were reconciled against it
    still_building: int = 0
    vanished: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    retagged: list[str] = field(default_factory=list)  # servers whose oms_expires_at was behind
    deletes_retried: list[str] = field(default_factory=list)
    leaks_deleted: list[str] = field(default_factory=list)
    floating_ips_released: list[str] = field(default_factory=list)  # leaked ones, seen in two passes
    in_use_corrected: int | None = None
    canary_started: bool = False  # a scheduled canary boot (the provider was idle)
    canary_ended: bool = False  # a canary whose runner died, ended and its slot given back
    # (state, expires_at) of every instance holding a slot, when they were read (the waiting
    # instances' ETA); None when the provider's check did not answer this pass.
    holders: list[tuple[str, str]] | None = None
    sampled: int = 0  # launches measured this pass (boot and ready times)


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)
    providers: dict[str, ProviderPass] = field(default_factory=dict)
    timed_out: list[str] = field(default_factory=list)
    redriven: int = 0
    estimated: int = 0  # waiting instances whose ETA changed
    pools: list[dict] = field(default_factory=list)  # warm pools refilled or shrunk (pools.Refill)
    watched: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # scheduled requests launched this pass
    # Requests an `expiring` callback was raised for, and those whose due callbacks were tried.
    callbacks: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def each(self, what: str) -> list[str]:
        """One list across providers, e.g. `report.each("leaks_deleted")`."""
        return [item for part in self.providers.values() for item in getattr(part, what)]

    def as_dict(self) -> dict:
        return asdict(self)


def expire(now: str | None = None) -> list[str]:
    """Retire every live instance whose lifetime has ended (an index on state and expiry, no
    scan); returns their ids."""
    now = now or timeutil.now_iso()
    expired = []
    for state in (models.PENDING, models.LAUNCHING, models.BUILDING, models.ACTIVE):
        for instance in models.Instance.by_state_expires.query(
            state, range_key_condition=models.Instance.expires_at <= now
        ):
            try:
                if lifecycle.retire(instance, expired_by=now):
                    expired.append(instance.id)
            except Exception:  # one instance must not stop the pass
                log.exception("sweep: expiring %s failed", instance.id)
    return expired


def sweep_provider(provider: models.Provider, part: ProviderPass) -> None:
    """One provider's share of the pass. Disabled providers are checked and reconciled too (their
    instances still end); only launching skips them. A provider whose circuit is open or whose
    maintenance window is on gets no call: no check, no reconcile (its deletes wait)."""
    counted = None
    part.canary_ended = canary.end_stale(provider)
    if not health.calls_held(provider):
        part.checked = CHECKING
        answered = health.check(provider)
        part.checked = provider.health_state
        if answered:  # it may still be degraded by its launches: its instances are settled all the same
            counted = _reconcile(provider, part)
            part.canary_started = canary.start_if_due(provider)
    else:
        # No call, but the queries the drift check makes anyway tell who holds its slots until
        # when: a provider in a maintenance window still has an ETA to offer (after the window).
        held = slots.held(provider.name)
        counted = sum(len(instances) for instances in held.values())
        part.holders = [(i.state, i.expires_at) for instances in held.values() for i in instances]
    try:
        part.in_use_corrected = slots.correct_drift(provider, counted)
    except models.Provider.DoesNotExist:
        return  # deleted meanwhile
    if part.in_use_corrected is not None:
        log.warning("sweep: %s in_use corrected to %d", provider.name, part.in_use_corrected)


def _reconcile(provider: models.Provider, part: ProviderPass) -> int:
    """Settle the provider's instances against one server list, taken *after* they were read, so
    that every server they name existed when the list was made. Returns how many instances held
    a slot there when read (for the drift check: the same two queries serve both)."""
    now = timeutil.now()
    now_iso = timeutil.iso(now)
    stuck_before = timeutil.iso(now - timedelta(seconds=settings.launch_stale_seconds))
    held = slots.held(provider.name)
    counted = sum(len(instances) for instances in held.values())
    part.holders = [(i.state, i.expires_at) for instances in held.values() for i in instances]
    part.sampled = _measure(provider, held[models.ACTIVE])
    try:
        servers = {s.id: s for s in cloud.our_servers(provider)}
    except cloud.CloudError as error:
        log.warning("sweep: cannot list servers of %s: %s", provider.name, error.message)
        return counted
    part.listed = True
    part.still_building = len(watcher.reconcile_building(provider, held[models.BUILDING], servers, leased=False))
    for instance in held[models.ACTIVE]:
        if instance.server_id not in servers and _relaunch_vanished(instance, provider):
            part.vanished.append(instance.id)
    for instance in held[models.BUILDING] + held[models.ACTIVE]:
        server = servers.get(instance.server_id)
        if (
            instance.state in (models.BUILDING, models.ACTIVE)
            and server is not None
            and server.expires_at != instance.expires_at
            and _retag(provider, server, instance)
        ):
            part.retagged.append(instance.id)
    for instance in held[models.LAUNCHING]:
        if lifecycle.stale(instance) and launcher.resume_stale_launch(instance, provider, list(servers.values())):
            part.adopted.append(instance.id)
            part.still_building += 1
    owners = {i.id: i for instances in held.values() for i in instances}
    owners.update(canary.owners(provider))  # a running canary's server and floating IP are not leaks
    floating_ips = []
    if provider.floating_ip == addresses.FLOATING_IP_AUTO or any(i.floating_ip_id for i in owners.values()):
        try:
            floating_ips = cloud.our_floating_ips(provider)
        except cloud.CloudError as error:
            log.warning("sweep: cannot list floating IPs of %s: %s", provider.name, error.message)
    _delete_leaks(provider, list(servers.values()), owners, part, floating_ips)
    for instance in held[models.DELETING]:
        if lifecycle.delete_due(instance, now_iso, stuck_before):
            teardown.teardown(instance, provider, listed=servers)
            part.deletes_retried.append(instance.id)
    return counted


def _measure(provider: models.Provider, active: list[models.Instance]) -> int:
    """Keep the boot and ready times of the instances that came up since the last pass on the
    provider: one write per pass, only when there are new ones (never one per instance on the
    provider's busy item). Returns how many were new."""
    through = provider.samples_through or ""
    new = sorted(
        (i for i in active if i.active_at and i.launched_at and i.active_at > through), key=lambda i: i.active_at
    )
    if not new:
        return 0

    def seconds(start: str, end: str) -> float:
        return max(0.0, (timeutil.parse(end) - timeutil.parse(start)).total_seconds())

    boot = [*(provider.boot_samples or []), *(seconds(i.launched_at, i.active_at) for i in new)]
    ready = [*(provider.ready_samples or []), *(seconds(i.created_at, i.active_at) for i in new)]
    provider.update(
        actions=[
            models.Provider.boot_samples.set(boot[-models.BOOT_SAMPLES :]),
            models.Provider.ready_samples.set(ready[-models.BOOT_SAMPLES :]),
            models.Provider.samples_through.set(new[-1].active_at),
        ]
    )
    return len(new)


def _retag(provider: models.Provider, server: cloud.Server, instance: models.Instance) -> bool:
    """Set a server's `oms_expires_at` to its instance's (an extension whose tag the stream left
    behind: its provider did not answer then)."""
    try:
        cloud.set_expiry(provider, server.id, instance.expires_at)
    except cloud.CloudError as error:
        log.warning("sweep: re-tagging server %s on %s failed: %s", server.id, provider.name, error.message)
        return False
    return True


def _relaunch_vanished(instance: models.Instance, provider: models.Provider) -> bool:
    """An ACTIVE instance whose server is gone (deleted behind our back, or lost by the provider):
    record why and, while its lifetime lasts, send it back to PENDING to be launched again."""
    if instance.expires_at <= timeutil.now_iso():
        return False  # its lifetime is over: expiry tears it down (the delete finds nothing)
    error = cloud.CloudError(
        cloud.UNKNOWN, f"server {instance.server_id} vanished from {provider.name} while ACTIVE; relaunching"
    )
    log.warning("instance %s: %s", instance.id, error.message)
    launcher.fail_over(instance, error, provider, provider_at_fault=False)
    return True


def _leaked(servers: list[cloud.Server], owners: dict[str, models.Instance]) -> set[str]:
    """Servers of this deployment that no instance holding a slot on the provider claims (as its
    server, or as the one it is being launched on). `owners` were read before the server list:
    a server made for a launch claimed after that read is a suspect once, never twice."""
    leaked = set()
    for server in servers:
        owner = owners.get(server.instance_id)
        if owner is None or owner.server_id not in (None, server.id):
            leaked.add(server.id)
    return leaked


_FIP = "fip:"  # how a floating IP stands among a provider's leak suspects (beside server ids)


def _leaked_floating_ips(floating_ips: list[cloud.FloatingIp], owners: dict[str, models.Instance]) -> set[str]:
    """This deployment's floating IPs that no instance holding a slot keeps (read before the list)."""
    leaked = set()
    for ip in floating_ips:
        owner = owners.get(ip.instance_id or "")
        if owner is None or owner.floating_ip_id != ip.id:
            leaked.add(_FIP + ip.id)
    return leaked


def _delete_leaks(
    provider: models.Provider,
    servers: list[cloud.Server],
    owners: dict[str, models.Instance],
    part: ProviderPass,
    floating_ips: list[cloud.FloatingIp] = (),
) -> None:
    """Delete leaked servers and release leaked floating IPs seen in two consecutive passes."""
    leaked = _leaked(servers, owners) | _leaked_floating_ips(list(floating_ips), owners)
    previous = set(provider.leak_suspects or ())
    going = {s.id for s in servers if s.deleting}  # being deleted already: waited for, not deleted again
    for key in (leaked & previous) - going:
        kind, what = ("floating IP", key[len(_FIP) :]) if key.startswith(_FIP) else ("server", key)
        try:
            if kind == "server":
                cloud.delete_server(provider, what)
                part.leaks_deleted.append(what)
            else:
                cloud.release_floating_ip(provider, what)
                part.floating_ips_released.append(what)
            log.info("sweep: freed leaked %s %s on %s", kind, what, provider.name, extra={"provider": provider.name})
            telemetry.metric("LeaksDeleted", provider=provider.name)
        except cloud.CloudError as error:
            log.warning("sweep: freeing leaked %s %s on %s failed: %s", kind, what, provider.name, error.message)
    suspects = leaked - previous
    if suspects != previous:
        suspects_attr = models.Provider.leak_suspects
        provider.update(actions=[suspects_attr.set(suspects) if suspects else suspects_attr.remove()])


def _run_provider_jobs(report: SweepReport, budget: float) -> None:
    providers = list(models.Provider.by_kind.query("provider"))
    parts = {p.name: ProviderPass() for p in providers}
    job = telemetry.carry(sweep_provider)
    futures = {_pool.submit(job, p, parts[p.name]): p for p in providers}
    done, late = wait(futures, timeout=budget)
    for future in done:
        provider = futures[future]
        report.providers[provider.name] = parts[provider.name]
        error = future.exception()
        if isinstance(error, DoesNotExist):
            log.info("sweep: %s was deleted during the pass", provider.name)
        elif error is not None:
            log.error("sweep of %s crashed: %r", provider.name, error)
    for future in late:
        provider = futures[future]
        report.providers[provider.name] = parts[provider.name]
        if parts[provider.name].checked == CHECKING:  # it never answered: a failed check
            report.timed_out.append(provider.name)
            error = cloud.CloudError(cloud.UNAVAILABLE, f"health check: no answer within {budget:g} s")
            health.record_failure(provider, error, by_check=True)


def watch_building(report: SweepReport) -> None:
    """Start a build watcher where instances still build (its lease keeps it one per provider):
    it polls faster than the schedule."""
    for name, part in report.providers.items():
        if part.still_building:
            invoke.invoke_async("build_watcher", {"provider": name})
            report.watched.append(name)


def redrive(report: SweepReport) -> None:
    """Fire PENDING instances again where room has appeared (a provider came back, quota rose)."""
    for provider in models.Provider.by_kind.query("provider"):
        if provider.enabled and not health.calls_held(provider) and provider.free > 0:
            report.redriven += launcher.redrive(provider, provider.free, settings.redrive_after_seconds)


ETA_SLACK_SECONDS = 5  # an ETA that moved less than this is not written again


def estimate_waiting(report: SweepReport) -> None:
    """Give every PENDING instance that found no provider (it has a `waiting_reason`) the time it
    is expected ready (`eta.expected`), from the slots' holders this pass read, the providers'
    maintenance windows, the queue of its label and the providers' measured boot times. One query
    for the waiting instances; a write only for an ETA that changed."""
    waiting = [i for i in models.Instance.by_state_expires.query(models.PENDING) if i.waiting_reason]
    if not waiting:
        return
    now = timeutil.now()
    providers = list(models.Provider.by_kind.query("provider"))
    views = [launcher.placement_view(p, now) for p in providers]
    boot = {p.name: eta.percentile(list(p.boot_samples or []), 50) or eta.DEFAULT_BOOT_SECONDS for p in providers}
    queues: dict[str, list[models.Instance]] = {}
    for instance in waiting:
        queues.setdefault(instance.label, []).append(instance)
    for label, queue in queues.items():
        releases, windows = [], {}
        for provider in providers:
            part = report.providers.get(provider.name)
            offers = provider.enabled and label in provider.labels.as_dict() and not health.circuit_open(provider)
            if not offers or part is None or part.holders is None:
                continue
            held = sorted(now if s == models.DELETING else timeutil.parse(expires) for s, expires in part.holders)
            surplus = max(0, len(held) + provider.free - provider.cap)  # more held than the cap (quota lowered)
            releases += [(now, provider.name)] * provider.free + [(at, provider.name) for at in held[surplus:]]
            windows[provider.name] = [(w.start, w.end) for w in maintenance.windows(provider, now)]
        found = eta.expected(
            now,
            [eta.Waiting(i.id, i.created_at, i.name, timeutil.parse(i.expires_at)) for i in queue],
            releases,
            boot,
            settings.sweep_seconds,
            windows,
        )
        for instance in queue:
            expected = found.get(instance.id)
            text = None if expected is None else timeutil.iso(expected)
            old = timeutil.parse(instance.waiting_eta) if instance.waiting_eta else None
            # The reason too may have changed since its launch pass (a provider went down, or up):
            # told in the same write, and only when something changed.
            reason = launcher.why_waiting(instance, views, now) or instance.waiting_reason
            if (
                reason == instance.waiting_reason
                and (old is None) == (expected is None)
                and (old is None or abs((old - expected).total_seconds()) < ETA_SLACK_SECONDS)
            ):
                continue
            try:
                if lifecycle.note_waiting(instance, reason=reason, eta=text):
                    report.estimated += 1
            except Exception:  # one instance must not stop the pass
                log.exception("sweep: noting the ETA of %s failed", instance.id)


def start_scheduled(report: SweepReport) -> None:
    """Launch the scheduled requests whose launch time (start_at less the lead) has come, one
    that is late (the service was down) at once: one query of the sparse by_schedule index, as
    far ahead as a lead may reach. A queued request's expected launch time is written again when
    the providers' measured times moved it."""
    now = timeutil.now()
    horizon = timeutil.iso(now + timedelta(seconds=schedule.MAX_LEAD_SECONDS))
    due = list(models.Request.by_schedule.query(models.SCHEDULE_QUEUE, models.Request.start_at <= horizon))
    if not due:
        return
    providers = list(models.Provider.by_kind.query("provider"))
    for request in due:
        if request.delete_requested:
            continue
        try:
            launch_at = schedule.launch_at(timeutil.parse(request.start_at), fleet.lead(request.label, providers))
            if launch_at <= now:
                if fleet.start(request) is not None:
                    report.started.append(request.id)
            elif not request.launched_at and (
                not request.launch_at
                or abs((timeutil.parse(request.launch_at) - launch_at).total_seconds()) >= ETA_SLACK_SECONDS
            ):
                request.update(
                    actions=[models.Request.launch_at.set(timeutil.iso(launch_at))],
                    condition=models.Request.schedule_queue.exists(),
                )
        except Exception:  # one request must not stop the pass
            log.exception("sweep: starting scheduled request %s failed", request.id)


def sweep(budget: float | None = None) -> SweepReport:
    """One pass. `budget` bounds the provider jobs (default `OMS_SWEEP_BUDGET_SECONDS`)."""
    report = SweepReport()
    phases = (
        ("expire", lambda: report.expired.extend(expire())),
        ("scheduled", lambda: start_scheduled(report)),
        ("providers", lambda: _run_provider_jobs(report, settings.sweep_budget_seconds if budget is None else budget)),
        ("watch", lambda: watch_building(report)),
        ("redrive", lambda: redrive(report)),
        ("pools", lambda: report.pools.extend(asdict(r) for r in pools.refill_all())),
        ("callbacks", lambda: report.callbacks.update(callbacks.sweep())),
        ("estimate", lambda: estimate_waiting(report)),
    )
    for name, phase in phases:
        started = time.monotonic()
        try:
            phase()
        except Exception:  # one phase's failure must not cost the others their turn
            log.exception("sweep: %s failed", name)
        report.seconds[name] = round(time.monotonic() - started, 3)
    down = [name for name, part in report.providers.items() if part.checked == models.DOWN or name in report.timed_out]
    telemetry.metric("ProvidersDown", len(down))
    if report.expired or report.timed_out or report.each("vanished") or report.each("leaks_deleted"):
        log.info(
            "sweep: expired %d, timed out %s, vanished %s, leaks deleted %s",
            len(report.expired),
            report.timed_out,
            report.each("vanished"),
            report.each("leaks_deleted"),
        )
    return report
