"""Launch: place a stream batch's PENDING instances, reserve slots, create servers, fail over.

One pass per batch. Rounds inside the pass let a provider on probation take its probe first and
the rest of its share only once that create was accepted. Creates run in parallel, bounded per
provider. Every error releases the slot, records the attempt and puts the instance back to
PENDING, which fires the stream again for the next provider.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from chalicelib import (
    cloud,
    governor,
    health,
    invoke,
    lifecycle,
    maintenance,
    models,
    placement,
    slots,
    telemetry,
    timeutil,
    userdata,
)
from chalicelib.settings import settings

log = logging.getLogger("oms.launcher")

PROBATION_SECONDS = 600  # a provider with no accepted create for this long gets a probe first
EXCLUDE_SECONDS = 600  # a provider that failed an instance is not tried again for it this long
MAX_WORKERS = 32
WAITING_PER_PASS = 1000  # PENDING instances of a batch's labels a launch pass takes on besides its own


def excluded(instance: models.Instance, now_iso: str) -> frozenset[str]:
    since = timeutil.iso(timeutil.parse(now_iso) - timedelta(seconds=EXCLUDE_SECONDS))
    return frozenset(a.provider for a in instance.attempts if a.at >= since and a.excludes is not False)


def _slots(provider: models.Provider, now, proven: set[str], failed: set[str], probed: set[str]) -> placement.Slots:
    retry_at = timeutil.parse(provider.retry_at) if provider.retry_at else None
    ok_at = timeutil.parse(provider.last_launch_ok_at) if provider.last_launch_ok_at else None
    recent = ok_at is not None and (now - ok_at).total_seconds() < PROBATION_SECONDS
    return placement.Slots(
        name=provider.name,
        priority=int(provider.priority),
        free=provider.free,
        labels=frozenset(provider.labels.as_dict()),
        # A provider whose builds keep failing gets one probe per pass (its build ends after the pass).
        enabled=bool(provider.enabled)
        and provider.name not in failed
        and not (provider.name in probed and health.builds_failing(provider)),
        circuit=placement.circuit_state(provider.health_state, retry_at, now),
        on_probation=(provider.name not in proven and not recent) or health.builds_failing(provider),
        maintenance=tuple(w.start for w in maintenance.windows(provider, now)),
    )


def _still_pending(instance_ids) -> list[models.Instance]:
    return [i for i in models.Instance.batch_get(instance_ids, consistent_read=True) if i.state == models.PENDING]


def _room(providers: dict[str, models.Provider], label: str) -> int:
    """Free slots for `label` on enabled providers, as read."""
    return sum(p.free for p in providers.values() if p.enabled and label in p.labels.as_dict())


def _waiting_with(pending: list[models.Instance], providers: dict[str, models.Provider]) -> list[models.Instance]:
    """Other PENDING instances of the same labels, as many as there is room for (from the
    label/state index, then read consistently): a request's instances reach the stream in several
    batches, and one pass that places them all saves the passes after it a wait and a placement."""
    known = {i.id for i in pending}
    more = []
    for label in sorted({i.label for i in pending}):
        wanted = min(WAITING_PER_PASS, _room(providers, label) - sum(1 for i in pending if i.label == label))
        if wanted <= 0:
            continue
        query = models.Instance.by_label_state.query(label, models.Instance.state == models.PENDING, limit=wanted)
        more.extend(i.id for i in query if i.id not in known)
    return _still_pending(more) if more else []


def launch(instance_ids: list[str]) -> None:
    """Launch whichever of these instances are still PENDING, and other PENDING instances of
    their labels that have not reached the stream yet."""
    pending = _still_pending(instance_ids)
    if not pending:
        return
    providers = {p.name: p for p in models.Provider.by_kind.query("provider")}
    # Requests' instances before warm pools' (placement goes in this order): a pool never takes
    # the slot a request needs.
    pending = sorted(pending + _waiting_with(pending, providers), key=lambda i: (_pooled(i), i.name))
    requests = _requests_of(pending)
    # A pool removed meanwhile: its instances not launched yet go with it.
    for instance in [i for i in pending if _pooled(i) and i.request_id not in requests]:
        lifecycle.retire_from_pool(instance)
    pending = [i for i in pending if i.request_id in requests or not _pooled(i)]
    pending = _fail_exhausted(pending)
    proven: set[str] = set()
    failed: set[str] = set()
    probed: set[str] = set()
    watched: set[str] = set()
    first_round = True
    while pending:
        now = timeutil.now()
        if not first_round:
            providers = {p.name: p for p in models.Provider.by_kind.query("provider")}
        first_round = False
        plan = placement.place(
            [
                placement.Need(i.id, i.label, excluded(i, timeutil.iso(now)), timeutil.parse(i.expires_at))
                for i in pending
            ],
            [_slots(p, now, proven, failed, probed) for p in providers.values()],
        )
        probed.update(plan.values())
        if not plan:
            break
        by_id = {i.id: i for i in pending}
        results, no_room = _reserve_and_create(plan, by_id, providers, requests)
        if not results:
            break  # our view of free slots was stale; the next batch or the sweeper goes on
        for name, created, recorded in results:
            if not created:
                failed.add(name)
                continue
            if name not in proven:
                proven.add(name)
                health.record_launch_ok(providers[name])
            if recorded and name not in watched:
                # Watching starts while later rounds still create; one watcher per provider.
                watched.add(name)
                invoke.invoke_async("build_watcher", {"provider": name})
        # Lost claims are someone else's now; instances that met a full provider try again.
        pending = [i for i in pending if i.id not in plan or i.id in no_room]
    # Once more at the end: a watcher started early may have finished before our last creates.
    for name in watched:
        invoke.invoke_async("build_watcher", {"provider": name})
    # A pool instance never waits: where there is no room now, the pool is smaller for a while.
    for instance in [i for i in pending if _pooled(i)]:
        lifecycle.retire_from_pool(instance)  # unless another pass claimed it meanwhile
    pending = [i for i in pending if not _pooled(i)]
    if pending:
        try:
            _note_why_waiting(pending)
        except Exception:  # telling why must never fail the batch (its launches are done)
            log.exception("noting why %d instances wait failed", len(pending))


def _pooled(instance: models.Instance) -> bool:
    return instance.request_id.startswith(models.POOL_PREFIX)


def _requests_of(pending: list[models.Instance]) -> dict[str, models.Request | models.Pool]:
    """What each instance was asked for with (its SSH key and user data): its request, or for a
    warm pool's instance its pool."""
    ids = {i.request_id for i in pending}
    found: dict = {r.id: r for r in models.Request.batch_get({i for i in ids if not i.startswith(models.POOL_PREFIX)})}
    labels = {i[len(models.POOL_PREFIX) :] for i in ids if i.startswith(models.POOL_PREFIX)}
    if labels:
        found.update({p.request_id: p for p in models.Pool.batch_get(labels)})
    return found


