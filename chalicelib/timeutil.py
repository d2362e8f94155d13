"""Time: the one clock the code reads, and UTC timestamps in the API's one format (ISO 8601,
seconds, `Z` suffix, sortable as text).

Tests move the clock forward (`clock.advance`) instead of waiting out a lifetime or a back-off.
Elapsed-time budgets inside one call (a watcher's, a sweep's) use `time.monotonic`, which the
clock does not move.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class Clock:
    """Wall time, plus an offset that only tests set."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        """Move every reader of the clock `seconds` ahead (never back: stored times stay in order)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += timedelta(seconds=seconds)


clock = Clock()


def now() -> datetime:
    return clock.now().replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(FORMAT)


def now_iso() -> str:
    return iso(now())


def parse(text: str) -> datetime:
    return datetime.strptime(text, FORMAT).replace(tzinfo=UTC)


def in_minutes(minutes: int, start: datetime | None = None) -> str:
    return iso((start or now()) + timedelta(minutes=minutes))
