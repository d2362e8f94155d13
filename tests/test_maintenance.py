"""maintenance.py: the pure helpers others plan with (next_window), and how a list is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from chalicelib import maintenance

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def at(minutes: int) -> str:
    return (NOW + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def provider(*windows) -> SimpleNamespace:
    return SimpleNamespace(maintenance=[{"start": s, "end": e, "note": n} for s, e, n in windows])


def test_next_window_is_the_first_not_yet_ended_even_one_on_now():
    p = provider((at(60), at(90), "later"), (at(-30), at(-10), "over"), (at(-5), at(5), "now"))
    assert maintenance.next_window(p, NOW).note == "now"
    assert maintenance.current(p, NOW).note == "now"
    assert maintenance.next_window(p, NOW + timedelta(minutes=5)).note == "later"
    assert maintenance.current(p, NOW + timedelta(minutes=5)) is None
    assert maintenance.next_window(p, NOW + timedelta(minutes=90)) is None
    assert maintenance.next_window(SimpleNamespace(maintenance=None), NOW) is None


def test_a_list_is_written_in_utc_earliest_first_without_ended_windows():
    items = [
        {"start": "2026-11-25T15:00:00+02:00", "end": "2026-11-25T14:00:00Z", "note": "x"},
        {"start": at(-60), "end": at(-1)},
    ]
    assert maintenance.pruned(items, NOW) == [{"start": at(60), "end": at(120), "note": "x"}]


def test_a_window_must_end_after_it_starts():
    assert maintenance.problem([{"start": at(0), "end": at(10)}]) is None
    assert maintenance.problem([{"start": at(0), "end": at(10)}, {"start": at(10), "end": at(10)}]) == (
        "maintenance[1]: end must be after start"
    )


def test_times_out_of_range_are_refused_not_crashed_on():
    assert maintenance.problem([{"start": "0001-01-01T00:00:00+01:00", "end": at(10)}]) == (
        "maintenance[0].start must be a time between the years 2000 and 9000"
    )
    assert maintenance.problem([{"start": at(0), "end": "9999-12-31T23:59:59-01:00"}]).startswith("maintenance[0].end")