def _note_why_waiting(pending: list[models.Instance]) -> None:
    """Tell the instances this pass could not place why they wait (placement decides, against the
    providers read once more now); a write only where the reason changed."""
    now = timeutil.now()
    views = [placement_view(p, now) for p in models.Provider.by_kind.query("provider")]
    for instance in pending:
        reason = why_waiting(instance, views, now)
        if reason is not None and reason != instance.waiting_reason:
            lifecycle.note_waiting(instance, reason=reason)


def placement_view(provider: models.Provider, now) -> placement.Slots:
    """What placement sees of a provider outside a launch pass (no probes or failures of its own)."""
    return _slots(provider, now, set(), set(), set())


def why_waiting(instance: models.Instance, views: list[placement.Slots], now) -> str | None:
    """Placement's reason, for the instance as placement saw it (its expiry too: a maintenance
    window after it does not keep the instance off a provider, so it is no reason to wait)."""
    need = placement.Need(
        instance.id, instance.label, excluded(instance, timeutil.iso(now)), timeutil.parse(instance.expires_at)
    )
    return placement.why_waiting(need, views)


def _fail_exhausted(pending: list[models.Instance]) -> list[models.Instance]:
    """Instances out of attempts go to FAILED; the rest stay to be placed."""
    keep = []
    for instance in pending:
        if len(instance.attempts) < settings.max_attempts:
            keep.append(instance)
        else:
            lifecycle.give_up(instance)
    return keep


