"""Warm pools: instances of a label kept booted (and reachable, where the label requires it) so
that a request gets them at once instead of waiting out a boot.

A pool is an admin's setting per label (`models.Pool`): `min_ready`, optionally a schedule of
windows (days and hours in a stated time zone, each with its own number), `max_idle_minutes` and an
optional SSH key. Its instances are ordinary instances (`lifecycle.add_to_pool`), filed under the
request id `pool:<label>` and the owner `pool`: they take slots like any other, so they never push
a provider over a cap, and placement puts them behind every request's instances.

- **Taking** (`take`, when a request is accepted): the request gets the pool's ACTIVE instances
  first (oldest first), then those still booting, each handed over in one conditional write
  (`lifecycle.hand_over`: the request's id, owner, name and expiry); the rest are launched as
  usual. Not those on a provider whose maintenance window begins before the request ends (as
  placement would not start it there). A request asking for user data, or for an SSH key other
  than the pool's, takes none: both are given to a server at boot, and nothing of ours logs into a
  server afterwards to apply them.
- **Refilling** (`refill`, after a take and on every sweep): back up to the target, never into
  slots that waiting requests need: the instances added are at most the free slots of the
  providers that can take the label less the PENDING instances that wait for them. A pool instance
  that finds no room is retired, never left waiting. Pool instances that real instances wait
  behind (all accounts full) are retired, so a pool never keeps a request waiting. A surplus (the
  target fell: a window ended) is retired, PENDING and booting ones first.
- **Freshness**: a pool instance expires `max_idle_minutes` after it was written, and its
  replacement is launched one lead (measured boot time plus a sweep) before then, so the pool does
  not empty while its instances are replaced.

One refill at a time per pool (a lease on the pool item); two racing would add twice.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib import lifecycle, maintenance, models, placement, timeutil
from chalicelib.errors import ApiError, invalid, not_found
from chalicelib.settings import settings

log = logging.getLogger("oms.pools")

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WINDOWS = 20
DEFAULT_IDLE_MINUTES = 120
REFILL_LEASE_SECONDS = 30
# A pool instance this close to its idle expiry is neither handed over (the sweeper may be retiring
# it) nor counted as ready (its replacement is under way).
HANDOVER_MARGIN_SECONDS = lifecycle.HANDOVER_MARGIN_SECONDS
HANDOVER_WORKERS = 8  # hand-overs written at once (each one conditional write)
# States a pool instance may be handed over in, best first.
TAKEN_FIRST = (models.ACTIVE, models.BUILDING, models.LAUNCHING)
TIME_OF_DAY = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


# --- the schedule (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Days of the week (0 = Monday) and minutes of the day [start, end) in the pool's time zone."""

    days: frozenset[int]
    start: int
    end: int
    min_ready: int

    def holds(self, local: datetime) -> bool:
        minute, day = local.hour * 60 + local.minute, local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        # It ends at or before it starts: it runs past midnight into the next day (22:00-06:00;
        # 00:00-00:00 is a whole day).
        return (day in self.days and minute >= self.start) or ((day - 1) % 7 in self.days and minute < self.end)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def windows(schedule: Iterable) -> list[Window]:
    found = []
    for item in schedule or ():
        item = item.as_dict() if hasattr(item, "as_dict") else dict(item)
        found.append(
            Window(
                frozenset(DAYS.index(d) for d in item["days"]),
                _minutes(item["from"]),
                _minutes(item["to"]),
                int(item["min_ready"]),
            )
        )
    return found


def target(min_ready: int, schedule: Iterable, time_zone: str, now: datetime) -> int:
    """How many instances the pool keeps ready at `now`: the first schedule window that holds then
    (in the pool's time zone) says, else `min_ready`."""
    local = now.astimezone(ZoneInfo(time_zone))
    for window in windows(schedule):
        if window.holds(local):
            return window.min_ready
    return int(min_ready)


def pool_target(pool: models.Pool, now: datetime) -> int:
    return target(int(pool.min_ready), pool.schedule or [], pool.time_zone, now)


# --- the admin's settings -------------------------------------------------------------------------


def check_time_zone(text: str, field: str) -> None:
    """The format `iana-time-zone`: a zone the tz database knows (Europe/Berlin, UTC)."""
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(f"{field} {text!r} is not a known IANA time zone (such as Europe/Berlin)", field) from None


