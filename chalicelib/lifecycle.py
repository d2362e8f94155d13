"""The instance lifecycle: every change of an instance's state, and the condition it is written under.

```
PENDING --claim--> LAUNCHING --record_server--> BUILDING --came_up--> ACTIVE
   ^                  |  fail_over                  |  fail_over        |  fail_over (server vanished)
   +------------------+-----------------------------+-------------------+
PENDING --give_up (out of attempts)--> FAILED        (fail_over past the last attempt: FAILED too)
any live state --retire--> DELETING --end--> DELETED    (PENDING: retire goes straight to DELETED)
```
A warm pool's instance (`add_to_pool`) lives the same life; `hand_over` gives it to a request in
whatever state it is in (the state unchanged).
The API (accept, retire, extend), the stream adapter, the launcher, the build watcher and the
sweeper call these; nothing else writes an instance's `state`.

One concurrency scheme, conditions on what the writer read: a state change is written only while
the item is still in the state the writer saw *and* holds the same claim (provider, server,
launch time). Edits that leave the state alone (an extended expiry, a re-drive touch, a failed
delete's back-off) are conditioned on the state only, so they never cancel a launch or a failover
in flight, and no version number is kept. A writer that loses its condition gets False with the
item re-read: someone else moved it on, and the turn is theirs.

Slots: an instance that leaves a slot-holding state gives its slot back after its own transition
won, so a slot is released exactly once however often a record is delivered (`slots`).

No openstacksdk here: the callers make the cloud calls and tell the lifecycle what they found.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from datetime import timedelta

from pynamodb.exceptions import UpdateError
from pynamodb.expressions.operand import Path

from chalicelib import addresses, slots, telemetry, timeutil
from chalicelib.faults import CloudError
from chalicelib.models import (
    ACTIVE,
    BUILDING,
    DELETED,
    DELETING,
    FAILED,
    HOLDING,
    LAUNCHING,
    LIVE_STATES,
    PENDING,
    POOL_OWNER,
    TERMINAL_STATES,
    Attempt,
    Instance,
    IpAddress,
    Pool,
    Request,
    is_conditional_failure,
)
from chalicelib.settings import settings

log = logging.getLogger("oms.lifecycle")

# A write that keeps losing its condition to other writers gives up after this many reads.
WRITE_RETRIES = 10
# A pool instance this close to the end of its idle life is not handed over: the sweeper may be
# retiring it (its check of the expiry and its write are not one).
HANDOVER_MARGIN_SECONDS = 60


class ChangingTooFast(Exception):
    """An instance kept changing under a writer: the API answers 409, try again."""


# --- the one conditional write ----------------------------------------------------------------


def _move(instance: Instance, to_state: str, *, expected: Iterable[str], actions: Iterable = (), also=None) -> bool:
    """Move `instance` to `to_state` if it is still in one of `expected`, with the same claim
    (provider, server, launch) we read (and `also`, a further condition). Returns False, with
    `instance` re-read, when another writer changed any of those first."""
    condition = Instance.state.is_in(*tuple(expected))
    if also is not None:
        condition &= also
    for attribute in (Instance.provider, Instance.server_id, Instance.launched_at):
        value = getattr(instance, attribute.attr_name)
        # An absent attribute may also have been written as NULL (pynamodb's set(None)).
        condition &= (
            (attribute.does_not_exist() | Path(attribute).is_type("NULL")) if value is None else attribute == value
        )
    now = timeutil.now()
    all_actions = [Instance.state.set(to_state), Instance.state_changed_at.set(timeutil.iso(now)), *actions]
    if to_state == ACTIVE:
        all_actions.append(Instance.active_at.set(timeutil.iso(now)))
    if to_state == DELETED:
        all_actions.append(Instance.deleted_at.set(timeutil.iso(now)))
    if to_state in TERMINAL_STATES:
        all_actions.append(Instance.purge_at.set(int(now.timestamp()) + settings.keep_ended_days * 86400))
    return _update(instance, all_actions, condition)


def _update(instance: Instance, actions: list, condition) -> bool:
    try:
        instance.update(actions=actions, condition=condition)
    except UpdateError as error:
        if is_conditional_failure(error):
            instance.refresh(consistent_read=True)
            return False
        raise
    return True


def _release(instance: Instance, to_state: str, actions: Iterable = (), *, give: bool = True) -> bool:
    """Move a slot-holding instance to `to_state`, then give its slot back (unless `give` is
    False: the caller gives several back in one write)."""
    if instance.state not in HOLDING or instance.provider is None:
        raise ValueError(f"instance {instance.id} in {instance.state} holds no slot")
    provider_name = instance.provider
    if not _move(instance, to_state, expected=[instance.state], actions=actions):
        return False
    if give:
        slots.give_back(provider_name)
    return True


# --- accept ------------------------------------------------------------------------------------


def instance_id(request_id: str, index: int) -> str:
    """A request's instances have ids derived from it, so a retried accept writes the same items."""
    return "i-" + hashlib.sha256(f"{request_id}/{index}".encode()).hexdigest()[:16]