def _reserve_and_create(plan: dict[str, str], by_id, providers, requests) -> tuple[list[tuple], set[str]]:
    """Reserve the round's slots (one write per provider), then claim each instance and create
    its server, in parallel, at most the provider's `max_concurrent_creates` at a time (the
    governor's bound, shared with the other passes of this process).

    Each create is recorded (BUILDING with its server id) or failed over as soon as it returns.
    Returns (provider, created, recorded) for every instance claimed, and the ids of instances
    that found their provider full."""
    wanted: dict[str, list[str]] = {}
    for instance_id, name in plan.items():
        wanted.setdefault(name, []).append(instance_id)

    def launch_one(instance: models.Instance, provider: models.Provider) -> tuple[str, bool, bool, bool]:
        """(provider, claimed, created, recorded); never raises, so every reserved slot is
        either claimed or given back, and one instance's failure never stops the others."""
        claimed = False
        try:
            # Claim only once a create slot is ours: a claim's age then measures its create alone,
            # which is what the sweeper's stale-launch recovery assumes.
            with governor.creates(provider):
                claimed = lifecycle.claim(instance, provider.name)
                if not claimed:
                    return provider.name, False, False, False
                outcome = create(instance, provider)
                if isinstance(outcome, cloud.CloudError) and outcome.uncertain:
                    outcome = _settle_uncertain_create(instance, provider, outcome)
            if outcome is None:
                return provider.name, True, False, False
            result = outcome.error_class if isinstance(outcome, cloud.CloudError) else "ok"
            telemetry.metric("Launches", provider=provider.name, outcome=result)
            if isinstance(outcome, cloud.CloudError):
                fail_over(instance, outcome, provider)
                return provider.name, True, False, False
            return provider.name, True, True, _record_server(instance, outcome, provider)
        except Exception:
            # A claimed instance left LAUNCHING is settled by the sweeper's stale-launch recovery;
            # a claim that failed outright leaves its slot counted until the drift check.
            log.exception("instance %s: launch on %s failed unexpectedly", instance.id, provider.name)
            return provider.name, claimed, False, False

    def reserve(name: str) -> int:
        try:
            return slots.reserve(providers[name], len(wanted[name]))
        except Exception:
            log.exception("reserving slots on %s failed", name)
            return 0

    def create(instance: models.Instance, provider: models.Provider) -> str | cloud.CloudError:
        request = requests.get(instance.request_id)
        try:
            return cloud.create_server(
                provider,
                name=instance.name,
                label=instance.label,
                metadata=cloud.server_metadata(instance.id, instance.request_id, instance.expires_at),
                user_data=userdata.compose(
                    getattr(request, "ssh_public_key", None),
                    getattr(request, "user_data", None),
                    multipart=provider.multipart_user_data,
                ),
            )
        except userdata.NeedsMultipart as error:
            # This provider cannot take the request's user data at all: another one may.
            return cloud.CloudError(
                cloud.CONFIG, f"{error}, which {provider.name} refuses (multipart_user_data: false)"
            )
        except cloud.CloudError as error:
            return error
        except Exception as error:  # never let one create take the batch down
            log.exception("instance %s: create failed unexpectedly", instance.id)
            return cloud.classify(error)

    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(plan))) as pool:
        granted = dict(zip(wanted, pool.map(telemetry.carry(reserve, "reserve"), wanted), strict=True))
        go = {i: name for name, ids in wanted.items() for i in ids[: granted[name]]}
        no_room = set(plan) - set(go)
        one = telemetry.carry(lambda item: launch_one(by_id[item[0]], providers[item[1]]), "launch_one")
        outcomes = list(pool.map(one, [item for item in plan.items() if item[0] in go]))
    return [(name, created, recorded) for name, claimed, created, recorded in outcomes if claimed], no_room


