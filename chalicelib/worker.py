"""The instances stream's handler logic: what to do when an instance enters a state.

A record is an event only when the state changed (`OldImage.state != NewImage.state`): entering
PENDING asks for a launch, entering DELETING asks for teardown. Each record is handled on its
own; an error on one is logged and written onto that instance, and never fails the batch.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib import cloud, launcher, models, slots, telemetry, timeutil
from chalicelib.settings import settings

log = logging.getLogger("oms.worker")

TEARDOWNS_AT_ONCE = 16


@dataclass(frozen=True)
class StateChange:
    """One instance's state transition, as read off a stream record."""

    instance_id: str
    old_state: str | None
    new_state: str | None
    version: int | None
    sequence_number: str


def _attr(image: dict | None, name: str) -> str | None:
    if not image or name not in image:
        return None
    value = image[name]
    return value.get("S") or value.get("N")


def changes(records: Iterable) -> list[StateChange]:
    """The state transitions in a batch of Chalice DynamoDBRecords, plus re-drives (a PENDING
    instance whose `redrive_at` was touched). Other edits are not events."""
    found = []
    for record in records:
        if record.new_image is None:
            continue  # a removal: the TTL dropping a long-ended instance's record
        old_state = _attr(record.old_image, "state")
        new_state = _attr(record.new_image, "state")
        redriven = new_state == models.PENDING and _attr(record.old_image, "redrive_at") != _attr(
            record.new_image, "redrive_at"
        )
        if old_state == new_state and not redriven:
            continue
        version = _attr(record.new_image, "version")
        found.append(
            StateChange(
                instance_id=_attr(record.keys, "id") or "",
                old_state=old_state,
                new_state=new_state,
                version=int(version) if version is not None else None,
                sequence_number=record.sequence_number,
            )
        )
    return found


@dataclass(frozen=True)
class ExpiryChange:
    """A running server's instance got a new `expires_at` (its request was extended)."""

    provider: str
    server_id: str
    expires_at: str


def expiry_changes(records: Iterable) -> list[ExpiryChange]:
    found = []
    for record in records:
        new = record.new_image
        old_expiry, new_expiry = _attr(record.old_image, "expires_at"), _attr(new, "expires_at")
        if not record.old_image or old_expiry == new_expiry:
            continue
        provider, server_id = _attr(new, "provider"), _attr(new, "server_id")
        if _attr(new, "state") in (models.BUILDING, models.ACTIVE) and provider and server_id:
            found.append(ExpiryChange(provider, server_id, new_expiry))
    return found


def _tag_expiry(change: ExpiryChange) -> None:
    """Keep the server's `oms_expires_at` metadata in step; best effort, never fails the batch."""
    try:
        cloud.set_expiry(models.Provider.get(change.provider), change.server_id, change.expires_at)
    except Exception as error:  # noqa: BLE001 - a tag that lags is harmless; the record is the truth
        log.warning("server %s on %s: could not update oms_expires_at: %s", change.server_id, change.provider, error)


def handle(records: Iterable) -> list[str]:
    """Handle one stream batch; returns the sequence numbers of records that must be retried.

    Teardowns go first (they free slots), then one launch pass places every PENDING instance of
    the batch together. Provider errors are handled inside and written onto instances; only an
    unexpected crash marks records for retry, and a retry is harmless (every step is claimed).
    """
    records = list(records)
    found = changes(records)
    for expiry in expiry_changes(records):
        _tag_expiry(expiry)
    retry = []
    launches = [c for c in found if c.new_state == models.PENDING]
    freed: Counter[str] = Counter()
    deletes = [c for c in found if c.new_state == models.DELETING]
    if deletes:
        retry += _teardowns(deletes, freed)
    for provider_name, room in freed.items():
        # Freed slots go to instances waiting for room (fired again through the stream); if
        # this fails, the sweeper's re-drive catches up: never fail the batch over it.
        try:
            launcher.redrive(models.Provider.get(provider_name), room)
        except Exception:
            log.exception("re-drive after teardowns on %s failed", provider_name)
    if launches:
        try:
            launcher.launch(list(dict.fromkeys(c.instance_id for c in launches)))
        except Exception:
            log.exception("launch pass over %d instances failed", len(launches))
            retry.extend(c.sequence_number for c in launches)
    return retry


