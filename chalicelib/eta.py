"""When a waiting instance is expected to be ready, and what launches measured. Pure functions.

The sweeper calls `expected` once per pass for each label with PENDING instances: the slots of the
providers offering the label free up when the instances holding them expire (`expires_at`), a free
slot at once; the waiting instances take them in the order they were asked for (oldest first),
each holding its slot in turn until its own `expires_at`. An instance is ready one lag (the pass
that expires the holder, the teardown, the re-drive) plus the provider's measured boot time
after its slot frees up.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


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


def expected(
    now: datetime,
    queue: Iterable[Waiting],
    releases: Iterable[tuple[datetime, str]],
    boot_seconds: dict[str, float],
    lag_seconds: float,
) -> dict[str, datetime | None]:
    """{instance id: when it is expected ready} for a label's waiting instances.

    `releases`: (when a slot frees up, its provider) for every slot of the providers that offer the
    label (a free one: `now`). None for an instance no slot frees up for before it expires."""
    heap = [(max(at, now), provider) for at, provider in releases]
    heapq.heapify(heap)
    found: dict[str, datetime | None] = {}
    for waiting in sorted(queue, key=lambda w: (w.created_at, w.name)):
        if not heap:
            found[waiting.instance_id] = None
            continue
        at, provider = heap[0]
        if at >= waiting.expires_at:
            found[waiting.instance_id] = None  # it expires before a slot frees up
            continue
        heapq.heappop(heap)
        lag = lag_seconds if at > now else 0
        found[waiting.instance_id] = at + timedelta(seconds=lag + boot_seconds.get(provider, 0))
        heapq.heappush(heap, (waiting.expires_at, provider))
    return found
