"""Maintenance windows: times a provider announced it will be away. Pure functions, no I/O.

A provider item keeps its windows in `maintenance`, a list of {start, end, note} (RFC 3339 times,
end after start). A window that has ended means nothing any more: views leave it out and every
write of the list drops it. While a window is on, the provider is treated as down without a call
(health.calls_held): no launch, no check, no reconcile, deletes wait for its end. Placement keeps
an instance off a provider whose next window begins before the instance's expiry.

`next_window(provider, after)` is the helper for whoever plans ahead (ETAs, scheduled requests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from chalicelib import timeutil

MAX_WINDOWS = 20
NOTE_MAX = 200


@dataclass(frozen=True, order=True)
class Window:
    start: datetime
    end: datetime
    note: str = ""

    def as_dict(self) -> dict:
        return {"start": timeutil.iso(self.start), "end": timeutil.iso(self.end), "note": self.note}


def _stored(provider_or_list) -> list:
    if provider_or_list is None:
        return []
    if isinstance(provider_or_list, (list, tuple)):
        return list(provider_or_list)
    stored = getattr(provider_or_list, "maintenance", None) or []
    return list(stored)


def _plain(item) -> Mapping:
    return item.as_dict() if hasattr(item, "as_dict") else item


def parse(text: str) -> datetime:
    """A time as the API takes it (RFC 3339, any offset, fractions), in UTC to the second."""
    return timeutil.parse(timeutil.iso(datetime.fromisoformat(text)))


def windows(provider_or_list, after: datetime | None = None) -> list[Window]:
    """The windows not yet ended at `after` (all of them when None), earliest first. Takes a
    provider (item or anything with `maintenance`) or the list itself."""
    found = []
    for item in _stored(provider_or_list):
        item = _plain(item)
        window = Window(parse(item["start"]), parse(item["end"]), item.get("note") or "")
        if after is None or window.end > after:
            found.append(window)
    return sorted(found)


def current(provider_or_list, now: datetime) -> Window | None:
    """The window on at `now`, if any."""
    return next((w for w in windows(provider_or_list, now) if w.start <= now), None)


def next_window(provider_or_list, after: datetime) -> Window | None:
    """The first window not yet ended at `after` (it may be on already): for ETAs and scheduling."""
    return next(iter(windows(provider_or_list, after)), None)


def blocks(starts: Iterable[datetime], expires_at: datetime | None) -> bool:
    """Whether windows (not yet ended) starting at `starts` fall within a life ending at
    `expires_at`: one that begins before the expiry does. With no expiry known, any does."""
    return any(expires_at is None or start < expires_at for start in starts)


def pruned(items: Iterable, now: datetime) -> list[dict]:
    """The list as written: windows ended by `now` dropped, earliest first."""
    return [w.as_dict() for w in windows(list(items), now)]


def problem(items: Iterable) -> str | None:
    """What is wrong with a list of windows the schema took, in words (end not after start)."""
    for index, item in enumerate(items):
        item = _plain(item)
        for key in ("start", "end"):
            try:
                moment = parse(item[key])
            except (ValueError, OverflowError):
                moment = None
            if moment is None or not 2000 <= moment.year <= 9000:
                return f"maintenance[{index}].{key} must be a time between the years 2000 and 9000"
        if parse(item["end"]) <= parse(item["start"]):
            return f"maintenance[{index}]: end must be after start"
    return None
