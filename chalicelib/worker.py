"""The instances stream's adapter: read a batch's events and hand each to the part that owns it.

A record is an event when the state changed (`OldImage.state != NewImage.state`): entering
PENDING asks for a launch (`launcher`), entering DELETING for a teardown (`teardown`); when a
PENDING instance's `redrive_at` was touched (a launch again); and when a running server's instance
got a new `expires_at` (its server's tag follows). An error on one instance is logged and written
onto that instance, and never fails the batch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from chalicelib import callbacks, cloud, health, launcher, lifecycle, models, teardown, telemetry

log = logging.getLogger("oms.worker")

# How long a batch waits for its expiry tags: a provider that does not answer by then delays
# nothing else, and the sweeper sets the tag once the provider answers again.
TAG_WAIT_SECONDS = 1.5
# One tagging job per provider runs beside the launch pass; a call hung on a provider may outlive
# its batch (it ends at the OpenStack timeout) without holding the next one.
_tagging = ThreadPoolExecutor(max_workers=16, thread_name_prefix="tags")


@dataclass(frozen=True)
class StateChange:
    """One instance's state transition, as read off a stream record."""

    instance_id: str
    old_state: str | None
    new_state: str | None
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
        found.append(
            StateChange(
                instance_id=_attr(record.keys, "id") or "",
                old_state=old_state,
                new_state=new_state,
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


def _tag_expiries(provider: models.Provider, changes: list[ExpiryChange]) -> None:
    """Keep the servers' `oms_expires_at` metadata in step on one provider; best effort, never fails
    the batch. The first error that is the provider's (it does not answer, or refuses us) ends the
    job: the sweeper sets the tags left behind, as it compares each server's tag with its instance."""
    for change in changes:
        try:
            cloud.set_expiry(provider, change.server_id, change.expires_at)
        except cloud.CloudError as error:
            log.warning("server %s on %s: could not update oms_expires_at: %s", change.server_id, provider.name, error)
            if error.error_class in health.PROVIDER_FAULTS:
                return


def settled_requests(records: Iterable) -> dict[str, list[str]]:
    """Requests one of whose instances just became ACTIVE or FAILED, or was handed over ACTIVE from
    a warm pool (each may now be ready or failed, which its callback hears of: callbacks.notice
    decides), with those records' sequence numbers."""
    found: dict[str, list[str]] = {}
    for record in records:
        new_state = _attr(record.new_image, "state")
        # A pool instance handed over ACTIVE settles its new request as a state change would.
        moved = _attr(record.old_image, "state") != new_state or (
            _attr(record.old_image, "request_id") != _attr(record.new_image, "request_id")
        )
        if new_state in (models.ACTIVE, models.FAILED) and moved:
            request_id = _attr(record.new_image, "request_id")
            if request_id:
                found.setdefault(request_id, []).append(record.sequence_number)
    return found


def handle(records: Iterable) -> list[str]:
    """Handle one stream batch; returns the sequence numbers of records that must be retried.

    Tags, teardowns and one launch pass (placing every PENDING instance of the batch together) run
    side by side, so a slow provider delays only its own instances; work for a provider whose
    circuit is open is left to the sweeper. Provider errors are handled inside and written onto
    instances; only an unexpected crash marks records for retry, and a retry is harmless (every
    step is a conditional write).
    """
    records = list(records)
    found = changes(records)
    provider = teardown.providers_once()
    started = time.monotonic()
    by_provider: dict[str, list[ExpiryChange]] = {}
    for change in expiry_changes(records):
        by_provider.setdefault(change.provider, []).append(change)
    tags = [
        _tagging.submit(telemetry.carry(_tag_expiries, "tag_expiries"), provider(name), changes)
        for name, changes in by_provider.items()
        if _reachable(provider(name))
    ]
    launches = list(dict.fromkeys(c.instance_id for c in found if c.new_state == models.PENDING))
    deletes = {c.instance_id: c for c in found if c.new_state == models.DELETING}
    retry: list[str] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="teardowns") as beside:
        torn_down = beside.submit(telemetry.carry(_teardowns, "teardowns"), list(deletes.values()), provider)
        if launches:
            try:
                launcher.launch(launches)
            except Exception:
                log.exception("launch pass over %d instances failed", len(launches))
                retry.extend(c.sequence_number for c in found if c.new_state == models.PENDING)
        freed, crashed = torn_down.result()
    retry.extend(deletes[i].sequence_number for i in crashed)
    for provider_name, room in freed.items():
        # Freed slots go to instances waiting for room (fired again through the stream); if
        # this fails, the sweeper's re-drive catches up: never fail the batch over it.
        try:
            launcher.redrive(models.Provider.get(provider_name), room)
        except Exception:
            log.exception("re-drive after teardowns on %s failed", provider_name)
    # Callbacks: their events written before the batch returns (a crash there retries the records,
    # as nothing else would notice the request settled), then one short try of each beside the
    # rest; the sweeper retries what this leaves.
    settled = settled_requests(records)
    budget = max(0.0, TAG_WAIT_SECONDS - (time.monotonic() - started))
    for request_id in callbacks.on_settled(list(settled), budget):
        retry.extend(settled[request_id])
    _, late = wait(tags, timeout=max(0.0, TAG_WAIT_SECONDS - (time.monotonic() - started)))
    if late:
        log.warning("%d expiry tags still waiting on their provider; the sweeper sets them", len(late))
    return retry


def _reachable(provider: models.Provider | None) -> bool:
    """A provider the batch may call now: it exists, its circuit is not open and no maintenance
    window is on."""
    return provider is not None and not health.calls_held(provider)


def _teardowns(deletes: list[StateChange], provider: teardown.ProviderLookup) -> tuple[Counter[str], list[str]]:
    """Tear the batch's instances down (one consistent read of them all); those on a provider whose
    circuit is open, or in a maintenance window, stay DELETING for the sweeper (until that ends).
    Returns the slots freed per provider and the ids of instances whose teardown crashed."""
    if not deletes:
        return Counter(), []
    ids = list(dict.fromkeys(c.instance_id for c in deletes))
    now_due = []
    for instance in models.Instance.batch_get(ids, consistent_read=True):
        where = provider(instance.provider) if instance.provider else None
        held = health.held_until(where) if where is not None else None
        if held is not None:
            lifecycle.delete_deferred(instance, held)
        else:
            now_due.append(instance)
    return teardown.teardown_batch(now_due, provider)
