"""The ETA of waiting instances and the launch metrics, as a specification (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.eta import Waiting, expected, metrics, percentile, usable_from

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


def waiting(n: int, expires: float = 60) -> list[Waiting]:
    return [Waiting(f"i{k}", f"2026-01-01T09:59:{k:02d}Z", f"w-{k:03d}", at(expires)) for k in range(n)]


def test_the_queue_takes_the_slots_in_the_order_they_free_up_plus_boot_and_lag():
    releases = [(at(10), "a"), (at(5), "b")]
    found = expected(NOW, waiting(2), releases, {"a": 30, "b": 60}, lag_seconds=5)
    assert found == {"i0": at(5) + timedelta(seconds=65), "i1": at(10) + timedelta(seconds=35)}


def test_a_slot_is_used_again_once_the_instance_that_took_it_expires():
    queue = [*waiting(1, expires=20), Waiting("i1", "2026-01-01T09:59:59Z", "w-1", at(60))]
    found = expected(NOW, queue, [(at(5), "a")], {"a": 0}, lag_seconds=0)
    assert found == {"i0": at(5), "i1": at(20)}
    # One that would expire before the slot frees up gets none, and does not take it.
    assert expected(NOW, waiting(2, expires=20), [(at(5), "a")], {"a": 0}, lag_seconds=0)["i1"] is None


def test_a_free_slot_is_now_and_no_slot_before_expiry_is_no_eta():
    found = expected(NOW, waiting(1, expires=3), [(at(5), "a")], {}, lag_seconds=0)
    assert found == {"i0": None}
    assert expected(NOW, waiting(1), [(at(-1), "a")], {"a": 2}, lag_seconds=9) == {"i0": NOW + timedelta(seconds=2)}
    assert expected(NOW, waiting(1), [], {}, lag_seconds=0) == {"i0": None}


def test_a_window_on_now_delays_a_slot_to_the_window_end():
    windows = {"a": [(at(-5), at(10))]}
    found = expected(NOW, waiting(1), [(NOW, "a")], {"a": 30}, lag_seconds=5, windows=windows)
    assert found == {"i0": at(10) + timedelta(seconds=35)}  # a pass after the window, then the boot
    # A slot freed up during the window is usable at its end too; another provider's is not delayed.
    found = expected(NOW, waiting(2), [(at(3), "a"), (at(12), "b")], {}, lag_seconds=0, windows=windows)
    assert found == {"i0": at(10), "i1": at(12)}


def test_a_window_before_the_instance_expires_makes_the_slot_unusable_until_after_it():
    windows = {"a": [(at(20), at(30))]}
    # Free now, but a 60-minute life would run into the window: only after it, the free "b" at 25 first.
    found = expected(NOW, waiting(1, expires=90), [(NOW, "a")], {}, lag_seconds=0, windows=windows)
    assert found == {"i0": at(30)}
    found = expected(NOW, waiting(1, expires=90), [(NOW, "a"), (at(25), "b")], {}, lag_seconds=0, windows=windows)
    assert found == {"i0": at(25)}
    # Back-to-back windows: the slot is usable after the last one that would fall within the life.
    windows = {"a": [(at(20), at(30)), (at(40), at(50)), (at(200), at(210))]}
    assert usable_from(NOW, at(90), windows["a"]) == at(50)


def test_a_short_instance_still_gets_a_slot_before_the_window():
    windows = {"a": [(at(20), at(30))]}
    found = expected(NOW, waiting(2, expires=15), [(NOW, "a"), (NOW, "a")], {"a": 10}, lag_seconds=5, windows=windows)
    assert found == {"i0": NOW + timedelta(seconds=10), "i1": NOW + timedelta(seconds=10)}
    # One ending exactly when the window begins is not in it.
    assert usable_from(NOW, at(20), windows["a"]) == NOW


def test_an_instance_no_slot_can_serve_before_it_expires_gets_none_and_takes_none():
    windows = {"a": [(at(-5), at(30))]}
    queue = [*waiting(1, expires=25), Waiting("i1", "2026-01-01T09:59:59Z", "w-1", at(60))]
    found = expected(NOW, queue, [(NOW, "a")], {}, lag_seconds=0, windows=windows)
    assert found == {"i0": None, "i1": at(30)}  # the slot stays for the one that can use it
    assert usable_from(at(10), at(25), [(at(20), at(30))]) is None


def test_percentiles_and_metrics():
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2 and percentile(list(range(1, 11)), 90) == 9
    assert metrics([2.0, 4.0], [10.0, 30.0]) == {
        "samples": 2,
        "boot_seconds": {"median": 2.0, "p90": 4.0},
        "ready_seconds": {"median": 10.0, "p90": 30.0},
    }
