"""Placement as a specification: priority, spread, exclusion, circuits, probation."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from chalicelib.placement import CLOSED, HALF_OPEN, OPEN, Need, Slots, circuit_state, place

LABEL = frozenset({"ubuntu"})


def needs(n: int, label: str = "ubuntu", excluded: frozenset[str] = frozenset()) -> list[Need]:
    return [Need(f"i{k}", label, excluded) for k in range(n)]


def test_lowest_priority_number_is_used_first():
    placed = place(needs(5), [Slots("cheap", 10, 20, LABEL), Slots("dear", 200, 20, LABEL)])
    assert set(placed.values()) == {"cheap"}


def test_equal_priorities_spread_by_free_slots():
    providers = [Slots("a", 100, 20, LABEL), Slots("b", 100, 20, LABEL), Slots("c", 100, 10, LABEL)]
    spread = Counter(place(needs(30), providers).values())
    assert sum(spread.values()) == 30
    # Most free first: what is left free ends up level (within one slot).
    left = [p.free - spread[p.name] for p in providers]
    assert max(left) - min(left) <= 1, spread


def test_a_batch_larger_than_the_room_fills_it_exactly():
    providers = [Slots("a", 100, 3, LABEL), Slots("b", 100, 2, LABEL)]
    placed = place(needs(10), providers)
    assert Counter(placed.values()) == {"a": 3, "b": 2}


def test_overflow_goes_to_the_next_priority():
    providers = [Slots("first", 1, 2, LABEL), Slots("second", 2, 5, LABEL)]
    assert Counter(place(needs(4), providers).values()) == {"first": 2, "second": 2}


def test_label_disabled_open_and_full_providers_are_skipped():
    providers = [
        Slots("other-label", 1, 20, frozenset({"debian"})),
        Slots("disabled", 1, 20, LABEL, enabled=False),
        Slots("open", 1, 20, LABEL, circuit=OPEN),
        Slots("full", 1, 0, LABEL),
        Slots("ok", 500, 20, LABEL),
    ]
    assert set(place(needs(3), providers).values()) == {"ok"}


def test_excluded_provider_is_not_used_for_that_instance():
    providers = [Slots("a", 1, 20, LABEL), Slots("b", 2, 20, LABEL)]
    placed = place([Need("x", "ubuntu", frozenset({"a"})), Need("y", "ubuntu")], providers)
    assert placed == {"x": "b", "y": "a"}


def test_no_candidate_leaves_the_instance_unplaced():
    assert place(needs(2, excluded=frozenset({"a"})), [Slots("a", 1, 20, LABEL)]) == {}


def test_a_provider_on_probation_or_half_open_gets_one_probe_per_round():
    providers = [Slots("new", 1, 20, LABEL, on_probation=True), Slots("trial", 1, 20, LABEL, circuit=HALF_OPEN)]
    assert Counter(place(needs(10), providers).values()) == {"new": 1, "trial": 1}


def test_circuit_state_follows_health_and_cooldown():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert circuit_state("healthy", None, now) == CLOSED
    assert circuit_state("degraded", None, now) == CLOSED
    assert circuit_state("down", now + timedelta(seconds=30), now) == OPEN
    assert circuit_state("down", now - timedelta(seconds=1), now) == HALF_OPEN
    assert circuit_state("down", None, now) == HALF_OPEN


# Maintenance windows: the starts of a provider's windows not yet ended, against each instance's expiry.
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def lives(minutes: int, n: int = 1, prefix: str = "i") -> list[Need]:
    return [Need(f"{prefix}{k}", "ubuntu", expires_at=NOW + timedelta(minutes=minutes)) for k in range(n)]


def test_a_window_before_the_expiry_keeps_the_instance_off_the_provider():
    soon = Slots("soon", 1, 20, LABEL, maintenance=(NOW + timedelta(minutes=20),))
    other = Slots("other", 100, 20, LABEL)
    placed = place(lives(45, prefix="long") + lives(10, prefix="short"), [soon, other])
    assert placed == {"long0": "other", "short0": "soon"}


def test_a_window_before_the_expiry_with_nowhere_else_leaves_the_instance_waiting():
    soon = Slots("soon", 1, 20, LABEL, maintenance=(NOW + timedelta(minutes=20),))
    assert place(lives(45), [soon]) == {}
    assert place(lives(20), [soon]) == {"i0": "soon"}  # it ends as the window begins


def test_a_window_on_now_takes_nothing_and_a_later_one_only_what_ends_before_it():
    on = Slots("on", 1, 20, LABEL, maintenance=(NOW - timedelta(minutes=5),))
    later = Slots("later", 1, 20, LABEL, maintenance=(NOW + timedelta(hours=3), NOW + timedelta(hours=1)))
    assert place(lives(10), [on]) == {}
    assert place(lives(59), [later]) == {"i0": "later"}
    assert place(lives(61), [later]) == {}


def test_an_instance_without_a_known_expiry_goes_only_where_no_window_is_announced():
    announced = Slots("announced", 1, 20, LABEL, maintenance=(NOW + timedelta(days=30),))
    plain = Slots("plain", 100, 20, LABEL)
    assert place(needs(1), [announced, plain]) == {"i0": "plain"}


def test_an_instance_left_out_is_told_why():
    from chalicelib.placement import ALL_FULL, NO_LABEL, NONE_HEALTHY, why_waiting

    [need] = needs(1)
    full = [Slots("a", 100, 0, LABEL), Slots("b", 100, 0, LABEL), Slots("c", 100, 5, LABEL, enabled=False)]
    assert why_waiting(need, full) == ALL_FULL
    down = [Slots("a", 100, 0, LABEL), Slots("b", 100, 5, LABEL, circuit=OPEN)]
    assert why_waiting(need, down) == NONE_HEALTHY
    assert why_waiting(Need("i", "ubuntu", frozenset({"b"})), [Slots("b", 100, 5, LABEL)]) == NONE_HEALTHY
    assert why_waiting(need, [Slots("a", 100, 5, frozenset({"debian"}))]) == NO_LABEL
    assert why_waiting(need, [Slots("a", 100, 5, LABEL, enabled=False)]) == NO_LABEL
    assert why_waiting(need, [Slots("a", 100, 5, LABEL, on_probation=True)]) is None
    [long] = lives(45)
    assert why_waiting(long, [Slots("a", 100, 5, LABEL, maintenance=(NOW + timedelta(minutes=20),))]) == NONE_HEALTHY
