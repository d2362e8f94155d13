"""The instances stream's handler logic: what to do when an instance enters a state.

A record is an event only when the state changed (`OldImage.state != NewImage.state`): entering
PENDING asks for a launch, entering DELETING asks for teardown. Each record is handled on its
own; an error on one is logged and written onto that instance, and never fails the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pynamodb.exceptions import DoesNotExist

from chalicelib import models

log = logging.getLogger("oms.worker")


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
    """The state transitions in a batch of Chalice DynamoDBRecords (other edits are skipped)."""
    found = []
    for record in records:
        old_state = _attr(record.old_image, "state")
        new_state = _attr(record.new_image, "state")
        if old_state == new_state:
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


def handle(records: Iterable) -> list[str]:
    """Handle one stream batch; returns the sequence numbers of records that must be retried."""
    retry = []
    for change in changes(records):
        try:
            _dispatch(change)
        except Exception:
            log.exception(
                "instance %s: handling %s -> %s failed", change.instance_id, change.old_state, change.new_state
            )
            retry.append(change.sequence_number)
    return retry


def _dispatch(change: StateChange) -> None:
    log.info("instance %s: %s -> %s", change.instance_id, change.old_state, change.new_state)
    if change.new_state == models.DELETING:
        teardown(change.instance_id)
    # Entering PENDING is picked up by the launch pipeline (placement and cloud calls).


def teardown(instance_id: str) -> None:
    """Finish deleting an instance. One that never got a server is simply marked DELETED."""
    try:
        instance = models.Instance.get(instance_id)
    except DoesNotExist:
        return
    if instance.state != models.DELETING:
        return  # a repeated delivery: someone already moved it on
    if instance.server_id is None and instance.provider is None:
        models.transition(instance, models.DELETED, expected=[models.DELETING])
