"""UTC timestamps in the API's one format: ISO 8601, seconds, `Z` suffix (sortable as text)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(FORMAT)


def now_iso() -> str:
    return iso(now())


def parse(text: str) -> datetime:
    return datetime.strptime(text, FORMAT).replace(tzinfo=UTC)


def in_minutes(minutes: int, start: datetime | None = None) -> str:
    return iso((start or now()) + timedelta(minutes=minutes))