def instance_name(request: Request, index: int) -> str:
    """The name of a request's instance of `index` (0, 1, ...)."""
    return f"{request.name_prefix}-{request.id[2:8]}-{index:03d}"


def accept(request: Request, instances: list[Instance]) -> list[Instance]:
    """Write the request's instances that are not there yet (all, on first accept, but those taken
    from a warm pool) as PENDING: their stream records ask for a launch. An index is there when an
    instance of its name is. Returns all of them, by name."""
    existing = {i.name for i in instances}
    # A scheduled request's instances are asked for when it is launched, not when it was made:
    # their ready times measure the launch, not the wait for start_at.
    created_at = request.launched_at or request.created_at
    missing = [
        Instance(
            instance_id(request.id, index),
            request_id=request.id,
            owner=request.owner,
            name=instance_name(request, index),
            label=request.label,
            state=PENDING,
            state_changed_at=created_at,
            created_at=created_at,
            expires_at=request.expires_at,
        )
        for index in range(int(request.count))
        if instance_name(request, index) not in existing
    ]
    if missing:
        with Instance.batch_write() as batch:
            for instance in missing:
                batch.save(instance)
    return sorted([*instances, *missing], key=lambda i: i.name)


# --- warm pools ------------------------------------------------------------------------------------


def add_to_pool(pool: Pool, count: int) -> list[Instance]:
    """Write `count` PENDING instances for a label's warm pool (pools.py): they launch like a
    request's and expire after the pool's idle age, unless a request takes them first."""
    now = timeutil.now()
    created_at = timeutil.iso(now)
    added = []
    for _ in range(count):
        suffix = secrets.token_hex(8)
        added.append(
            Instance(
                "i-" + suffix,
                request_id=pool.request_id,
                owner=POOL_OWNER,
                name=f"pool-{pool.label}-{suffix[:6]}",
                label=pool.label,
                state=PENDING,
                state_changed_at=created_at,
                created_at=created_at,
                expires_at=timeutil.in_minutes(int(pool.max_idle_minutes), now),
            )
        )
    with Instance.batch_write() as batch:
        for instance in added:
            batch.save(instance)
    return added


def retire_from_pool(instance: Instance) -> bool:
    """Retire a warm pool's idle instance (a surplus, a yield, a pool removed, one with no room):
    as `retire`, but only while it is still the pool's and in the state read, in one try. A
    request may have taken it meanwhile (it is then the request's), or a launch claimed it: either
    way the write loses, and it is left alone."""
    if instance.state not in LIVE_STATES or instance.state == DELETING:
        return False
    target = DELETED if instance.state == PENDING else DELETING
    return _move(instance, target, expected=[instance.state], also=Instance.request_id == instance.request_id)


def hand_over(instance: Instance, request: Request, name: str) -> bool:
    """A warm pool's instance taken by a request: it becomes the request's (id, owner, `name`,
    lifetime), in the state it is in, in one write conditioned on that state, on its still being
    the pool's and on its not being at the end of its idle life (the sweeper may be retiring it).
    The stream carries the new expiry to the server's tag. False when another writer won."""
    margin = timeutil.iso(timeutil.now() + timedelta(seconds=HANDOVER_MARGIN_SECONDS))
    condition = (Instance.state == instance.state) & (Instance.request_id == instance.request_id)
    condition &= Instance.expires_at > margin
    actions = [
        Instance.request_id.set(request.id),
        Instance.owner.set(request.owner),
        Instance.name.set(name),
        Instance.expires_at.set(request.expires_at),
        Instance.pooled_at.set(timeutil.now_iso()),
    ]
    if not _update(instance, actions, condition):
        return False
    instance.request_id, instance.owner, instance.name = request.id, request.owner, name
    instance.expires_at, instance.pooled_at = request.expires_at, timeutil.now_iso()
    return True


# --- launch --------------------------------------------------------------------------------------


def claim(instance: Instance, provider_name: str) -> bool:
    """PENDING -> LAUNCHING on a slot reserved on the provider. A lost claim (someone else moved
    the instance on) gives the slot straight back."""
    claimed = _move(
        instance,
        LAUNCHING,
        expected=[PENDING],
        actions=[
            Instance.provider.set(provider_name),
            Instance.launched_at.set(timeutil.now_iso()),
            Instance.waiting_reason.remove(),
            Instance.waiting_eta.remove(),
        ],
    )
    if not claimed:
        slots.give_back(provider_name)
    return claimed