def _settle_uncertain_create(
    instance: models.Instance, provider: models.Provider, error: cloud.CloudError
) -> str | cloud.CloudError | None:
    """A create whose answer was lost (a read timeout, a 502/504) may have made a server: look for
    it by its metadata. Returns its id, the error if there is none, or None when even the lookup
    fails: the instance then stays LAUNCHING, and the sweeper's stale-launch recovery settles it."""
    try:
        found = cloud.find_server(provider, instance.id)
    except cloud.CloudError:
        log.warning(
            "instance %s: create on %s ended unknown (%s); left to stale-launch recovery",
            instance.id,
            provider.name,
            error.message,
        )
        health.record_outcome(provider, error)
        return None
    return found.id if found else error


def _record_server(instance: models.Instance, server_id: str, provider: models.Provider) -> bool:
    """LAUNCHING -> BUILDING with the server's id. If the instance was deleted meanwhile, the server
    we just made is deleted here (nobody else knows of it) and the teardown is finished."""
    fields = telemetry.about(instance, provider.name, to=models.BUILDING)
    if lifecycle.record_server(instance, server_id):
        log.info("instance %s: server %s created on %s", instance.id, server_id, provider.name, extra=fields)
        return True
    if instance.server_id == server_id:
        return False  # the sweeper's stale-launch recovery adopted this very server: it is recorded
    log.info(
        "instance %s was %s before its server %s was recorded; deleting it", instance.id, instance.state, server_id
    )
    try:
        cloud.delete_server(provider, server_id)
    except cloud.CloudError:
        log.warning(
            "instance %s: delete of unrecorded server %s failed; it keeps its oms_* metadata for the leak pass",
            instance.id,
            server_id,
        )
        return False
    if instance.state == models.DELETING and instance.server_id is None:
        lifecycle.end(instance)
    return False


def resume_stale_launch(instance: models.Instance, provider: models.Provider, servers: list[cloud.Server]) -> bool:
    """Finish a launch whose worker died between claim and record: adopt the server it made (found
    by its `oms_instance_id` metadata), or, if none was made, send the instance back to PENDING.
    Returns True when a server was adopted."""
    server = next((s for s in servers if s.instance_id == instance.id), None)
    if server is not None:
        log.info("instance %s: adopting server %s found by its metadata", instance.id, server.id)
        return lifecycle.record_server(instance, server.id)
    error = cloud.CloudError(cloud.UNKNOWN, "the launch was interrupted before a server was created")
    fail_over(instance, error, provider, provider_at_fault=False)
    return False


def fail_over(
    instance: models.Instance, error: cloud.CloudError, provider: models.Provider, *, provider_at_fault: bool = True
) -> None:
    """Send the instance on to the next provider (`lifecycle.fail_over`); an error that is the
    provider's fault counts on its health. A rate limit says "slow down", not "this provider cannot
    take it": the provider is not excluded for the instance (the rate governor paces it)."""
    excludes = provider_at_fault and error.error_class != cloud.RATE_LIMITED
    if lifecycle.fail_over(instance, error, provider_at_fault=excludes) and provider_at_fault:
        health.record_outcome(provider, error)


def _last_event(instance: models.Instance) -> str:
    stamps = [instance.created_at, instance.redrive_at or "", *(a.at for a in instance.attempts[-1:])]
    return max(stamps)


def redrive(provider: models.Provider, room: int, waited_seconds: float = 0) -> int:
    """Fire the stream again for up to `room` PENDING instances of labels `provider` offers
    (a slot there was freed, or the sweeper found room), skipping any whose last event is
    younger than `waited_seconds` (a launch pass may be at work on it). Returns how many fired."""
    fired = 0
    now = timeutil.now_iso()
    quiet_since = timeutil.iso(timeutil.parse(now) - timedelta(seconds=waited_seconds))
    for label in provider.labels.as_dict():
        if fired >= room:
            break
        waiting = models.Instance.by_label_state.query(label, models.Instance.state == models.PENDING)
        for instance in waiting:
            if fired >= room:
                break
            if provider.name in excluded(instance, now) or _last_event(instance) > quiet_since:
                continue
            if lifecycle.redrive(instance):  # else it moved on meanwhile: fine
                fired += 1
    return fired