def check(label: str) -> None:
    """What the schema cannot say: a label some enabled provider offers."""
    from chalicelib import providers  # it imports the views, which import this module

    if not providers.offering(label):
        raise ApiError("unprocessable", f"no enabled provider offers label {label}", "label")


def put(label: str, body: dict) -> models.Pool:
    """Create or replace the pool of `label`; its instances follow at once (a refill)."""
    check(label)
    now = timeutil.now_iso()
    try:
        old = models.Pool.get(label, consistent_read=True)
    except DoesNotExist:
        old = None
    pool = models.Pool(
        label,
        min_ready=body["min_ready"],
        schedule=[{**w, "days": sorted(set(w["days"]), key=DAYS.index)} for w in body.get("schedule") or []] or None,
        time_zone=body.get("time_zone") or "UTC",
        max_idle_minutes=body.get("max_idle_minutes") or DEFAULT_IDLE_MINUTES,
        ssh_public_key=body.get("ssh_public_key"),
        created_at=old.created_at if old else now,
        updated_at=now,
        refill_until=old.refill_until if old else None,  # a refill under way keeps its lease
    )
    pool.save()
    if old is not None and _key(old.ssh_public_key) != _key(pool.ssh_public_key):
        # Its instances booted with the old key: a request asking for the new one must not get them.
        for instance in members(label):
            lifecycle.retire_from_pool(instance)
    refill_soon(label)
    return pool


def get(label: str) -> models.Pool:
    try:
        return models.Pool.get(label)
    except DoesNotExist:
        raise not_found(f"pool {label}") from None


def all_pools() -> list[models.Pool]:
    return list(models.Pool.by_kind.query("pool"))


def delete(label: str) -> None:
    """Remove the pool and retire its instances (a request that took some keeps them)."""
    pool = get(label)
    pool.delete()
    for instance in members(label):
        lifecycle.retire_from_pool(instance)


def refill_soon(label: str) -> None:
    """Refill in the background (the async `pool_refill` function), never in the caller's time."""
    from chalicelib import invoke

    try:
        invoke.invoke_async("pool_refill", {"label": label})
    except Exception:  # the sweeper refills anyway
        log.exception("starting a refill of pool %s failed", label)


# --- members ---------------------------------------------------------------------------------------


def members(label: str, states: Iterable[str] = models.ON_THE_WAY + (models.ACTIVE,)) -> list[models.Instance]:
    """The pool's live instances not on their way out (through the label/state index: what is
    live, not every instance the pool ever had)."""

    def query(state: str) -> list[models.Instance]:
        return list(
            models.Instance.by_label_state.query(
                label,
                models.Instance.state == state,
                filter_condition=models.Instance.request_id == models.POOL_PREFIX + label,
            )
        )

    with ThreadPoolExecutor(max_workers=4) as pool:  # one query per state, side by side
        found = [i for part in pool.map(query, states) for i in part]
    return found


def counts(label: str) -> dict[str, int]:
    """The view's: ready (ACTIVE), booting (LAUNCHING, BUILDING) and pending."""
    found = members(label)
    return {
        "ready": sum(1 for i in found if i.state == models.ACTIVE),
        "booting": sum(1 for i in found if i.state in (models.LAUNCHING, models.BUILDING)),
        "pending": sum(1 for i in found if i.state == models.PENDING),
    }


def is_member(instance: models.Instance) -> bool:
    return instance.request_id.startswith(models.POOL_PREFIX)


def _key(text: str | None) -> str | None:
    """An OpenSSH key without its comment: the same key is the same whatever it is called."""
    return " ".join(text.split()[:2]) if text else None


def eligible(request: models.Request, pool: models.Pool) -> bool:
    """Whether the request may take the pool's instances: no user data, and no key or the pool's."""
    if request.user_data:
        return False
    return request.ssh_public_key is None or _key(request.ssh_public_key) == _key(pool.ssh_public_key)


