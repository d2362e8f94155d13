"""schedule.py: when a scheduled request launches, and the admission forecast. Pure, no stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib import schedule
from chalicelib.maintenance import Window

START = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
END = START + timedelta(hours=1)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def test_the_lead_is_the_slowest_p90_plus_a_sweep_and_a_margin():
    margin = schedule.LEAD_MARGIN_SECONDS
    assert schedule.lead_seconds([[10.0] * 9 + [100.0], [30.0] * 10], 5) == 30 + 5 + margin
    assert schedule.lead_seconds([[10.0] * 10, []], 5) == schedule.DEFAULT_BOOT_SECONDS + 5 + margin
    assert schedule.lead_seconds([], 5) == schedule.DEFAULT_BOOT_SECONDS + 5 + margin
    assert schedule.lead_seconds([[99999.0]], 5) == schedule.MAX_LEAD_SECONDS
    assert schedule.launch_at(START, 75.4) == START - timedelta(seconds=75)


def test_expected_when_the_caps_leave_room():
    accounts = [schedule.Account("p1", 10, holders=[at(-10)]), schedule.Account("p2", 5)]
    found = schedule.admission("ubuntu", 15, START, END, accounts)
    assert (found.status, found.capacity, found.needed) == ("expected", 15, 15)
    assert found.reason == (
        "needs 15; at 2026-12-02T09:00:00Z the 2 accounts offering ubuntu have room for 15 of 15 slots"
    )


def test_at_risk_when_instances_hold_the_slots_past_the_start():
    accounts = [schedule.Account("p1", 10, holders=[at(30)] * 8 + [at(-1)] * 2)]
    found = schedule.admission("ubuntu", 3, START, END, accounts, pending=[at(5)])
    assert (found.status, found.capacity) == ("at_risk", 1)
    assert found.reason == (
        "needs 3; at 2026-12-02T09:00:00Z the 1 account offering ubuntu has room for 1 of 10 slots: "
        "8 slots held by instances running past then, 1 by instances waiting to launch"
    )


def test_at_risk_for_other_scheduled_requests_at_the_tightest_point():
    accounts = [schedule.Account("p1", 10), schedule.Account("p2", 10)]
    others = [
        schedule.Booking(at(30), at(90), 12),  # starts during our life: the tightest point
        schedule.Booking(at(-60), at(-1), 20),  # over before we start
        schedule.Booking(at(60), at(120), 20),  # starts as we end
    ]
    found = schedule.admission("ubuntu", 10, START, END, accounts, scheduled=others)
    assert (found.status, found.capacity) == ("at_risk", 8)
    assert found.reason == (
        "needs 10; at 2026-12-02T09:30:00Z the 2 accounts offering ubuntu have room for 8 of 20 slots: "
        "12 by other scheduled requests"
    )


def test_at_risk_when_an_account_is_in_maintenance_during_the_life():
    window = Window(at(50), at(70), "upgrade")  # overlaps the end of [start, end)
    accounts = [schedule.Account("p1", 10), schedule.Account("demo-p6", 10, windows=[window])]
    found = schedule.admission("ubuntu", 12, START, END, accounts)
    assert (found.status, found.capacity) == ("at_risk", 10)
    assert found.reason.endswith("room for 10 of 10 slots; demo-p6 is in maintenance then")
    later = [schedule.Account("p1", 10), schedule.Account("demo-p6", 10, windows=[Window(at(60), at(70))])]
    assert schedule.admission("ubuntu", 12, START, END, later).status == "expected"  # it starts as we end


def test_capacity_never_shows_below_zero():
    found = schedule.admission("ubuntu", 1, START, END, [schedule.Account("p1", 2)], pending=[at(10)] * 5)
    assert (found.status, found.capacity) == ("at_risk", 0)
    assert found.as_dict() == {"status": "at_risk", "reason": found.reason, "capacity": 0, "needed": 1}
