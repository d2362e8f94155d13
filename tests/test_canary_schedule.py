"""When a scheduled canary is due: a specification of `canary.due` (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import canary, models, timeutil

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def provider(**fields) -> models.Provider:
    defaults = {
        "labels": {"ubuntu": {"image": "ubuntu-22.04", "flavor": "m1.small"}},
        "canary_label": "ubuntu",
        "canary_every_hours": 6,
        "in_use": 0,
    }
    return models.Provider("p", **{**defaults, **fields})


def ago(hours: float) -> str:
    return timeutil.iso(NOW - timedelta(hours=hours))


def test_an_idle_provider_that_asks_for_one_gets_its_first_at_once_then_every_n_hours():
    assert canary.due(provider(), NOW)
    assert not canary.due(provider(canary={"id": "a", "state": "passed", "started_at": ago(5.9)}), NOW)
    assert canary.due(provider(canary={"id": "a", "state": "failed", "started_at": ago(6)}), NOW)


@pytest.mark.parametrize(
    "fields",
    [
        {"canary_label": None, "canary_every_hours": None},  # it does not ask for one
        {"in_use": 1},  # not idle: its instances prove it (and the canary would take their slot)
        {"labels": {}},  # the label is no longer mapped
        {"canary_until": timeutil.iso(NOW + timedelta(minutes=5))},  # one runs (its lease holds)
    ],
)
def test_none_is_due_when(fields):
    assert not canary.due(provider(**fields), NOW)


def test_a_lease_that_ran_out_does_not_block_the_next():
    stale = provider(canary={"id": "a", "state": "running", "started_at": ago(7)}, canary_until=ago(6.9))
    assert canary.due(stale, NOW)