def _candidates(request: models.Request) -> list[models.Instance]:
    """The pool instances the request may take, best first: ACTIVE ones (oldest first), then
    booting ones; none near their idle expiry, none on a provider whose maintenance window begins
    before the request ends (as placement would not start one there)."""
    try:
        pool = models.Pool.get(request.label)
    except DoesNotExist:
        return []
    if not eligible(request, pool):
        return []
    now = timeutil.now()
    margin = timeutil.iso(now + timedelta(seconds=HANDOVER_MARGIN_SECONDS))
    found = [i for i in members(request.label, TAKEN_FIRST) if i.expires_at > margin]
    if any(i.provider for i in found):
        ends = timeutil.parse(request.expires_at)
        held = {
            p.name
            for p in models.Provider.by_kind.query("provider")
            if maintenance.blocks([w.start for w in maintenance.windows(p, now)], ends)
        }
        found = [i for i in found if i.provider not in held]
    found.sort(key=lambda i: (TAKEN_FIRST.index(i.state), i.active_at or "", i.created_at, i.id))
    return found[: int(request.count)]


def _plan(request: models.Request) -> tuple[dict[str, str], dict[str, models.Instance]]:
    """Which pool instance each index takes: the plan the request holds, or a new one written on
    it in one conditional write (only if it has none yet: two launches of one request, a retried
    POST and the first, end up with the same plan). With the planned instances as read (a plan
    found on the request: read again, consistently)."""
    if request.pool_plan is None:
        chosen = _candidates(request)
        plan = {str(index): instance.id for index, instance in enumerate(chosen)}
        try:
            request.update(
                actions=[models.Request.pool_plan.set(plan)], condition=models.Request.pool_plan.does_not_exist()
            )
            return plan, {i.id: i for i in chosen}
        except UpdateError as error:
            if not models.is_conditional_failure(error):
                raise
        request.refresh(consistent_read=True)
    plan = request.pool_plan.as_dict() if hasattr(request.pool_plan, "as_dict") else dict(request.pool_plan)
    found = models.Instance.batch_get(list(plan.values()), consistent_read=True) if plan else []
    return plan, {i.id: i for i in found}


def take(request: models.Request) -> list[models.Instance]:
    """Hand the request the pool instances its plan names, each named as the request's instance of
    its index (an index whose instance went elsewhere meanwhile is left to `lifecycle.accept`,
    which launches it). Safe to call again for the same request (a retry): an instance handed
    over already is found the request's, and none is taken twice."""
    plan, found = _plan(request)
    if not plan:
        return []

    def settle(item: tuple[str, str]) -> models.Instance | None:
        index, instance_id = item
        instance = found.get(instance_id)
        if instance is None:
            return None
        if instance.request_id == models.POOL_PREFIX + request.label and instance.state in TAKEN_FIRST:
            lifecycle.hand_over(instance, request, lifecycle.instance_name(request, int(index)))
        # Ours whether this call or an earlier one (a retry's first try) handed it over.
        return instance if instance.request_id == request.id else None

    with ThreadPoolExecutor(max_workers=HANDOVER_WORKERS) as pool:
        taken = [i for i in pool.map(settle, sorted(plan.items(), key=lambda kv: int(kv[0]))) if i is not None]
    if taken:
        log.info("request %s: took %d instances from pool %s", request.id, len(taken), request.label)
        refill_soon(request.label)
    return taken


# --- refilling -------------------------------------------------------------------------------------


@dataclass
class Refill:
    label: str
    target: int = 0
    members: int = 0
    added: int = 0
    retired: list[str] | None = None


def _lease(pool: models.Pool) -> str | None:
    """Take the pool's refill lease; its value (None: another refill holds it)."""
    now = timeutil.now()
    until = f"{timeutil.iso(now + timedelta(seconds=REFILL_LEASE_SECONDS))}/{secrets.token_hex(4)}"
    condition = models.Pool.refill_until.does_not_exist() | (models.Pool.refill_until < timeutil.iso(now))
    try:
        pool.update(actions=[models.Pool.refill_until.set(until)], condition=condition & models.Pool.label.exists())
    except UpdateError as error:
        if models.is_conditional_failure(error):
            return None
        raise
    return until


def _unlease(pool: models.Pool, lease: str) -> None:
    """Give the lease back, if it is still ours (one that ran out may be another refill's now)."""
    try:
        pool.update(actions=[models.Pool.refill_until.remove()], condition=models.Pool.refill_until == lease)
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise


def refill(label: str) -> Refill | None:
    """Bring the pool of `label` to its target now (the sweeper's phase and `pool_refill`); None
    when there is no such pool or another refill holds it."""
    try:
        pool = models.Pool.get(label, consistent_read=True)
    except DoesNotExist:
        return None
    lease = _lease(pool)
    if lease is None:
        return None
    try:
        return _refill(pool)
    finally:
        _unlease(pool, lease)


def _refill(pool: models.Pool) -> Refill:
    now = timeutil.now()
    result = Refill(pool.label, target=pool_target(pool, now), retired=[])
    views = [_view(p, now) for p in models.Provider.by_kind.query("provider")]
    idle_until = now + timedelta(minutes=int(pool.max_idle_minutes))
    usable = [
        v
        for v in views
        if v.enabled
        and v.circuit != placement.OPEN
        and pool.label in v.labels
        and not maintenance.blocks(v.maintenance, idle_until)
    ]
    lead = _lead(pool.label)
    renew_by = timeutil.iso(now + timedelta(seconds=lead + HANDOVER_MARGIN_SECONDS))
    found = members(pool.label)
    counting = [i for i in found if i.expires_at > renew_by]  # the others are being replaced
    result.members = len(counting)
    waiting = [
        i
        for i in models.Instance.by_state_expires.query(models.PENDING)
        if not is_member(i) and any(i.label in v.labels for v in usable)
    ]
    free = sum(v.free for v in usable)
    stuck = sum(1 for i in waiting if i.waiting_reason == placement.ALL_FULL)
    # The pool yields: real instances that wait for a slot its idle instances hold get them
    # (those nearest their idle expiry first).
    holding = sorted((i for i in found if i.state in models.HOLDING), key=lambda i: (i.expires_at, i.id))
    yielding = holding[: max(0, stuck - free)] if stuck else []
    surplus = _retire_order(counting)[: max(0, len(counting) - result.target)]
    going = list({i.id: i for i in [*surplus, *yielding]}.values())
    for instance in going:
        if lifecycle.retire_from_pool(instance):
            result.retired.append(instance.id)
    if going:
        log.info("pool %s: retired %d (target %d)", pool.label, len(result.retired), result.target)
        return result
    # Room: free slots less what waits for them, the pool's own unplaced instances included; and
    # never more than twice the target at once, renewals included (an idle age shorter than the
    # renewal lead would otherwise renew without end).
    pending = sum(1 for i in found if i.state == models.PENDING)
    room = free - len(waiting) - pending
    wanted = min(result.target - len(counting), room, 2 * result.target - len(found))
    if wanted > 0 and _exists(pool.label):
        lifecycle.add_to_pool(pool, wanted)
        result.added = wanted
        log.info("pool %s: adding %d (target %d, room %d)", pool.label, wanted, result.target, room)
    return result


def _exists(label: str) -> bool:
    """Whether the pool is still there (removed during the refill: nothing is added for it)."""
    try:
        models.Pool.get(label, consistent_read=True)
    except DoesNotExist:
        return False
    return True


def _view(provider: models.Provider, now: datetime) -> placement.Slots:
    from chalicelib import launcher  # the launcher's own view of a provider, outside a pass

    return launcher.placement_view(provider, now)


def _retire_order(found: list[models.Instance]) -> list[models.Instance]:
    """Those not ready yet first (PENDING, then booting), then ready ones, oldest first."""
    order = (models.PENDING, models.LAUNCHING, models.BUILDING, models.ACTIVE)
    return sorted(found, key=lambda i: (order.index(i.state), i.created_at, i.id))


def _lead(label: str) -> float:
    """How long before an idle instance's expiry its replacement is launched: as long as before a
    scheduled request's start (the slowest measured time to ready of the label's providers, a
    sweep and a margin: schedule.lead_seconds)."""
    from chalicelib import providers, schedule

    return schedule.lead_seconds(
        [list(p.ready_samples or []) for p in providers.offering(label)], settings.sweep_seconds
    )


def refill_all() -> list[Refill]:
    """The sweeper's phase: every pool, each on its own (one failing must not stop the others)."""
    done = []
    for pool in all_pools():
        try:
            result = refill(pool.label)
        except Exception:
            log.exception("refilling pool %s failed", pool.label)
            continue
        if result is not None and (result.added or result.retired):
            done.append(result)
    return done