def record_server(instance: Instance, server_id: str) -> bool:
    """LAUNCHING -> BUILDING with the server made for it (by this launch, or found by its metadata
    after the launch was interrupted). False when the instance moved on meanwhile: if it is being
    deleted, the caller deletes the server nobody else knows of, then calls `end`."""
    return _move(instance, BUILDING, expected=[LAUNCHING], actions=[Instance.server_id.set(server_id)])


def came_up(
    instance: Instance, found: Iterable[addresses.Address], host_keys: Iterable[str] = (), *, family: str
) -> bool:
    """BUILDING -> ACTIVE with the server's addresses, the one to reach it at (of its provider's
    `address_family` first), and its host keys."""
    found, host_keys = list(found), list(host_keys)
    fields = telemetry.about(instance, to=ACTIVE)
    actions = [
        Instance.addresses.set(
            {family: [a.addr for a in found if a.family == family] for family in addresses.FAMILIES}
        ),
        Instance.ips.set([IpAddress(**a.as_dict()) for a in found]),
    ]
    reach = addresses.access_ip(found, family)
    actions.append(Instance.access_ip.set(reach) if reach else Instance.access_ip.remove())
    actions.append(Instance.host_keys.set(host_keys) if host_keys else Instance.host_keys.remove())
    if not _move(instance, ACTIVE, expected=[BUILDING], actions=actions):
        return False
    waited = (timeutil.now() - timeutil.parse(instance.created_at)).total_seconds()
    log.info("instance %s: ACTIVE on %s after %.1f s", instance.id, instance.provider, waited, extra=fields)
    telemetry.metric("TimeToActive", waited, "Seconds", provider=instance.provider or "")
    return True


def record_floating_ip(instance: Instance, floating_ip_id: str) -> bool:
    """Keep the floating IP given to a BUILDING instance's server (its state stays), unless it has
    one already (a watcher and a sweep may both have given one). False when it has, or moved on:
    the caller releases the IP, which nobody else knows of."""
    condition = (Instance.state == BUILDING) & (Instance.server_id == instance.server_id)
    condition &= Instance.floating_ip_id.does_not_exist()
    return _update(instance, [Instance.floating_ip_id.set(floating_ip_id)], condition)


def attempt(provider: str, error: CloudError, *, excludes: bool = True) -> Attempt:
    return Attempt(
        provider=provider,
        error=error.error_class,
        message=error.message[:500],
        at=timeutil.now_iso(),
        excludes=excludes,
    )


def fail_over(instance: Instance, error: CloudError, *, provider_at_fault: bool = True) -> bool:
    """A slot-holding instance whose launch (or server) failed: give the slot back, record why,
    and send it back to PENDING (or FAILED when out of attempts) so that the stream offers it to
    the next provider. Returns True when this call moved it. One deleted meanwhile, with no
    server, has its teardown finished here."""
    provider_name = instance.provider or ""
    out_of_attempts = len(instance.attempts) + 1 >= settings.max_attempts
    to_state = FAILED if out_of_attempts else PENDING
    log.info(
        "instance %s: %s on %s (%s); failing over",
        instance.id,
        error.error_class,
        provider_name,
        error.message,
        extra={**telemetry.about(instance, provider_name, to=to_state), "error_class": error.error_class},
    )
    telemetry.metric("Failovers", provider=provider_name, error_class=error.error_class)
    actions = [
        Instance.attempts.set(Instance.attempts.append([attempt(provider_name, error, excludes=provider_at_fault)])),
        # remove(), not set(None): pynamodb writes None as a NULL value, which still "exists".
        Instance.provider.remove(),
        Instance.server_id.remove(),
        Instance.launched_at.remove(),
        Instance.addresses.remove(),  # an ACTIVE instance whose server vanished had some
        Instance.ips.remove(),
        Instance.access_ip.remove(),
        Instance.host_keys.remove(),
        Instance.floating_ip_id.remove(),  # released by the caller with the server (or found as a leak)
        Instance.active_at.remove(),
    ]
    if out_of_attempts:
        reason = f"no provider could launch it in {settings.max_attempts} attempts; last: {error.message}"
        actions.append(Instance.failure_reason.set(reason[:500]))
    if instance.state in HOLDING and instance.state != DELETING and _release(instance, to_state, actions):
        return True
    if instance.state == DELETING and instance.server_id is None:
        end(instance)  # deleted while its launch failed: no server exists, so the teardown ends here
    return False


def give_up(instance: Instance) -> bool:
    """PENDING -> FAILED for an instance out of attempts."""
    last = instance.attempts[-1].message if instance.attempts else "none"
    reason = f"no provider could launch it in {len(instance.attempts)} attempts; last: {last}"
    return _move(instance, FAILED, expected=[PENDING], actions=[Instance.failure_reason.set(reason[:500])])


