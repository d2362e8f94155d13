"""The scheduled pass. Expiry: instances past `expires_at` are retired (found by index, not scan)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from chalicelib import fleet, models, timeutil

log = logging.getLogger("oms.sweeper")


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)


def expire(now: str | None = None) -> list[str]:
    """Retire every live instance whose lifetime has ended; returns their ids."""
    now = now or timeutil.now_iso()
    expired = []
    for state in (models.PENDING, models.LAUNCHING, models.BUILDING, models.ACTIVE):
        for instance in models.Instance.by_state_expires.query(
            state, range_key_condition=models.Instance.expires_at <= now
        ):
            fleet.retire(instance)
            expired.append(instance.id)
    return expired


def sweep() -> SweepReport:
    report = SweepReport(expired=expire())
    if report.expired:
        log.info("expired %d instances", len(report.expired))
    return report
