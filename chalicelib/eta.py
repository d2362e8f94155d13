"""When a waiting instance is expected to be ready, and what launches measured. Pure functions.

The sweeper calls `expected` once per pass for each label with PENDING instances: the slots of the
providers offering the label free up when the instances holding them expire (`expires_at`), a free
slot at once; the waiting instances take them in the order they were asked for (oldest first),
each taking the slot it can use earliest and holding it in turn until its own `expires_at`.
Maintenance windows decide when a slot is usable by an instance: placement never starts an
instance on a provider whose window (not yet ended) begins before the instance's expiry, so a
slot serves it only from the first time at or after its release when the instance's whole life
misses every window of that provider (after a window on now, or one that would fall within it);
a slot that cannot serve it before it expires is no slot for it. An instance is ready one lag
(the pass that expires the holder or ends the window, the teardown, the re-drive) plus the
provider's measured boot time after its slot is usable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# A provider's boot (and ready) time until one launch there was measured.
DEFAULT_BOOT_SECONDS = 60.0


@dataclass(frozen=True)
class Waiting:
    """One PENDING instance in its label's queue."""

    instance_id: str
    created_at: str
    name: str
    expires_at: datetime


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100, nearest rank) of `samples`; None without any."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return float(ordered[int(rank) - 1])


def metrics(boot: Sequence[float], ready: Sequence[float]) -> dict:
    """A provider's measured launches as the views show them (seconds, one decimal)."""

    def one(samples: Sequence[float]) -> dict:
        median, p90 = percentile(samples, 50), percentile(samples, 90)
        return {
            "median": None if median is None else round(median, 1),
            "p90": None if p90 is None else round(p90, 1),
        }

    return {"samples": len(boot), "boot_seconds": one(boot), "ready_seconds": one(ready)}


def usable_from(
    release: datetime, expires_at: datetime, windows: Iterable[tuple[datetime, datetime]] = ()
) -> datetime | None:
    """The earliest time from `release` at which a slot can serve an instance expiring at
    `expires_at` on a provider with maintenance `windows` ((start, end) each): its life
    [t, expires_at) must overlap none of them (placement keeps an instance off a provider whose
    window begins before its expiry; during a window the provider gets no call). None when no such
    time comes before the instance expires."""
    start = release
    for begins, ends in sorted(windows):
        if begins >= expires_at:
            break  # this one and every later one begin after the instance's life
        if ends > start:
            start = ends  # it overlaps: the earliest start is once it is over
    return start if start < expires_at else None


def expected(
    now: datetime,
    queue: Iterable[Waiting],
    releases: Iterable[tuple[datetime, str]],
    boot_seconds: dict[str, float],
    lag_seconds: float,
    windows: Mapping[str, Sequence[tuple[datetime, datetime]]] | None = None,
) -> dict[str, datetime | None]:
    """{instance id: when it is expected ready} for a label's waiting instances.

    `releases`: (when a slot frees up, its provider) for every slot of the providers that offer the
    label (a free one: `now`). `windows`: each provider's maintenance windows not yet ended,
    (start, end). Each waiting instance, oldest first, takes the slot it can use earliest
    (`usable_from`), then holds it until its own expiry. None for an instance no slot can serve
    before it expires (it takes none)."""
    windows = windows or {}
    slots = [(max(at, now), provider) for at, provider in releases]
    found: dict[str, datetime | None] = {}
    for waiting in sorted(queue, key=lambda w: (w.created_at, w.name)):
        best: tuple[datetime, str, int] | None = None
        for index, (at, provider) in enumerate(slots):
            start = usable_from(at, waiting.expires_at, windows.get(provider, ()))
            if start is not None and (best is None or (start, provider, index) < best):
                best = (start, provider, index)
        if best is None:
            found[waiting.instance_id] = None  # it expires before any slot can serve it
            continue
        start, provider, index = best
        lag = lag_seconds if start > now else 0
        found[waiting.instance_id] = start + timedelta(seconds=lag + boot_seconds.get(provider, 0))
        slots[index] = (waiting.expires_at, provider)
    return found