def redrive(instance: Instance) -> bool:
    """Fire the stream again for a PENDING instance (a slot was freed, or the sweeper found room):
    touch `redrive_at`, state unchanged. False when it is no longer PENDING."""
    return _update(instance, [Instance.redrive_at.set(timeutil.now_iso())], Instance.state == PENDING)


def note_waiting(instance: Instance, *, reason: str | None = ..., eta: str | None = ...) -> bool:
    """Record why a PENDING instance waits and/or when it is expected ready (None removes one),
    conditioned on its state only: one write, and only when something changed (no stream event:
    the worker ignores edits that leave the state and `redrive_at` alone)."""
    actions, changed = [], {}
    for attribute, value in ((Instance.waiting_reason, reason), (Instance.waiting_eta, eta)):
        if value is ... or getattr(instance, attribute.attr_name) == value:
            continue
        actions.append(attribute.remove() if value is None else attribute.set(value))
        changed[attribute.attr_name] = value
    if not actions or instance.state != PENDING:
        return False
    if not _update(instance, actions, Instance.state == PENDING):
        return False
    for name, value in changed.items():
        setattr(instance, name, value)
    return True


def stale(instance: Instance) -> bool:
    """True when the launch that claimed this instance has had time to record its server."""
    if instance.launched_at is None:
        return True
    age = (timeutil.now() - timeutil.parse(instance.launched_at)).total_seconds()
    return age > settings.launch_stale_seconds


# --- retire, extend, tear down -------------------------------------------------------------------


def retire(instance: Instance, expired_by: str | None = None) -> bool:
    """Send one instance towards DELETED: straight there if nothing was placed, else via DELETING
    (whose stream record asks for the teardown). With `expired_by`, only while its `expires_at` is
    still at or before that time (an extension that lands meanwhile wins). True when this call
    moved it."""
    for _ in range(WRITE_RETRIES):
        if instance.state not in LIVE_STATES or instance.state == DELETING:
            return False
        if expired_by is not None and instance.expires_at > expired_by:
            return False
        target = DELETED if instance.state == PENDING else DELETING
        if _move(instance, target, expected=[instance.state]):
            return True
    raise ChangingTooFast(f"instance {instance.id} is changing too fast; try again")


def extend(instance: Instance, expires_at: str) -> None:
    """Give a live instance a new `expires_at` (its request was extended); one on its way out
    keeps its end."""
    for _ in range(WRITE_RETRIES):
        if instance.state not in LIVE_STATES or instance.state == DELETING:
            return
        if _update(instance, [Instance.expires_at.set(expires_at)], Instance.state.is_in(*LIVE_STATES)):
            return
    raise ChangingTooFast(f"instance {instance.id} is changing too fast; try again")


def end(instance: Instance, *, give: bool = True) -> bool:
    """DELETING -> DELETED once its server is gone (or none was made); its slot, if it held one,
    is given back (by the caller when `give` is False)."""
    if instance.provider is None:
        return _move(instance, DELETED, expected=[DELETING])
    return _release(instance, DELETED, give=give)


def delete_backoff_seconds(failures: int) -> float:
    return min(600.0, settings.delete_retry_seconds * 2 ** min(max(0, failures - 1), 16))


def delete_failed(instance: Instance) -> None:
    """A DELETING instance whose delete failed stays DELETING, with a retry time that backs off."""
    failures = int(instance.delete_failures or 0) + 1
    retry_at = timeutil.iso(timeutil.now() + timedelta(seconds=delete_backoff_seconds(failures)))
    _delete_later(instance, retry_at, [Instance.delete_failures.set(failures)])


def delete_deferred(instance: Instance, until: str | None) -> None:
    """A DELETING instance on a provider whose circuit is open, or in a maintenance window, stays
    DELETING until the circuit half-opens or the window ends (`until`): the sweeper deletes it
    then, once the provider answers its check."""
    retry_at = until or timeutil.iso(timeutil.now() + timedelta(seconds=settings.delete_retry_seconds))
    _delete_later(instance, retry_at, [])


def _delete_later(instance: Instance, retry_at: str, actions: list) -> None:
    # A lost condition means it moved on (DELETED by another delivery): nothing to retry.
    _update(instance, [*actions, Instance.delete_retry_at.set(retry_at)], Instance.state == DELETING)


def delete_due(instance: Instance, now_iso: str, stuck_before: str) -> bool:
    """A DELETING instance the sweeper should tear down now: its backoff has run out, or, with no
    failure recorded, its teardown has not happened for too long (a lost event or a crash)."""
    if instance.delete_retry_at:
        return instance.delete_retry_at <= now_iso
    return (instance.state_changed_at or instance.created_at) < stuck_before