def _teardowns(deletes: list[StateChange], freed: Counter[str]) -> list[str]:
    """Tear a batch's instances down in parallel (each waits on its provider's DELETE call): one
    consistent read of the batch, each provider read once, and each provider's slots given back
    in one write. Counts the freed slots in `freed`; returns the records to retry."""
    ids = list(dict.fromkeys(c.instance_id for c in deletes))
    instances = {i.id: i for i in models.Instance.batch_get(ids, consistent_read=True)}
    providers: dict[str, models.Provider | None] = {}
    lock = threading.Lock()

    def provider(name: str) -> models.Provider | None:
        with lock:
            if name not in providers:
                try:
                    providers[name] = models.Provider.get(name)
                except DoesNotExist:
                    providers[name] = None
            return providers[name]

    def one(change: StateChange) -> tuple[str | None, bool]:
        instance = instances.get(change.instance_id)
        if instance is None:
            return None, False
        try:
            return teardown(instance.id, instance=instance, provider=provider, give=False), False
        except Exception:
            log.exception("instance %s: teardown failed", change.instance_id)
            return None, True

    retry = []
    released: Counter[str] = Counter()
    by_id = {c.instance_id: c for c in deletes}
    with ThreadPoolExecutor(max_workers=min(TEARDOWNS_AT_ONCE, len(by_id))) as pool:
        for change, (released_on, failed) in zip(
            by_id.values(), pool.map(telemetry.carry(one, "teardown"), by_id.values()), strict=True
        ):
            if failed:
                retry.append(change.sequence_number)
            elif released_on:
                released[released_on] += 1
    for name, count in released.items():
        slots.give_back(name, count)
        freed[name] += count
    return retry


def teardown(
    instance_id: str,
    listed: dict[str, cloud.Server] | None = None,
    *,
    instance: models.Instance | None = None,
    provider=None,
    give: bool = True,
) -> str | None:
    """Delete an instance's server (gone counts as deleted), give its slot back, mark it DELETED.

    `listed` is the provider's server list (the sweeper's), taken after the instance entered
    DELETING: a server missing from it is gone, and needs no call. A failed delete is left in
    DELETING with a retry time that backs off. Returns the provider whose slot was released
    (with `give=False` the caller gives it back). A batch passes the `instance` it read
    consistently and a `provider(name)` lookup it shares."""
    if instance is None:
        try:
            instance = models.Instance.get(instance_id, consistent_read=True)
        except DoesNotExist:
            return None
    if instance.state != models.DELETING:
        return None  # a repeated delivery: someone already moved it on
    if instance.provider is None:
        models.transition(instance, models.DELETED, expected=[models.DELETING])
        return None
    provider = provider(instance.provider) if provider is not None else models.Provider.get(instance.provider)
    if provider is None:
        raise DoesNotExist(f"provider {instance.provider} of instance {instance.id}")
    server_id = instance.server_id
    if server_id is None and not stale(instance):
        return None  # its create may be in flight: the launcher deletes what it made and finishes this
    try:
        if server_id is None:
            servers = listed.values() if listed is not None else cloud.our_servers(provider)
            server_id = next((s.id for s in servers if s.instance_id == instance.id), None)
        if server_id is not None and (listed is None or server_id in listed):
            cloud.delete_server(provider, server_id)
    except cloud.CloudError as error:
        # Left in DELETING: the sweeper retries. A stuck provider must not block the stream.
        log.warning("instance %s: delete on %s failed (%s); will retry", instance_id, provider.name, error.message)
        _delete_failed(instance)
        return None
    fields = telemetry.about(instance, to=models.DELETED)
    if not slots.release(instance, models.DELETED, give=give):
        return None
    log.info("instance %s: server deleted on %s", instance_id, provider.name, extra=fields)
    return provider.name


def delete_backoff_seconds(failures: int) -> float:
    return min(600.0, settings.delete_retry_seconds * 2 ** min(max(0, failures - 1), 16))


def _delete_failed(instance: models.Instance) -> None:
    failures = int(instance.delete_failures or 0) + 1
    retry_at = timeutil.iso(timeutil.now() + timedelta(seconds=delete_backoff_seconds(failures)))
    try:
        instance.update(
            actions=[models.Instance.delete_failures.set(failures), models.Instance.delete_retry_at.set(retry_at)],
            condition=models.Instance.state == models.DELETING,
        )
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise  # else it moved on (DELETED by another delivery): nothing to retry


def delete_due(instance: models.Instance, now_iso: str, stuck_before: str) -> bool:
    """A DELETING instance the sweeper should tear down now: its backoff has run out, or, with no
    failure recorded, its teardown has not happened for too long (a lost event or a crash)."""
    if instance.delete_retry_at:
        return instance.delete_retry_at <= now_iso
    return (instance.state_changed_at or instance.created_at) < stuck_before


def stale(instance: models.Instance) -> bool:
    """True when the launch that claimed this instance has had time to record its server."""
    if instance.launched_at is None:
        return True
    age = (timeutil.now() - timeutil.parse(instance.launched_at)).total_seconds()
    return age > settings.launch_stale_seconds
