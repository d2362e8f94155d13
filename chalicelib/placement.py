"""Placement: which provider launches which instance. Pure functions, no I/O.

Candidates for an instance: enabled, circuit not open, label mapped, not excluded for this
instance, a free slot. Order: lowest `priority` first; among equals, most free slots first, so a
batch spreads over providers. A provider on probation (circuit half-open, no launch that
succeeded lately, or its last builds all ended in ERROR) gets one instance per round: its probe.
The rest of its share waits for a later round, after the probe's create was accepted.
A provider with a maintenance window (not yet ended) that begins before an instance's expiry is
no candidate for it: a short instance still goes there, a long one goes elsewhere or waits.

An instance left without a candidate is told why (`why_waiting`): every account offering its
label is full, those with room are down (or failed it), or none offers the label.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib import maintenance
from chalicelib.models import DOWN

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# Why a PENDING instance found no provider (API.md: an instance's `waiting.reason`).
ALL_FULL, NONE_HEALTHY, NO_LABEL = "all accounts full", "none healthy", "none offers the label"
WAITING_REASONS = (ALL_FULL, NONE_HEALTHY, NO_LABEL)


@dataclass(frozen=True)
class Slots:
    """What placement needs to know of one provider."""

    name: str
    priority: int
    free: int
    labels: frozenset[str]
    enabled: bool = True
    circuit: str = CLOSED
    on_probation: bool = False
    # Starts of its maintenance windows not yet ended (one on now started in the past).
    maintenance: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class Need:
    """One PENDING instance waiting for a provider."""

    instance_id: str
    label: str
    excluded: frozenset[str] = field(default_factory=frozenset)
    # When it is to end; None: unknown, and then any maintenance window keeps it off a provider.
    expires_at: datetime | None = None


def circuit_state(health_state: str, retry_at: datetime | None, now: datetime) -> str:
    """Closed unless the provider is down; down turns half-open once its cooldown has passed."""
    if health_state != DOWN:
        return CLOSED
    if retry_at is not None and retry_at > now:
        return OPEN
    return HALF_OPEN


def place(needs: Sequence[Need], providers: Iterable[Slots]) -> dict[str, str]:
    """Assign instances to providers for one round; returns {instance_id: provider name}.

    Instances left out have no candidate this round (no room, excluded, a maintenance window
    before their expiry, or waiting behind a probe).
    """
    usable = [p for p in providers if p.enabled and p.circuit != OPEN and p.free > 0]
    free = {p.name: p.free for p in usable}
    for p in usable:
        if p.on_probation or p.circuit == HALF_OPEN:
            free[p.name] = min(free[p.name], 1)
    placed: dict[str, str] = {}
    for need in needs:
        candidates = [
            p
            for p in usable
            if free[p.name] > 0
            and need.label in p.labels
            and p.name not in need.excluded
            and not maintenance.blocks(p.maintenance, need.expires_at)
        ]
        if not candidates:
            continue
        best = min(candidates, key=lambda p: (p.priority, -free[p.name], p.name))
        placed[need.instance_id] = best.name
        free[best.name] -= 1
    return placed


def why_waiting(need: Need, providers: Iterable[Slots]) -> str | None:
    """Why `need` has no candidate: no enabled provider maps its label (NO_LABEL); every one that
    does is at its cap (ALL_FULL); or those with room have their circuit open, failed this very
    instance lately, or have a maintenance window before its expiry (NONE_HEALTHY). None when one
    with room could take it (it lost a race, or waits behind a probe): it is not waiting for
    anything that lasts."""
    offering = [p for p in providers if p.enabled and need.label in p.labels]
    if not offering:
        return NO_LABEL
    with_room = [p for p in offering if p.free > 0]
    if not with_room:
        return ALL_FULL
    if all(
        p.circuit == OPEN or p.name in need.excluded or maintenance.blocks(p.maintenance, need.expires_at)
        for p in with_room
    ):
        return NONE_HEALTHY
    return None
